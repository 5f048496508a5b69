//! The cookies Gatehouse sets in browsers, and reading them back.
//!
//! Every cookie is HttpOnly and SameSite=Lax, and Secure unless the service
//! runs on plain-http loopback (development). Lax keeps them off cross-site
//! POSTs, which is what makes signing out without a CSRF token safe.

use axum::http::{HeaderMap, HeaderValue, header::COOKIE};

use crate::state::AppState;

/// A browser's session: its access token (what `/v1/me` and the
/// platform's web apps read).
pub(crate) const SESSION: &str = "gatehouse_session";
/// A browser's session as the web pages know it: an opaque token, good for
/// the session's lifetime (the access token lasts minutes).
pub(crate) const BROWSER: &str = "gatehouse_browser";
/// A platform admin's or a setup link's portal session.
pub(crate) const PORTAL: &str = "gatehouse_portal";
/// The web pages' CSRF token, which every form repeats.
pub(crate) const CSRF: &str = "gatehouse_csrf";
/// Binds a single sign-on flow to the browser that started it.
pub(crate) const SSO_FLOW: &str = "gatehouse_sso_flow";

/// The longest cookie value read; a session cookie is an access token.
const MAX_VALUE: usize = 64 * 1024;

/// A `Set-Cookie` value; `max_age` 0 removes the cookie.
pub(crate) fn set(state: &AppState, name: &str, value: &str, path: &str, max_age: i64) -> HeaderValue {
    let url = &state.settings().public_url;
    let plain_local =
        url.scheme() == "http" && matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    let secure = if plain_local { "" } else { "; Secure" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
    ))
    .expect("cookie values are token characters")
}

/// The cookies of a new browser session: the access token, and the pages'
/// token when the session has one.
pub(crate) fn for_session(state: &AppState, tokens: &crate::sessions::TokenResponse) -> Vec<HeaderValue> {
    let access_ttl = state.settings().access_token_ttl.as_secs() as i64;
    let mut cookies = vec![set(state, SESSION, &tokens.access_token, "/", access_ttl)];
    if let Some(browser) = &tokens.browser_token {
        cookies.push(set(state, BROWSER, browser, "/", state.settings().session_ttl.as_secs() as i64));
    }
    cookies
}

/// The `Set-Cookie` value that removes cookie `name`.
pub(crate) fn remove(state: &AppState, name: &str, path: &str) -> HeaderValue {
    set(state, name, "", path, 0)
}

/// The value of cookie `name` in the request, if it has a non-empty one.
pub(crate) fn get<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, v)| *k == name && !v.is_empty() && v.len() <= MAX_VALUE)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    //! Property tests (proptest) of reading cookies back: whatever the
    //! Cookie headers hold, a value found is one a pair in them carried, and
    //! never a panic.

    use axum::http::HeaderValue;
    use proptest::prelude::*;
    use proptest::test_runner::FileFailurePersistence;

    use super::*;

    fn config() -> ProptestConfig {
        ProptestConfig {
            failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
                "fixtures/fuzz/proptest-regressions/cookies.txt",
            ))),
            ..ProptestConfig::default()
        }
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn a_value_found_was_sent_under_that_name(
            headers in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..4),
            name in prop::sample::select(vec![SESSION, SSO_FLOW, "a", ""]),
        ) {
            let mut map = HeaderMap::new();
            for raw in &headers {
                if let Ok(v) = HeaderValue::from_bytes(raw) {
                    map.append(COOKIE, v);
                }
            }
            if let Some(found) = get(&map, name) {
                prop_assert!(!found.is_empty() && !found.contains(';'));
                let sent = map.get_all(COOKIE).iter().filter_map(|v| v.to_str().ok()).any(|v| {
                    v.split(';').any(|pair| pair.trim().split_once('=') == Some((name, found)))
                });
                prop_assert!(sent, "{found:?} was not sent as {name}");
            }
        }
    }

    #[test]
    fn the_first_non_empty_value_of_the_name_is_read() {
        let mut map = HeaderMap::new();
        map.append(COOKIE, HeaderValue::from_static("gatehouse_session=; other=x"));
        map.append(COOKIE, HeaderValue::from_static("xgatehouse_session=no; gatehouse_session=yes"));
        assert_eq!(get(&map, SESSION), Some("yes"));
        let long = format!("{SESSION}={}", "a".repeat(MAX_VALUE + 1));
        let mut map = HeaderMap::new();
        map.append(COOKIE, HeaderValue::from_str(&long).unwrap());
        assert_eq!(get(&map, SESSION), None, "longer than any token: not read");
    }
}
