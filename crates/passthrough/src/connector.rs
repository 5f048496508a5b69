use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use gatehouse_core::{
    ConnectorError, Device, LoginOutcome, Password, PasswordAttempt, PasswordConnector, RejectReason, User,
};
use http::{HeaderMap, HeaderName, HeaderValue};
use url::Url;

use crate::config::{HttpAuthType, RestAuth};
use crate::escape::{Escaper, check_body, check_url};
use crate::template::{Placeholder, Template};
use gatehouse_outbound::{OutboundClient, UpstreamError, UpstreamResponse};

/// What stands in for the password and the Authorization header wherever a
/// request is shown.
const MASK: &str = "********";

/// A request as it was sent, with the password and every header value
/// masked: safe to show an admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
}

/// One call to the organization's service and what came of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub request: SentRequest,
    pub result: Result<UpstreamResponse, UpstreamError>,
}

impl Exchange {
    pub fn status(&self) -> Option<u16> {
        self.result.as_ref().ok().map(|r| r.status)
    }

    pub fn elapsed(&self) -> Option<Duration> {
        self.result.as_ref().ok().map(|r| r.elapsed)
    }

    /// Exactly HTTP 200 is success; any other answer is a refusal.
    pub fn succeeded(&self) -> bool {
        self.status() == Some(200)
    }
}

/// The REST pass-through as a [`PasswordConnector`].
pub struct RestConnector<'a> {
    client: &'a OutboundClient,
    auth: &'a RestAuth,
}

pub(crate) struct Values<'a> {
    pub(crate) user: &'a User,
    /// The user's email: the REST service knows its users by it.
    pub(crate) email: &'a str,
    pub(crate) password: Option<&'a str>,
    pub(crate) device: &'a Device,
}

impl<'a> Values<'a> {
    /// The values for `user`; a user without an email (one an IdP
    /// provisioned with only a userName) cannot be sent.
    pub(crate) fn of(
        user: &'a User,
        password: Option<&'a str>,
        device: &'a Device,
    ) -> Result<Self, ConnectorError> {
        let email =
            user.email.as_ref().ok_or_else(|| unsafe_request("the user has no email address to send"))?;
        Ok(Self { user, email: email.as_str(), password, device })
    }

    fn get(&self, p: Placeholder) -> String {
        match p {
            Placeholder::UserId => self.user.id.to_string(),
            Placeholder::UserEmail => self.email.to_owned(),
            Placeholder::UserPassword => self.password.unwrap_or_default().to_owned(),
            Placeholder::UserExternalId => self.user.external_id.clone().unwrap_or_default(),
            Placeholder::OrgId => self.user.org_id.to_string(),
            Placeholder::DeviceOs => self.device.os.clone().unwrap_or_default(),
            Placeholder::DeviceName => self.device.name.clone().unwrap_or_default(),
            Placeholder::DeviceIp => self.device.ip.map(|ip| ip.to_string()).unwrap_or_default(),
        }
    }
}

/// A rendered request, ready to send.
pub(crate) struct Prepared {
    pub(crate) method: http::Method,
    pub(crate) url: Url,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Option<Vec<u8>>,
}

fn unsafe_request(what: &str) -> ConnectorError {
    ConnectorError::UnsafeRequest(what.to_owned())
}

impl<'a> RestConnector<'a> {
    pub fn new(client: &'a OutboundClient, auth: &'a RestAuth) -> Self {
        Self { client, auth }
    }

    /// Performs the sign-in call and returns it, masked, with its result.
    /// `Err` only when the request could not be built safely.
    pub async fn authenticate(
        &self,
        user: &User,
        password: &Password,
        device: &Device,
    ) -> Result<Exchange, ConnectorError> {
        let values = Values::of(user, Some(password.expose()), device)?;
        let masked = Values::of(user, Some(MASK), device)?;
        let (prepared, shown) = self.prepare(&self.auth.url, true, &values, &masked)?;
        Ok(self.send(prepared, shown).await)
    }

    /// Sends the Forgot Password request (a GET, no password), if the
    /// organization has a Forgot Password URL.
    pub async fn forgot_password(
        &self,
        user: &User,
        device: &Device,
    ) -> Result<Option<Exchange>, ConnectorError> {
        let Some(url) = &self.auth.forgot_url else { return Ok(None) };
        let values = Values::of(user, None, device)?;
        let (prepared, shown) = self.prepare(url, false, &values, &values)?;
        Ok(Some(self.send(prepared, shown).await))
    }

    async fn send(&self, p: Prepared, shown: SentRequest) -> Exchange {
        let timeout = Duration::from_millis(self.auth.config.timeout_ms);
        let result = self.client.send(p.method, p.url, p.headers, p.body, timeout).await;
        Exchange { request: shown, result }
    }

    /// Renders the request twice from the same templates: with the real
    /// values to send, and with the password masked to show.
    pub(crate) fn prepare(
        &self,
        url: &Template,
        credentials: bool,
        values: &Values<'_>,
        masked: &Values<'_>,
    ) -> Result<(Prepared, SentRequest), ConnectorError> {
        let config = &self.auth.config;
        let method = if credentials { config.http_action.method() } else { http::Method::GET };
        let render_url = |v: &Values<'_>| url.render(|p| v.get(p), |s| Escaper::Url.escape(s));
        // The template was proven sound when saved; a value (a device name
        // of `..`) could still bend the structure, so every URL is checked.
        let real_url = check_url(&render_url(values))
            .map_err(|_| unsafe_request("a value would change the URL's path or query"))?;
        if !matches!(real_url.scheme(), "http" | "https") {
            return Err(unsafe_request("the URL did not render to http(s)"));
        }

        let mut headers = HeaderMap::new();
        let mut shown_headers = Vec::new();
        for (name, template) in &self.auth.headers {
            let value = template.render(|p| values.get(p), |s| Escaper::None.escape(s));
            if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                return Err(unsafe_request("a header value contains CR, LF or NUL"));
            }
            let value = HeaderValue::from_bytes(value.as_bytes())
                .map_err(|_| unsafe_request("a header value is not a valid header"))?;
            headers.append(name.clone(), value);
            // Header values are write-only (API keys live there): shown
            // masked, whatever they hold.
            shown_headers.push((name.to_string(), MASK.to_owned()));
        }
        if credentials && config.http_auth_type == HttpAuthType::Basic {
            let email = values.get(Placeholder::UserEmail);
            if email.contains(':') {
                return Err(unsafe_request("an email with ':' cannot be sent as a Basic user id"));
            }
            let pair = format!("{email}:{}", values.get(Placeholder::UserPassword));
            let value = HeaderValue::from_str(&format!("Basic {}", STANDARD.encode(pair)))
                .map_err(|_| unsafe_request("Basic credentials"))?;
            headers.insert(http::header::AUTHORIZATION, value);
            shown_headers.push(("authorization".into(), format!("Basic {MASK}")));
        }

        let mut body = None;
        let mut shown_body = None;
        if credentials && let Some(template) = &self.auth.body {
            let escaper = config.data_as.escaper();
            let rendered = template.render(|p| values.get(p), |s| escaper.escape(s));
            // The template was proven safe when saved; check the real thing
            // too, and fail closed rather than send something malformed.
            check_body(config.data_as, &rendered)
                .map_err(|_| unsafe_request("the body did not render validly"))?;
            let content_type = HeaderValue::from_static(config.data_as.content_type());
            headers.insert(http::header::CONTENT_TYPE, content_type.clone());
            shown_headers.push((
                HeaderName::from_static("content-type").to_string(),
                config.data_as.content_type().into(),
            ));
            body = Some(rendered.into_bytes());
            shown_body = Some(template.render(|p| masked.get(p), |s| escaper.escape(s)));
        }

        let shown = SentRequest {
            method: method.to_string(),
            url: render_url(masked),
            headers: shown_headers,
            body: shown_body,
        };
        Ok((Prepared { method, url: real_url, headers, body }, shown))
    }
}

#[async_trait]
impl PasswordConnector for RestConnector<'_> {
    async fn login(&self, attempt: PasswordAttempt<'_>) -> Result<LoginOutcome, ConnectorError> {
        if attempt.user.email.is_none() {
            return Ok(LoginOutcome::Rejected(RejectReason::NoEmail));
        }
        let exchange = self.authenticate(attempt.user, attempt.password, attempt.device).await?;
        match exchange.result {
            Ok(r) if r.status == 200 => Ok(LoginOutcome::Authenticated),
            Ok(r) => Ok(LoginOutcome::Rejected(RejectReason::UpstreamStatus(r.status))),
            Err(e) => Err(ConnectorError::Unavailable(e.kind().to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use gatehouse_core::{Email, OrgId, Origin, Role, UserId};

    use super::*;
    use crate::RestAuthConfig;

    fn user(email: Option<&str>) -> User {
        User {
            id: UserId::new(),
            org_id: OrgId::new(),
            email: email.map(|e| Email::parse(e).unwrap()),
            display_name: String::new(),
            external_id: None,
            active: true,
            password_hash: None,
            user_name: Some("jdoe".into()),
            scim_resource: None,
            version: 1,
            role: Role::Member,
            created_via: Origin::Scim,
            created_at: chrono::DateTime::UNIX_EPOCH,
            updated_at: chrono::DateTime::UNIX_EPOCH,
        }
    }

    /// A user an IdP provisioned with only a userName has nothing to send
    /// as `{{USEREMAIL}}`: refused as such, and nothing is sent.
    #[tokio::test]
    async fn a_user_without_an_email_is_refused_before_any_request() {
        let auth = RestAuthConfig {
            authentication_url: "https://auth.example.test/login?u={{USEREMAIL}}".into(),
            http_action: crate::HttpAction::Get,
            data_as: crate::DataAs::Json,
            http_auth_type: Default::default(),
            headers: vec![],
            body: None,
            forgot_password_url: Some("https://auth.example.test/forgot?u={{USEREMAIL}}".into()),
            timeout_ms: 1000,
            allow_insecure_http: false,
        }
        .validate()
        .unwrap();
        let client = OutboundClient::new(false).unwrap();
        let connector = RestConnector::new(&client, &auth);
        let (password, device) = (Password::new("pw".into()), Device::default());
        let nameless = user(None);
        let attempt = PasswordAttempt { user: &nameless, password: &password, device: &device };
        assert_eq!(connector.login(attempt).await.unwrap(), LoginOutcome::Rejected(RejectReason::NoEmail));
        assert!(matches!(
            connector.authenticate(&nameless, &password, &device).await,
            Err(ConnectorError::UnsafeRequest(_))
        ));
        assert!(matches!(
            connector.forgot_password(&nameless, &device).await,
            Err(ConnectorError::UnsafeRequest(_))
        ));
        // With an address, the same connector does try (and cannot reach
        // the example host).
        let ada = user(Some("ada@acme.test"));
        let attempt = PasswordAttempt { user: &ada, password: &password, device: &device };
        assert!(matches!(connector.login(attempt).await, Err(ConnectorError::Unavailable(_))));
    }
}
