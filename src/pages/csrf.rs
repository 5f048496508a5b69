//! CSRF protection for the pages' forms: a random token in a cookie
//! (HttpOnly, SameSite=Lax), repeated in a hidden field of every form, and
//! compared on every post; a post whose `Origin` is not Gatehouse's own, or
//! that the browser marks cross-site, is refused before that.
//!
//! Another site can make a browser post a form here, but cannot read the
//! cookie to repeat it; the session cookies are SameSite=Lax as well, so
//! such a post would not be signed in anyway.

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::http::header::{ORIGIN, SET_COOKIE};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::PageError;
use crate::cookies;
use crate::error::ApiError;
use crate::state::AppState;

/// The token a page's forms carry (from the request's cookie, or the one
/// this response sets).
#[derive(Debug, Clone)]
pub(crate) struct CsrfToken(pub(crate) String);

/// The token in the request's cookie, if it looks like one of ours.
pub(super) fn cookie(headers: &HeaderMap) -> Option<&str> {
    cookies::get(headers, cookies::CSRF)
        .filter(|t| t.len() == 43 && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

/// Gives every page request a token, setting the cookie when the browser
/// has none yet.
pub(super) async fn layer(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let existing = cookie(request.headers()).map(str::to_owned);
    let fresh = existing.is_none();
    let token = existing.unwrap_or_else(|| URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()));
    request.extensions_mut().insert(CsrfToken(token.clone()));
    let mut response = next.run(request).await;
    if fresh {
        let ttl = state.settings().session_ttl.as_secs() as i64;
        response.headers_mut().append(SET_COOKIE, cookies::set(&state, cookies::CSRF, &token, "/", ttl));
    }
    response
}

fn refused() -> PageError {
    PageError(ApiError::Forbidden {
        code: "csrf",
        message: "This form is no longer valid. Go back, reload the page and try again.".into(),
    })
}

/// Refuses a post from another origin: its `Origin` header, when the
/// browser sends one, must be Gatehouse's public origin, and the browser's
/// own `Sec-Fetch-Site` must not say cross-site.
pub(super) fn check_origin(state: &AppState, headers: &HeaderMap) -> Result<(), PageError> {
    if headers.get("sec-fetch-site").is_some_and(|v| v == "cross-site") {
        return Err(refused());
    }
    if let Some(origin) = headers.get(ORIGIN) {
        let own = state.settings().public_url.origin().ascii_serialization();
        if origin.to_str().ok() != Some(own.as_str()) {
            return Err(refused());
        }
    }
    Ok(())
}

/// Compares the form's `csrf` field with the cookie's token.
pub(super) fn check_token(expected: Option<&str>, form: &[u8]) -> Result<(), PageError> {
    #[derive(Deserialize)]
    struct Field {
        #[serde(default)]
        csrf: String,
    }
    let Some(expected) = expected else { return Err(refused()) };
    let given = serde_urlencoded::from_bytes::<Field>(form).map(|f| f.csrf).unwrap_or_default();
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) { Ok(()) } else { Err(refused()) }
}

#[cfg(test)]
mod tests {
    use super::check_token;

    #[test]
    fn the_form_must_repeat_the_cookie() {
        let token = "a".repeat(43);
        assert!(check_token(Some(&token), format!("csrf={token}&email=x").as_bytes()).is_ok());
        assert!(check_token(Some(&token), b"email=x").is_err());
        assert!(check_token(Some(&token), format!("csrf={}", "b".repeat(43)).as_bytes()).is_err());
        assert!(check_token(None, format!("csrf={token}").as_bytes()).is_err(), "no cookie, no post");
        assert!(check_token(Some(&token), b"csrf=%ZZ").is_err());
    }
}
