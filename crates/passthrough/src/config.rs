//! The organization's REST authentication settings: as written by the admin
//! ([`RestAuthConfig`]), and validated and parsed ([`RestAuth`]).

use http::HeaderName;
use serde::{Deserialize, Serialize};

use crate::escape::{Escaper, scan_json_placements, scan_xml_placements};
use crate::template::{Part, Placeholder, Template};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum HttpAction {
    #[serde(rename = "POST", alias = "post")]
    Post,
    #[serde(rename = "PUT", alias = "put")]
    Put,
    #[serde(rename = "GET", alias = "get")]
    Get,
}

impl HttpAction {
    pub fn method(self) -> http::Method {
        match self {
            Self::Post => http::Method::POST,
            Self::Put => http::Method::PUT,
            Self::Get => http::Method::GET,
        }
    }
}

/// The body's format, and so its Content-Type and how values are escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DataAs {
    Json,
    UrlEncoded,
    Xml,
}

impl DataAs {
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::UrlEncoded => "application/x-www-form-urlencoded",
            Self::Xml => "application/xml; charset=utf-8",
        }
    }

    pub(crate) fn escaper(self) -> Escaper {
        match self {
            Self::Json => Escaper::JsonString,
            Self::UrlEncoded => Escaper::Form,
            Self::Xml => Escaper::Xml,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum HttpAuthType {
    #[default]
    None,
    /// Gatehouse adds `Authorization: Basic base64(email:password)` itself.
    Basic,
}

/// A header to send. Its value is write-only: it is never shown once saved,
/// and a header given without a value keeps the saved value of the header
/// of that name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HeaderTemplate {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// The settings as the admin wrote them; stored as written (sealed) and
/// returned as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RestAuthConfig {
    pub authentication_url: String,
    pub http_action: HttpAction,
    pub data_as: DataAs,
    #[serde(default)]
    pub http_auth_type: HttpAuthType,
    #[serde(default)]
    pub headers: Vec<HeaderTemplate>,
    /// Ignored for GET.
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub forgot_password_url: Option<String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Send credentials over plain `http://` (refused otherwise, unless the
    /// service may call private addresses): only for a service that the
    /// organization reaches over a network it trusts.
    #[serde(default)]
    pub allow_insecure_http: bool,
}

impl RestAuthConfig {
    /// The configuration as it may be shown: header values left out.
    pub fn without_secrets(&self) -> Self {
        let headers =
            self.headers.iter().map(|h| HeaderTemplate { name: h.name.clone(), value: None }).collect();
        Self { headers, ..self.clone() }
    }

    /// Fills each header given without a value with the value `saved` has
    /// for a header of that name (names compare case-insensitively).
    pub fn keep_header_values_of(&mut self, saved: &RestAuthConfig) {
        for header in self.headers.iter_mut().filter(|h| h.value.is_none()) {
            let name = header.name.trim();
            header.value = saved
                .headers
                .iter()
                .find(|s| s.name.trim().eq_ignore_ascii_case(name))
                .and_then(|s| s.value.clone());
        }
    }

    /// The URL fields that send over plain `http://`.
    pub fn plain_http_fields(&self) -> Vec<&'static str> {
        let plain = |u: &str| u.trim().get(..7).is_some_and(|p| p.eq_ignore_ascii_case("http://"));
        let mut fields = Vec::new();
        if plain(&self.authentication_url) {
            fields.push("authentication_url");
        }
        if self.forgot_password_url.as_deref().is_some_and(plain) {
            fields.push("forgot_password_url");
        }
        fields
    }
}

fn default_timeout_ms() -> u64 {
    10_000
}

pub const MIN_TIMEOUT_MS: u64 = 100;
pub const MAX_TIMEOUT_MS: u64 = 60_000;
const MAX_HEADERS: usize = 32;
const MAX_TEMPLATE_LEN: usize = 16 * 1024;

/// Headers Gatehouse sets itself, or that would let a template break the
/// framing of the request.
const RESERVED_HEADERS: [&str; 9] = [
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
];

/// A configuration problem, naming the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidConfig {
    pub field: String,
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> InvalidConfig {
    InvalidConfig { field: field.into(), message: message.into() }
}

/// A validated configuration, with its templates parsed.
#[derive(Debug, Clone)]
pub struct RestAuth {
    pub config: RestAuthConfig,
    pub(crate) url: Template,
    pub(crate) headers: Vec<(HeaderName, Template)>,
    pub(crate) body: Option<Template>,
    pub(crate) forgot_url: Option<Template>,
}

impl RestAuthConfig {
    /// Checks everything that can be checked without the network: templates,
    /// URLs, header names, and that the body is well-formed for its format
    /// once sample values (hostile ones included) are substituted.
    pub fn validate(self) -> Result<RestAuth, InvalidConfig> {
        if !(MIN_TIMEOUT_MS..=MAX_TIMEOUT_MS).contains(&self.timeout_ms) {
            return Err(invalid(
                "timeout_ms",
                format!("must be between {MIN_TIMEOUT_MS} and {MAX_TIMEOUT_MS}"),
            ));
        }
        let url = url_template("authentication_url", &self.authentication_url)?;
        let forgot_url = match &self.forgot_password_url {
            Some(u) if !u.trim().is_empty() => {
                let t = url_template("forgot_password_url", u)?;
                if t.uses(Placeholder::UserPassword) {
                    return Err(invalid("forgot_password_url", "must not contain {{USERPASSWORD}}"));
                }
                Some(t)
            }
            _ => None,
        };

        if self.headers.len() > MAX_HEADERS {
            return Err(invalid("headers", format!("at most {MAX_HEADERS} headers")));
        }
        let mut headers = Vec::with_capacity(self.headers.len());
        for (i, h) in self.headers.iter().enumerate() {
            let field = format!("headers[{i}]");
            let name = HeaderName::from_bytes(h.name.trim().as_bytes()).map_err(|_| {
                invalid(format!("{field}.name"), format!("{:?} is not a valid header name", h.name))
            })?;
            if RESERVED_HEADERS.contains(&name.as_str()) {
                return Err(invalid(
                    format!("{field}.name"),
                    format!("{name} is set by Gatehouse and cannot be configured"),
                ));
            }
            if name == http::header::AUTHORIZATION && self.http_auth_type == HttpAuthType::Basic {
                return Err(invalid(format!("{field}.name"), "Authorization is set by http_auth_type basic"));
            }
            if headers.iter().any(|(n, _)| *n == name) {
                return Err(invalid(format!("{field}.name"), format!("{name} is given twice")));
            }
            let Some(value) = &h.value else {
                return Err(invalid(
                    format!("{field}.value"),
                    "is required: only a header already saved under this name keeps its value when left out",
                ));
            };
            let value = parse(&format!("{field}.value"), value)?;
            for part in value.parts() {
                if let Part::Text(t) = part
                    && http::HeaderValue::from_str(t).is_err()
                {
                    return Err(invalid(
                        format!("{field}.value"),
                        "contains characters not allowed in a header",
                    ));
                }
            }
            headers.push((name, value));
        }

        let body = match (&self.body, self.http_action) {
            (_, HttpAction::Get) | (None, _) => None,
            (Some(b), _) if b.trim().is_empty() => None,
            (Some(b), _) => {
                let t = parse("body", b)?;
                match self.data_as {
                    DataAs::Json => scan_json_placements(&t).map_err(|m| invalid("body", m))?,
                    DataAs::Xml => scan_xml_placements(&t).map_err(|m| invalid("body", m))?,
                    DataAs::UrlEncoded => {}
                }
                for sample in SAMPLES {
                    let rendered =
                        t.render(|p| sample_value(sample, p), |v| self.data_as.escaper().escape(v));
                    crate::escape::check_body(self.data_as, &rendered).map_err(|m| {
                        invalid("body", format!("not valid once values are substituted: {m}"))
                    })?;
                }
                Some(t)
            }
        };
        Ok(RestAuth { config: self, url, headers, body, forgot_url })
    }
}

fn parse(field: &str, source: &str) -> Result<Template, InvalidConfig> {
    if source.len() > MAX_TEMPLATE_LEN {
        return Err(invalid(field, format!("must be at most {MAX_TEMPLATE_LEN} bytes")));
    }
    Template::parse(source).map_err(|e| invalid(field, e.to_string()))
}

/// A URL template must fix the scheme and host itself: placeholders may only
/// appear in the path, query or fragment, so that no value (a device name, an
/// email) can choose where the credentials are sent.
fn url_template(field: &str, source: &str) -> Result<Template, InvalidConfig> {
    let t = parse(field, source.trim())?;
    let fixed: String = t
        .parts()
        .iter()
        .map_while(|p| match p {
            Part::Text(s) => Some(s.as_str()),
            Part::Value(_) => None,
        })
        .collect();
    let has_placeholders = t.parts().iter().any(|p| matches!(p, Part::Value(_)));
    let authority_end = fixed.split_once("://").map(|(_, rest)| rest.find(['/', '?', '#']));
    if has_placeholders && !matches!(authority_end, Some(Some(_))) {
        return Err(invalid(field, "placeholders may only appear after the host (in the path or query)"));
    }
    for sample in SAMPLES {
        let rendered = t.render(|p| sample_value(sample, p), |v| Escaper::Url.escape(v));
        let url = crate::escape::check_url(&rendered).map_err(|m| invalid(field, m))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(field, "must be an http or https URL"));
        }
        if url.host().is_none() || !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(field, "must have a host and no user:password@ part"));
        }
    }
    Ok(t)
}

/// Sample values used to prove at save time that a template stays valid
/// whatever the values are; the second set is deliberately hostile.
const SAMPLES: [usize; 2] = [0, 1];

fn sample_value(set: usize, p: Placeholder) -> String {
    match (set, p) {
        (0, Placeholder::UserId | Placeholder::OrgId) => "01a2221d-50f7-7697-ad4d-23a24da039c7".into(),
        (0, Placeholder::UserEmail) => "alice@example.com".into(),
        (0, Placeholder::UserPassword) => "correct horse".into(),
        (0, Placeholder::UserExternalId) => "E-1001".into(),
        (0, Placeholder::DeviceOs) => "iOS 18".into(),
        (0, Placeholder::DeviceName) => "Alice's iPhone".into(),
        (0, Placeholder::DeviceIp) => "203.0.113.7".into(),
        (_, Placeholder::DeviceIp) => "2001:db8::1".into(),
        (_, _) => "\"'<>&]]>--{{USEREMAIL}}\\ %+=&?#/\u{e9}\u{1F600}".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RestAuthConfig {
        RestAuthConfig {
            authentication_url: "https://auth.example.com/login?org={{ORGID}}".into(),
            http_action: HttpAction::Post,
            data_as: DataAs::Json,
            http_auth_type: HttpAuthType::None,
            headers: vec![HeaderTemplate { name: "X-Device".into(), value: Some("{{DEVICENAME}}".into()) }],
            body: Some(r#"{"user":"{{USEREMAIL}}","password":"{{USERPASSWORD}}"}"#.into()),
            forgot_password_url: Some("https://auth.example.com/forgot?email={{USEREMAIL}}".into()),
            timeout_ms: 10_000,
            allow_insecure_http: false,
        }
    }

    fn field_of(c: RestAuthConfig) -> String {
        c.validate().unwrap_err().field
    }

    #[test]
    fn a_sound_configuration_validates() {
        let auth = config().validate().unwrap();
        assert_eq!(auth.headers.len(), 1);
        assert!(auth.body.is_some() && auth.forgot_url.is_some());
    }

    #[test]
    fn each_problem_names_its_field() {
        type Mutation = Box<dyn Fn(&mut RestAuthConfig)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|c| c.authentication_url = "ftp://x.example.com/".into()), "authentication_url"),
            (Box::new(|c| c.authentication_url = "/relative".into()), "authentication_url"),
            (Box::new(|c| c.authentication_url = "https://{{DEVICENAME}}/x".into()), "authentication_url"),
            (
                Box::new(|c| c.authentication_url = "https://a.example.com{{USERID}}".into()),
                "authentication_url",
            ),
            (Box::new(|c| c.authentication_url = "https://u:p@a.example.com/".into()), "authentication_url"),
            (
                Box::new(|c| c.authentication_url = "https://a.example.com/{{NOPE}}".into()),
                "authentication_url",
            ),
            (
                Box::new(|c| {
                    c.forgot_password_url = Some("https://a.example.com/?p={{USERPASSWORD}}".into())
                }),
                "forgot_password_url",
            ),
            (Box::new(|c| c.headers[0].name = "Bad Header".into()), "headers[0].name"),
            (Box::new(|c| c.headers[0].name = "Content-Length".into()), "headers[0].name"),
            (Box::new(|c| c.headers[0].value = Some("a\r\nb".into())), "headers[0].value"),
            (Box::new(|c| c.headers[0].value = None), "headers[0].value"),
            (Box::new(|c| c.body = Some("{\"user\": {{USEREMAIL}}}".into())), "body"),
            (Box::new(|c| c.body = Some("{\"user\": \"{{USEREMAIL}}\"".into())), "body"),
            (Box::new(|c| c.body = Some("{\"x\":\"{{WHO}}\"}".into())), "body"),
            (Box::new(|c| c.timeout_ms = 0), "timeout_ms"),
            (Box::new(|c| c.timeout_ms = 600_000), "timeout_ms"),
            (
                Box::new(|c| {
                    c.http_auth_type = HttpAuthType::Basic;
                    c.headers[0].name = "authorization".into();
                }),
                "headers[0].name",
            ),
            (
                Box::new(|c| {
                    c.data_as = DataAs::Xml;
                    c.body = Some("<a><b>{{USEREMAIL}}</a>".into());
                }),
                "body",
            ),
            (
                Box::new(|c| {
                    c.data_as = DataAs::Xml;
                    c.body = Some("<a><![CDATA[{{USERPASSWORD}}]]></a>".into());
                }),
                "body",
            ),
            (
                Box::new(|c| {
                    c.data_as = DataAs::Xml;
                    c.body = Some("<a {{USEREMAIL}}=\"x\"/>".into());
                }),
                "body",
            ),
            (
                Box::new(|c| {
                    c.data_as = DataAs::UrlEncoded;
                    c.body = Some("user={{USEREMAIL}}&pass word={{USERPASSWORD}}".into());
                }),
                "body",
            ),
        ];
        for (mutate, field) in cases {
            let mut c = config();
            mutate(&mut c);
            let shown = format!("{c:?}");
            assert_eq!(field_of(c), field, "{shown}");
        }
    }

    #[test]
    fn header_values_are_write_only() {
        let mut saved = config();
        saved.headers.push(HeaderTemplate { name: "X-Api-Key".into(), value: Some("k3y".into()) });
        let shown = saved.without_secrets();
        assert!(shown.headers.iter().all(|h| h.value.is_none()));
        assert!(!serde_json::to_string(&shown).unwrap().contains("k3y"));
        // Sent back as shown, with one header renamed in case and one new.
        let mut edited = shown.clone();
        edited.headers[1].name = "x-api-KEY".into();
        edited.headers.push(HeaderTemplate { name: "X-New".into(), value: None });
        edited.keep_header_values_of(&saved);
        assert_eq!(edited.headers[0].value.as_deref(), Some("{{DEVICENAME}}"));
        assert_eq!(edited.headers[1].value.as_deref(), Some("k3y"));
        assert_eq!(edited.headers[2].value, None, "a new header needs its value");
        assert_eq!(edited.validate().unwrap_err().field, "headers[2].value");
    }

    #[test]
    fn plain_http_urls_are_named() {
        let mut c = config();
        assert!(c.plain_http_fields().is_empty());
        c.authentication_url = "HTTP://auth.example.com/login".into();
        c.forgot_password_url = Some("http://auth.example.com/f".into());
        assert_eq!(c.plain_http_fields(), ["authentication_url", "forgot_password_url"]);
    }

    #[test]
    fn gets_ignore_the_body_and_other_formats_validate() {
        let mut c = config();
        c.http_action = HttpAction::Get;
        c.body = Some("not json at all".into());
        assert!(c.validate().unwrap().body.is_none());

        let mut c = config();
        c.data_as = DataAs::Xml;
        c.body = Some(
            r#"<?xml version="1.0"?><login user="{{USEREMAIL}}"><!-- c --><p>{{USERPASSWORD}}</p></login>"#
                .into(),
        );
        c.validate().unwrap();

        let mut c = config();
        c.data_as = DataAs::UrlEncoded;
        c.body = Some("user={{USEREMAIL}}&password={{USERPASSWORD}}&device={{DEVICENAME}}".into());
        c.validate().unwrap();
    }
}
