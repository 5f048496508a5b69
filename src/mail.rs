//! Sending mail (password reset links) over SMTP, to the server
//! `GATEHOUSE_SMTP_URL` names, from `GATEHOUSE_MAIL_FROM`.
//!
//! `smtps://` is TLS from the start; `smtp://…?tls=required` upgrades with
//! STARTTLS and refuses a server that cannot. Plain `smtp://` would send
//! reset links in clear text, so it is accepted only to a loopback address
//! (a relay on the same host, or the tests' server).

use std::time::Duration;

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use url::Url;

/// How long one message may take to hand over.
const SEND_TIMEOUT: Duration = Duration::from_secs(15);

/// Where mail goes, as configured.
#[derive(Clone)]
pub struct MailSettings {
    url: Url,
    from: Mailbox,
}

impl std::fmt::Debug for MailSettings {
    // The URL may carry the relay's credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailSettings")
            .field("host", &self.url.host_str())
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl MailSettings {
    /// Checks the relay's URL and the sender; the error says what is wrong
    /// without repeating the URL (it may hold a password).
    pub fn parse(url: &str, from: &str) -> Result<Self, String> {
        let url = Url::parse(url.trim()).map_err(|e| format!("not a URL: {e}"))?;
        let loopback = match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            // smtp is not one of the URL standard's special schemes, so an
            // address in it is parsed as an opaque host name.
            Some(url::Host::Domain(d)) => {
                d == "localhost"
                    || d.trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
            None => return Err("names no host".into()),
        };
        let tls_required = url.query_pairs().any(|(k, v)| k == "tls" && v == "required");
        match url.scheme() {
            "smtps" => {}
            "smtp" if tls_required || loopback => {}
            "smtp" => {
                return Err(
                    "plain smtp:// would send reset links in clear text: use smtps://, or smtp://…?tls=required, or a relay on loopback"
                        .into(),
                );
            }
            other => return Err(format!("{other}: use smtp:// or smtps://")),
        }
        let from: Mailbox = from.trim().parse().map_err(|e| format!("GATEHOUSE_MAIL_FROM: {e}"))?;
        Ok(Self { url, from })
    }
}

/// Sends mail; cheap to clone.
#[derive(Clone)]
pub(crate) struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

/// A message that could not be sent, without the recipient or contents.
#[derive(Debug, thiserror::Error)]
#[error("mail could not be sent: {0}")]
pub(crate) struct MailError(String);

impl Mailer {
    pub(crate) fn new(settings: &MailSettings) -> Result<Self, String> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(settings.url.as_str())
            .map_err(|e| format!("the SMTP URL cannot be used: {e}"))?
            .timeout(Some(SEND_TIMEOUT))
            .build();
        Ok(Self { transport, from: settings.from.clone() })
    }

    /// Sends a plain-text message to `to`.
    pub(crate) async fn send(&self, to: &str, subject: &str, body: String) -> Result<(), MailError> {
        let to: Mailbox = to.parse().map_err(|e: lettre::address::AddressError| MailError(e.to_string()))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| MailError(e.to_string()))?;
        self.transport.send(message).await.map_err(|e| MailError(e.to_string()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::MailSettings;

    #[test]
    fn clear_text_mail_goes_only_to_loopback() {
        assert!(MailSettings::parse("smtp://127.0.0.1:2525", "Gatehouse <no-reply@example.com>").is_ok());
        assert!(MailSettings::parse("smtps://user:secret@mail.example.com", "no-reply@example.com").is_ok());
        assert!(
            MailSettings::parse("smtp://mail.example.com:587?tls=required", "no-reply@example.com").is_ok()
        );
        let refused = MailSettings::parse("smtp://user:secret@mail.example.com", "no-reply@example.com");
        let why = refused.unwrap_err();
        assert!(why.contains("clear text") && !why.contains("secret"), "{why}");
        assert!(MailSettings::parse("smtp://[::1]:2525", "no-reply@example.com").is_ok());
        assert!(MailSettings::parse("smtp://127.0.0.1.example.com", "no-reply@example.com").is_err());
        assert!(MailSettings::parse("http://mail.example.com", "no-reply@example.com").is_err());
        assert!(MailSettings::parse("smtp://127.0.0.1", "not an address").is_err());
    }
}
