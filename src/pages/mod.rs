//! The web pages: the hosted sign-in, password reset and account pages
//! (`signin.rs`) and the admin portal (`portal/`). They are one more surface
//! beside the JSON routes, and as thin: every decision is made by the same
//! modules beneath (`password_signin`, `password_reset`, `sso`, `signin`,
//! `configure`, `directory`, `external_auth`, `domains`); a page only reads
//! a form, calls one of them and renders what it answered.
//!
//! Pages are server-rendered from askama templates compiled into the binary
//! (`templates/`), with one stylesheet and one small script, which only
//! inserts the REST form's placeholders (the pages work without it). Every form carries a
//! CSRF token, compared with a cookie (`csrf.rs`), and every page a strict
//! Content-Security-Policy and the usual security headers (`headers`).

mod csrf;
mod portal;
mod signin;

use askama::Template;
use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, USER_AGENT};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use gatehouse_core::Device;
use serde::de::DeserializeOwned;

pub(crate) use csrf::CsrfToken;

use crate::error::ApiError;
use crate::extract::ClientIp;
use crate::state::AppState;

pub(crate) fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .merge(signin::router())
        .merge(portal::router())
        .route("/", get(|| async { see_other("/login") }))
        .route("/static/gatehouse.css", get(stylesheet))
        .route("/static/placeholders.js", get(placeholders_script))
        // One `layer` call, as in `app` (outside in): the pages' headers,
        // then the CSRF check.
        .layer(
            tower::ServiceBuilder::new()
                .layer(axum::middleware::from_fn(headers))
                .layer(axum::middleware::from_fn_with_state(state, csrf::layer)),
        )
}

async fn stylesheet() -> Response {
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static("text/css; charset=utf-8")),
            (CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600")),
        ],
        include_str!("../../static/gatehouse.css"),
    )
        .into_response()
}

/// The one script: inserting the REST form's placeholders.
async fn placeholders_script() -> Response {
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static("text/javascript; charset=utf-8")),
            (CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600")),
        ],
        include_str!("../../static/placeholders.js"),
    )
        .into_response()
}

/// The security headers of every page. The sign-in pages' forms may end at
/// an organization's identity provider (a redirect after the form), whose
/// address is not known when the page is served, so only they leave
/// `form-action` open.
async fn headers(request: Request, next: Next) -> Response {
    let open_forms = request.uri().path().starts_with("/login");
    let mut response = next.run(request).await;
    let csp = if open_forms {
        "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; frame-ancestors 'none'"
    } else {
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    };
    let h = response.headers_mut();
    h.insert(HeaderName::from_static("content-security-policy"), HeaderValue::from_static(csp));
    h.insert(HeaderName::from_static("x-content-type-options"), HeaderValue::from_static("nosniff"));
    h.insert(HeaderName::from_static("x-frame-options"), HeaderValue::from_static("DENY"));
    // Reset and setup links carry their token in the query: never in a
    // Referer to another site. (`no-referrer` would also make browsers send
    // `Origin: null` on our own forms, which the CSRF check refuses.)
    h.insert(HeaderName::from_static("referrer-policy"), HeaderValue::from_static("same-origin"));
    h.insert(HeaderName::from_static("cross-origin-opener-policy"), HeaderValue::from_static("same-origin"));
    if !h.contains_key(CACHE_CONTROL) {
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// A page's answer: rendered HTML.
pub(crate) fn html(template: &impl Template) -> Result<Response, PageError> {
    html_with_status(StatusCode::OK, template)
}

pub(crate) fn html_with_status(status: StatusCode, template: &impl Template) -> Result<Response, PageError> {
    let body = template.render().map_err(ApiError::internal)?;
    Ok((status, [(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"))], body).into_response())
}

/// 303 to `to` (after a form: the browser follows with a GET).
pub(crate) fn see_other(to: &str) -> Response {
    match HeaderValue::from_str(to) {
        Ok(location) => (StatusCode::SEE_OTHER, [(LOCATION, location)]).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// An error, as a page: what went wrong in words, never an internal detail.
#[derive(Debug)]
pub(crate) struct PageError(pub(crate) ApiError);

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl From<gatehouse_store::StoreError> for PageError {
    fn from(e: gatehouse_store::StoreError) -> Self {
        Self(e.into())
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    title: &'static str,
    message: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, message) = describe(&self.0);
        if status.is_server_error() {
            // Logged in full by the JSON answer's conversion; the page says
            // only that something failed.
            let _ = self.0.into_response();
        }
        match html_with_status(status, &ErrorPage { title, message }) {
            Ok(response) => response,
            Err(_) => status.into_response(),
        }
    }
}

/// What a person is told about an error.
pub(crate) fn describe(e: &ApiError) -> (StatusCode, &'static str, String) {
    match e {
        ApiError::Invalid { message, .. } => {
            (StatusCode::BAD_REQUEST, "Check what you entered", message.clone())
        }
        ApiError::InvalidCredentials => {
            (StatusCode::UNAUTHORIZED, "Not signed in", "The email or password is not right.".into())
        }
        ApiError::Unauthorized { .. } => {
            (StatusCode::UNAUTHORIZED, "Not signed in", "Sign in to see this page.".into())
        }
        ApiError::Forbidden { message, .. } => (StatusCode::FORBIDDEN, "Not allowed", message.clone()),
        ApiError::NotFound(what) => {
            (StatusCode::NOT_FOUND, "Not found", format!("This {what} does not exist."))
        }
        ApiError::Conflict(message) => (StatusCode::CONFLICT, "Not done", message.clone()),
        ApiError::DomainOwned(domain) => (
            StatusCode::CONFLICT,
            "Not done",
            format!("The address is in {domain}, a domain another organization has verified."),
        ),
        ApiError::TooManyRequests { retry_after } => (
            StatusCode::TOO_MANY_REQUESTS,
            "Too many attempts",
            format!("Too many attempts. Try again in {}.", wait(*retry_after)),
        ),
        ApiError::Unavailable { code: "external_auth_unavailable", .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Try again shortly",
            "Your organization's sign-in service did not answer. Try again in a moment.".into(),
        ),
        ApiError::Unavailable { code: "idp_unavailable", .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Try again shortly",
            "Your organization's identity provider could not be reached. Try again in a moment.".into(),
        ),
        ApiError::Unavailable { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Try again shortly",
            "The service is busy or cannot reach what it needs. Try again in a moment.".into(),
        ),
        ApiError::SignIn { status, message, .. } => (*status, "Not signed in", message.clone()),
        ApiError::SsoRequired { .. } => (
            StatusCode::FORBIDDEN,
            "Single sign-on",
            "Your organization signs in through single sign-on.".into(),
        ),
        ApiError::PayloadTooLarge => {
            (StatusCode::PAYLOAD_TOO_LARGE, "Too large", "What you sent is too large.".into())
        }
        ApiError::RequestTimeout(_) => {
            (StatusCode::REQUEST_TIMEOUT, "Too slow", "That took too long. Try again.".into())
        }
        ApiError::MethodNotAllowed | ApiError::UnsupportedMediaType | ApiError::BadGateway { .. } => {
            (StatusCode::BAD_REQUEST, "Not understood", "The request was not understood.".into())
        }
        ApiError::Internal(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "Something went wrong on our side. Try again; if it keeps happening, tell your administrator."
                .into(),
        ),
    }
}

/// "3 minutes", "1 hour".
fn wait(seconds: u64) -> String {
    match seconds {
        0..=90 => "a minute".into(),
        91..=5400 => format!("{} minutes", seconds.div_ceil(60)),
        _ => format!("{} hours", seconds.div_ceil(3600)),
    }
}

/// A form with no fields but its CSRF token (a button: sign out, revoke).
#[derive(serde::Deserialize)]
pub(crate) struct Empty {}

/// A form posted from one of Gatehouse's pages: its CSRF token checked
/// against the cookie, and a cross-site post refused, before the fields are
/// read.
pub(crate) struct PageForm<T>(pub(crate) T);

impl<T: DeserializeOwned> FromRequest<AppState> for PageForm<T> {
    type Rejection = PageError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        csrf::check_origin(state, request.headers())?;
        let expected = csrf::cookie(request.headers()).map(str::to_owned);
        let bytes = axum::body::Bytes::from_request(request, state).await.map_err(|e| {
            PageError(if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::Invalid { field: None, message: "the form could not be read".into() }
            })
        })?;
        csrf::check_token(expected.as_deref(), &bytes)?;
        serde_urlencoded::from_bytes(&bytes).map(PageForm).map_err(|e| {
            PageError(ApiError::Invalid { field: None, message: format!("the form is not complete: {e}") })
        })
    }
}

/// The browser a person uses, as the REST pass-through's `{{DEVICEOS}}`,
/// `{{DEVICENAME}}` and `{{DEVICEIP}}` describe it: read from its
/// User-Agent (pages run no script to ask), and the client address as the
/// API reads it.
pub(crate) struct BrowserDevice(pub(crate) Device);

impl FromRequestParts<AppState> for BrowserDevice {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let ClientIp(ip) = ClientIp::from_request_parts(parts, state).await?;
        let agent = parts.headers.get(USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
        let (os, browser) = describe_agent(agent);
        let name = match (browser, os) {
            (Some(b), Some(o)) => Some(format!("{b} on {o}")),
            (Some(b), None) => Some(b.to_owned()),
            (None, _) => None,
        };
        Ok(Self(Device { os: os.map(str::to_owned), name, ip }))
    }
}

/// The operating system and browser a User-Agent names, from the few
/// markers every browser sends; anything else is unknown.
pub(crate) fn describe_agent(agent: &str) -> (Option<&'static str>, Option<&'static str>) {
    let has = |marker: &str| agent.contains(marker);
    let os = if has("iPhone") || has("iPad") {
        Some("iOS")
    } else if has("Android") {
        Some("Android")
    } else if has("CrOS") {
        Some("ChromeOS")
    } else if has("Windows") {
        Some("Windows")
    } else if has("Macintosh") || has("Mac OS X") {
        Some("macOS")
    } else if has("Linux") {
        Some("Linux")
    } else {
        None
    };
    let browser = if has("Edg/") {
        Some("Edge")
    } else if has("Firefox/") {
        Some("Firefox")
    } else if has("Chrome/") || has("Chromium/") {
        Some("Chrome")
    } else if has("Safari/") {
        Some("Safari")
    } else {
        None
    };
    (os, browser)
}

#[cfg(test)]
mod tests {
    use super::describe_agent;

    #[test]
    fn user_agents_name_their_system_and_browser() {
        let chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 Safari/537.36";
        assert_eq!(describe_agent(chrome), (Some("Linux"), Some("Chrome")));
        let iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.0 Mobile/15E148 Safari/604.1";
        assert_eq!(describe_agent(iphone), (Some("iOS"), Some("Safari")));
        let edge = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Safari/537.36 Edg/130.0";
        assert_eq!(describe_agent(edge), (Some("Windows"), Some("Edge")));
        assert_eq!(describe_agent("curl/8.0\r\nX: y"), (None, None));
    }
}
