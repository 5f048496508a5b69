//! The hosted sign-in: `/login` (email first, then a password or the
//! organization's identity provider), the forgotten-password pages, and
//! `/account`.

use askama::Template;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use gatehouse_core::{AuthMethod, Email, Password, Role};
use serde::Deserialize;

use super::{
    BrowserDevice, CsrfToken, Empty, PageError, PageForm, describe, html, html_with_status, see_other,
};
use crate::error::ApiError;
use crate::extract::ClientIp;
use crate::sessions::{self, Holder};
use crate::sso::{self, HomeRealm};
use crate::state::AppState;
use crate::{cookies, password_reset, password_signin, signin};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/login", get(login_page).post(login_email))
        .route("/login/password", axum::routing::post(login_password))
        .route("/login/forgot", get(forgot_page).post(forgot))
        .route("/login/reset", get(reset_page).post(reset))
        .route("/account", get(account))
        .route("/logout", axum::routing::post(logout))
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    csrf: String,
    return_to: String,
    email: String,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "login_password.html")]
struct PasswordPage {
    csrf: String,
    return_to: String,
    email: String,
    error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct LoginQuery {
    #[serde(default)]
    return_to: Option<String>,
    #[serde(default)]
    email: Option<String>,
    /// A single sign-on that came back refused, by its reason.
    #[serde(default)]
    refused: Option<String>,
}

/// At most this much of a `return_to` is carried through the pages; it is
/// only followed once checked, and a longer one is dropped.
const MAX_RETURN_TO: usize = 2048;

fn carried(return_to: Option<String>) -> String {
    return_to.filter(|r| r.len() <= MAX_RETURN_TO && !r.chars().any(char::is_control)).unwrap_or_default()
}

async fn login_page(
    axum::Extension(CsrfToken(csrf)): axum::Extension<CsrfToken>,
    Query(query): Query<LoginQuery>,
) -> Result<Response, PageError> {
    let email = query.email.filter(|e| e.len() <= 254).unwrap_or_default();
    // Only the fixed words for a reason are shown, never the query's text.
    let error = query.refused.as_deref().map(|reason| capitalised(signin::refusal_message(reason)));
    let status = if error.is_some() { StatusCode::FORBIDDEN } else { StatusCode::OK };
    html_with_status(status, &LoginPage { csrf, return_to: carried(query.return_to), email, error })
}

#[derive(Deserialize)]
struct EmailForm {
    email: String,
    #[serde(default)]
    return_to: Option<String>,
}

/// The email typed: on to the password, or to the organization's IdP.
async fn login_email(
    State(state): State<AppState>,
    axum::Extension(CsrfToken(csrf)): axum::Extension<CsrfToken>,
    ip: ClientIp,
    PageForm(form): PageForm<EmailForm>,
) -> Result<Response, PageError> {
    let return_to = carried(form.return_to);
    let again = |email: String, status: StatusCode, error: String| {
        html_with_status(
            status,
            &LoginPage { csrf: csrf.clone(), return_to: return_to.clone(), email, error: Some(error) },
        )
    };
    let email = match Email::parse(&form.email) {
        Ok(email) => email,
        Err(e) => {
            return again(
                form.email.chars().take(254).collect(),
                StatusCode::BAD_REQUEST,
                format!("The email {e}."),
            );
        }
    };
    match sso::home_realm(&state, &email).await? {
        HomeRealm::Password => html(&PasswordPage {
            csrf: csrf.clone(),
            return_to: return_to.clone(),
            email: email.as_str().to_owned(),
            error: None,
        }),
        HomeRealm::Sso(connection) => {
            let policy = state.store().sso_policy(connection.record.org_id).await?;
            let to = sso::page_return(&state, Some(&policy), Some(&return_to));
            match signin::start_web(&state, ip.0, &connection, to, &email).await {
                Ok(response) => Ok(response),
                Err(e) => {
                    let (status, _, message) = describe(&e);
                    again(email.as_str().to_owned(), status, message)
                }
            }
        }
    }
}

#[derive(Deserialize)]
struct PasswordForm {
    email: String,
    password: String,
    #[serde(default)]
    return_to: Option<String>,
}

async fn login_password(
    State(state): State<AppState>,
    axum::Extension(CsrfToken(csrf)): axum::Extension<CsrfToken>,
    BrowserDevice(device): BrowserDevice,
    PageForm(form): PageForm<PasswordForm>,
) -> Result<Response, PageError> {
    let return_to = carried(form.return_to);
    let refused = |email: String, e: &ApiError| {
        let (status, _, message) = describe(e);
        html_with_status(
            status,
            &PasswordPage { csrf: csrf.clone(), return_to: return_to.clone(), email, error: Some(message) },
        )
    };
    let email = match Email::parse(&form.email) {
        Ok(email) => email,
        Err(_) => return refused(form.email.chars().take(254).collect(), &ApiError::InvalidCredentials),
    };
    let ip = device.ip;
    match password_signin::sign_in(&state, &email, Password::new(form.password), device, Holder::Browser)
        .await
    {
        Ok(signed_in) => {
            let policy = state.store().sso_policy(signed_in.user.org_id).await?;
            let to = sso::page_return(&state, Some(&policy), Some(&return_to));
            let mut response = see_other(to.as_str());
            for cookie in cookies::for_session(&state, &signed_in.tokens) {
                response.headers_mut().append(SET_COOKIE, cookie);
            }
            Ok(response)
        }
        // The organization moved to single sign-on meanwhile.
        Err(ApiError::SsoRequired { .. }) => match sso::home_realm(&state, &email).await? {
            HomeRealm::Sso(connection) => {
                let policy = state.store().sso_policy(connection.record.org_id).await?;
                let to = sso::page_return(&state, Some(&policy), Some(&return_to));
                Ok(signin::start_web(&state, ip, &connection, to, &email).await?)
            }
            HomeRealm::Password => refused(email.as_str().to_owned(), &ApiError::InvalidCredentials),
        },
        Err(e) => refused(email.as_str().to_owned(), &e),
    }
}

#[derive(Template)]
#[template(path = "forgot.html")]
struct ForgotPage {
    csrf: String,
    email: String,
    sent: bool,
    error: Option<String>,
}

async fn forgot_page(
    axum::Extension(CsrfToken(csrf)): axum::Extension<CsrfToken>,
) -> Result<Response, PageError> {
    html(&ForgotPage { csrf, email: String::new(), sent: false, error: None })
}

#[derive(Deserialize)]
struct ForgotForm {
    email: String,
}

/// The same answer whether or not the email is registered.
async fn forgot(
    State(state): State<AppState>,
    axum::Extension(CsrfToken(csrf)): axum::Extension<CsrfToken>,
    BrowserDevice(device): BrowserDevice,
    PageForm(form): PageForm<ForgotForm>,
) -> Result<Response, PageError> {
    let typed: String = form.email.chars().take(254).collect();
    let failed = |status, error| {
        html_with_status(
            status,
            &ForgotPage { csrf: csrf.clone(), email: typed.clone(), sent: false, error: Some(error) },
        )
    };
    let email = match Email::parse(&form.email) {
        Ok(email) => email,
        Err(e) => return failed(StatusCode::BAD_REQUEST, format!("The email {e}.")),
    };
    match password_reset::request(&state, email.clone(), device).await {
        Ok(()) => html(&ForgotPage {
            csrf: csrf.clone(),
            email: email.as_str().to_owned(),
            sent: true,
            error: None,
        }),
        Err(e) => {
            let (status, _, message) = describe(&e);
            failed(status, message)
        }
    }
}

#[derive(Template)]
#[template(path = "reset.html")]
struct ResetPage {
    csrf: String,
    token: String,
    email: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct ResetQuery {
    #[serde(default)]
    token: String,
}

async fn reset_page(
    State(state): State<AppState>,
    axum::Extension(CsrfToken(csrf)): axum::Extension<CsrfToken>,
    Query(query): Query<ResetQuery>,
) -> Result<Response, PageError> {
    let token = query.token.chars().take(128).collect::<String>();
    let user = password_reset::link_user(&state, &token).await?;
    let error = user.is_none().then(|| capitalised(password_reset::LINK_NOT_LIVE));
    let status = if user.is_some() { StatusCode::OK } else { StatusCode::BAD_REQUEST };
    html_with_status(
        status,
        &ResetPage { csrf, token, email: user.and_then(|u| u.email).map(|e| e.as_str().to_owned()), error },
    )
}

#[derive(Deserialize)]
struct ResetForm {
    token: String,
    password: String,
    confirm: String,
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage {
    title: &'static str,
    message: String,
    link: &'static str,
    link_text: &'static str,
}

async fn reset(
    State(state): State<AppState>,
    axum::Extension(CsrfToken(csrf)): axum::Extension<CsrfToken>,
    BrowserDevice(device): BrowserDevice,
    PageForm(form): PageForm<ResetForm>,
) -> Result<Response, PageError> {
    let again = |email: Option<String>, error: String| {
        html_with_status(
            StatusCode::BAD_REQUEST,
            &ResetPage { csrf: csrf.clone(), token: form.token.clone(), email, error: Some(error) },
        )
    };
    let user = password_reset::link_user(&state, &form.token).await?;
    let Some(user) = user else { return again(None, capitalised(password_reset::LINK_NOT_LIVE)) };
    let email = user.email.map(|e| e.as_str().to_owned());
    if form.password != form.confirm {
        return again(email, "The two passwords are not the same.".into());
    }
    match password_reset::reset(&state, &form.token, &form.password, device).await {
        Ok(()) => html(&MessagePage {
            title: "Password changed",
            message: "Your password is changed, and every session that used the old one has ended.".into(),
            link: "/login",
            link_text: "Sign in",
        }),
        Err(ApiError::Invalid { message, .. }) => again(email, capitalised(&message)),
        Err(e) => Err(e.into()),
    }
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => format!("{}{}.", first.to_uppercase(), chars.as_str().trim_end_matches('.')),
        None => String::new(),
    }
}

/// The browser's signed-in session and user, if it has a live one.
pub(crate) async fn signed_in(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<(gatehouse_store::SessionRecord, gatehouse_core::User)>, ApiError> {
    match cookies::get(headers, cookies::BROWSER) {
        Some(token) => sessions::browser_session(state, token).await,
        None => Ok(None),
    }
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    csrf: String,
    email: String,
    org: String,
    method: &'static str,
    since: String,
    is_admin: bool,
}

/// How a session signed in, in words.
pub(crate) fn method_in_words(method: AuthMethod) -> &'static str {
    match method {
        AuthMethod::LocalPassword => "Password",
        AuthMethod::ExternalRest => "Password, checked by your organization's sign-in service",
        AuthMethod::Oidc => "Single sign-on (OpenID Connect)",
        AuthMethod::Saml => "Single sign-on (SAML)",
    }
}

async fn account(
    State(state): State<AppState>,
    axum::Extension(CsrfToken(csrf)): axum::Extension<CsrfToken>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let Some((session, user)) = signed_in(&state, &headers).await? else {
        return Ok(see_other("/login?return_to=/account"));
    };
    let org = state.store().get_org(user.org_id).await?;
    html(&AccountPage {
        csrf,
        email: user.handle().to_owned(),
        org: org.name,
        method: method_in_words(session.auth_method),
        since: session.created_at.format("%Y-%m-%d %H:%M UTC").to_string(),
        is_admin: user.role == Role::Admin,
    })
}

/// Signs the browser out: its session ends, and its cookies go.
async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    PageForm(_): PageForm<Empty>,
) -> Result<Response, PageError> {
    let mut response = see_other("/login");
    for cookie in sessions::end_browser_session(&state, &headers).await? {
        response.headers_mut().append(SET_COOKIE, cookie);
    }
    Ok(response)
}
