use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use gatehouse_core::{
    ConnectorError, Device, LoginOutcome, Password, PasswordAttempt, PasswordConnector, RejectReason, User,
};
use http::{HeaderMap, HeaderValue};
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
        let prepared = self.prepare(&self.auth.url, true, &values)?;
        let shown = self.shown(&self.auth.url, true, &Values::of(user, Some(MASK), device)?);
        Ok(Exchange { request: shown, result: self.send(prepared).await })
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
        let prepared = self.prepare(url, false, &values)?;
        let shown = self.shown(url, false, &values);
        Ok(Some(Exchange { request: shown, result: self.send(prepared).await }))
    }

    async fn send(&self, p: Prepared) -> Result<UpstreamResponse, UpstreamError> {
        let timeout = Duration::from_millis(self.auth.config.timeout_ms);
        self.client.send(p.method, p.url, p.headers, p.body, timeout).await
    }

    fn method(&self, credentials: bool) -> http::Method {
        if credentials { self.auth.config.http_action.method() } else { http::Method::GET }
    }

    /// Renders the request to send, with the real values, and checks it.
    pub(crate) fn prepare(
        &self,
        url: &Template,
        credentials: bool,
        values: &Values<'_>,
    ) -> Result<Prepared, ConnectorError> {
        let config = &self.auth.config;
        let method = self.method(credentials);
        // The template was proven sound when saved; a value (a device name
        // of `..`) could still bend the structure, so every URL is checked.
        let real_url = check_url(&url.render(|p| values.get(p), |s| Escaper::Url.escape(s)))
            .map_err(|_| unsafe_request("a value would change the URL's path or query"))?;
        if !matches!(real_url.scheme(), "http" | "https") {
            return Err(unsafe_request("the URL did not render to http(s)"));
        }

        let mut headers = HeaderMap::new();
        for (name, template) in &self.auth.headers {
            let value = template.render(|p| values.get(p), |s| Escaper::None.escape(s));
            if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                return Err(unsafe_request("a header value contains CR, LF or NUL"));
            }
            let value = HeaderValue::from_bytes(value.as_bytes())
                .map_err(|_| unsafe_request("a header value is not a valid header"))?;
            headers.append(name.clone(), value);
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
        }

        let mut body = None;
        if credentials && let Some(template) = &self.auth.body {
            let escaper = config.data_as.escaper();
            let rendered = template.render(|p| values.get(p), |s| escaper.escape(s));
            // The template was proven safe when saved; check the real thing
            // too, and fail closed rather than send something malformed.
            check_body(config.data_as, &rendered)
                .map_err(|_| unsafe_request("the body did not render validly"))?;
            headers
                .insert(http::header::CONTENT_TYPE, HeaderValue::from_static(config.data_as.content_type()));
            body = Some(rendered.into_bytes());
        }
        Ok(Prepared { method, url: real_url, headers, body })
    }

    /// The request [`RestConnector::prepare`] builds, as an admin may see
    /// it: rendered from the same templates with `masked` (whose password,
    /// if any, is the mask), every header value masked, whatever it holds
    /// (API keys live there). Rendered only where it is shown (the test
    /// call), not on every sign-in.
    pub(crate) fn shown(&self, url: &Template, credentials: bool, masked: &Values<'_>) -> SentRequest {
        let config = &self.auth.config;
        let mut headers: Vec<(String, String)> =
            self.auth.headers.iter().map(|(name, _)| (name.to_string(), MASK.to_owned())).collect();
        if credentials && config.http_auth_type == HttpAuthType::Basic {
            headers.push((http::header::AUTHORIZATION.to_string(), format!("Basic {MASK}")));
        }
        let mut body = None;
        if credentials && let Some(template) = &self.auth.body {
            let escaper = config.data_as.escaper();
            headers.push((http::header::CONTENT_TYPE.to_string(), config.data_as.content_type().into()));
            body = Some(template.render(|p| masked.get(p), |s| escaper.escape(s)));
        }
        SentRequest {
            method: self.method(credentials).to_string(),
            url: url.render(|p| masked.get(p), |s| Escaper::Url.escape(s)),
            headers,
            body,
        }
    }
}

#[async_trait]
impl PasswordConnector for RestConnector<'_> {
    async fn login(&self, attempt: PasswordAttempt<'_>) -> Result<LoginOutcome, ConnectorError> {
        if attempt.user.email.is_none() {
            return Ok(LoginOutcome::Rejected(RejectReason::NoEmail));
        }
        // What the call looked like is not kept for a sign-in: its outcome
        // is (and the audit trail records that), so nothing masked is
        // rendered.
        let values = Values::of(attempt.user, Some(attempt.password.expose()), attempt.device)?;
        let prepared = self.prepare(&self.auth.url, true, &values)?;
        match self.send(prepared).await {
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

    /// A GET of `login?u={{USEREMAIL}}` with a Forgot Password URL, as
    /// `edit` changes it, validated.
    fn rest_auth(edit: impl FnOnce(&mut RestAuthConfig)) -> RestAuth {
        let mut config = RestAuthConfig {
            authentication_url: "https://auth.example.test/login?u={{USEREMAIL}}".into(),
            http_action: crate::HttpAction::Get,
            data_as: crate::DataAs::Json,
            http_auth_type: HttpAuthType::None,
            headers: vec![],
            body: None,
            forgot_password_url: Some("https://auth.example.test/forgot?u={{USEREMAIL}}".into()),
            timeout_ms: 1000,
            allow_insecure_http: false,
        };
        edit(&mut config);
        config.validate().unwrap()
    }

    /// The test call shows the request a sign-in sends, rendered apart
    /// (`shown`, so that a sign-in need not render it): the same method,
    /// URL, body and header names, in the same order, as the request
    /// `prepare` builds from the masked values; every header value masked,
    /// and the password nowhere.
    #[test]
    fn what_is_shown_is_what_is_sent_masked() {
        for (http_action, data_as, basic) in [
            (crate::HttpAction::Post, crate::DataAs::Json, true),
            (crate::HttpAction::Put, crate::DataAs::Xml, false),
            (crate::HttpAction::Get, crate::DataAs::UrlEncoded, true),
        ] {
            let body = match data_as {
                crate::DataAs::Json => "{\"u\":\"{{USEREMAIL}}\",\"p\":\"{{USERPASSWORD}}\"}",
                crate::DataAs::Xml => "<a><u>{{USEREMAIL}}</u><p>{{USERPASSWORD}}</p></a>",
                crate::DataAs::UrlEncoded => "u={{USEREMAIL}}&p={{USERPASSWORD}}",
            };
            let auth = rest_auth(|c| {
                c.authentication_url =
                    "https://auth.example.test/login/{{ORGID}}?u={{USEREMAIL}}&p={{USERPASSWORD}}".into();
                c.http_action = http_action;
                c.data_as = data_as;
                c.http_auth_type = if basic { HttpAuthType::Basic } else { HttpAuthType::None };
                c.headers = vec![
                    crate::config::HeaderTemplate { name: "X-Key".into(), value: Some("k-{{ORGID}}".into()) },
                    crate::config::HeaderTemplate {
                        name: "X-Pass".into(),
                        value: Some("{{USERPASSWORD}}".into()),
                    },
                ];
                c.body = (http_action != crate::HttpAction::Get).then(|| body.into());
            });
            let client = OutboundClient::new(false).unwrap();
            let connector = RestConnector::new(&client, &auth);
            let (ada, device) = (user(Some("ada@acme.test")), Device::default());
            let secret = "pässword \"<&>";
            for (url, credentials) in [(&auth.url, true), (auth.forgot_url.as_ref().unwrap(), false)] {
                let password = credentials.then_some(secret);
                let masked_password = credentials.then_some(MASK);
                let real = Values::of(&ada, password, &device).unwrap();
                let masked = Values::of(&ada, masked_password, &device).unwrap();
                let sent = connector.prepare(url, credentials, &real).unwrap();
                let sent_masked = connector.prepare(url, credentials, &masked).unwrap();
                let shown = connector.shown(url, credentials, &masked);
                assert_eq!(shown.method, sent.method.to_string());
                assert_eq!(shown.url, sent_masked.url.as_str());
                assert_eq!(shown.body.as_deref().map(str::as_bytes), sent_masked.body.as_deref());
                let names: Vec<String> = sent.headers.keys().map(|n| n.to_string()).collect();
                let shown_names: Vec<String> = shown.headers.iter().map(|(n, _)| n.clone()).collect();
                assert_eq!(shown_names, names, "{http_action:?} {data_as:?}");
                for (name, value) in &shown.headers {
                    match name.as_str() {
                        "authorization" => assert_eq!(value, &format!("Basic {MASK}")),
                        "content-type" => assert_eq!(value, data_as.content_type()),
                        _ => assert_eq!(value, MASK),
                    }
                }
                let everything = format!("{shown:?}");
                assert!(
                    !everything.contains("pässword") && !everything.contains("p%C3%A4ssword"),
                    "{everything}"
                );
            }
        }
    }

    /// A user an IdP provisioned with only a userName has nothing to send
    /// as `{{USEREMAIL}}`: refused as such, and nothing is sent.
    #[tokio::test]
    async fn a_user_without_an_email_is_refused_before_any_request() {
        let auth = rest_auth(|_| {});
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
