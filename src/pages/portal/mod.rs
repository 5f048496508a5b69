//! The admin portal: Organization & Users › Organization Setup ›
//! Integrations › External User Authentication And Provisioning, the
//! organization's users and its audit trail, and the guides.
//!
//! Who gets in is `access.rs`; the integration pages are
//! `integrations.rs`, over `configure`, `external_auth` and
//! `portal_access`. Nothing here decides what a change may do: it reads a
//! form, calls the module beneath, and shows what it answered.

mod access;
mod fields;
mod guides;
mod integrations;

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::http::header::SET_COOKIE;
use axum::response::Response;
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use gatehouse_core::{OrgId, Role, UserId};
use serde::Deserialize;

pub(crate) use access::Portal;

use super::{CsrfToken, Empty, PageError, PageForm, html, html_with_status, see_other};
use crate::audit::AuditQuery;
use crate::cookies;
use crate::directory::{self, UpdateUser};
use crate::error::ApiError;
use crate::portal_access;
use crate::state::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/admin", get(home))
        .route("/admin/login", get(login_page).post(login))
        .route("/admin/logout", post(logout))
        .route("/admin/setup", get(follow_setup_link))
        .route("/admin/orgs/{org}", get(org_page))
        .route("/admin/orgs/{org}/portal-links", post(create_setup_link))
        .route("/admin/orgs/{org}/users", get(users_page))
        .route("/admin/orgs/{org}/users/{user}", post(change_user))
        .route("/admin/orgs/{org}/audit", get(audit_page))
        .merge(integrations::router())
        .merge(guides::router())
}

/// What every portal page shows around its content: the form token, who is
/// signed in, and the organization in view.
pub(crate) struct Chrome {
    pub(crate) csrf: String,
    pub(crate) who: String,
    pub(crate) org_id: String,
    pub(crate) org_name: String,
    /// Whether the person may pick another organization.
    pub(crate) every_org: bool,
}

impl Chrome {
    pub(crate) fn new(csrf: String, portal: &Portal, org: Option<&gatehouse_core::Organization>) -> Self {
        Self {
            csrf,
            who: portal.describe(),
            org_id: org.map(|o| o.id.to_string()).unwrap_or_default(),
            org_name: org.map(|o| o.name.clone()).unwrap_or_default(),
            every_org: portal.only_org().is_none(),
        }
    }
}

pub(crate) fn when(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

// ---- getting in ----------------------------------------------------------------

#[derive(Template)]
#[template(path = "portal/login.html")]
struct LoginPage {
    csrf: String,
    error: Option<String>,
}

async fn login_page(
    axum::Extension(CsrfToken(csrf)): axum::Extension<CsrfToken>,
) -> Result<Response, PageError> {
    html(&LoginPage { csrf, error: None })
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

/// A platform admin's token for a portal session cookie. (Organization
/// admins sign in on `/login`.)
async fn login(
    State(state): State<AppState>,
    axum::Extension(CsrfToken(csrf)): axum::Extension<CsrfToken>,
    PageForm(form): PageForm<LoginForm>,
) -> Result<Response, PageError> {
    let Some(session) = portal_access::sign_in_admin(&state, &form.token).await? else {
        let error = Some("That is not an admin token.".to_owned());
        return html_with_status(axum::http::StatusCode::UNAUTHORIZED, &LoginPage { csrf, error });
    };
    let mut response = see_other("/admin");
    let ttl = portal_access::SESSION_TTL.num_seconds();
    response
        .headers_mut()
        .append(SET_COOKIE, cookies::set(&state, cookies::PORTAL, session.plain(), "/", ttl));
    Ok(response)
}

async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    PageForm(_): PageForm<Empty>,
) -> Result<Response, PageError> {
    if let Some(token) = cookies::get(&headers, cookies::PORTAL) {
        portal_access::sign_out(&state, token).await?;
    }
    // An organization admin's portal session is their browser session.
    let browser = crate::sessions::end_browser_session(&state, &headers).await?;
    let mut response = see_other("/admin/login");
    response.headers_mut().append(SET_COOKIE, cookies::remove(&state, cookies::PORTAL, "/"));
    for cookie in browser {
        response.headers_mut().append(SET_COOKIE, cookie);
    }
    Ok(response)
}

#[derive(Deserialize)]
struct SetupQuery {
    #[serde(default)]
    token: String,
}

/// A setup link: a portal session for its organization, then on to it
/// (the address with the token leaves the browser's bar at once).
async fn follow_setup_link(
    State(state): State<AppState>,
    Query(query): Query<SetupQuery>,
) -> Result<Response, PageError> {
    let token: String = query.token.chars().take(128).collect();
    let Some((session, org)) = portal_access::follow_link(&state, &token).await? else {
        return Err(PageError(ApiError::Forbidden {
            code: "link_not_live",
            message: "This setup link has expired or was revoked. Ask for a new one.".into(),
        }));
    };
    let mut response = see_other(&format!("/admin/orgs/{org}"));
    let ttl = portal_access::SESSION_TTL.num_seconds();
    response
        .headers_mut()
        .append(SET_COOKIE, cookies::set(&state, cookies::PORTAL, session.plain(), "/", ttl));
    Ok(response)
}

// ---- organizations -----------------------------------------------------------------

#[derive(Template)]
#[template(path = "portal/home.html")]
struct HomePage {
    chrome: Chrome,
    orgs: Vec<OrgRow>,
}

struct OrgRow {
    id: String,
    name: String,
    toolkit: bool,
}

async fn home(
    State(state): State<AppState>,
    axum::Extension(CsrfToken(csrf)): axum::Extension<CsrfToken>,
    portal: Portal,
) -> Result<Response, PageError> {
    if let Some(org) = portal.only_org() {
        return Ok(see_other(&format!("/admin/orgs/{org}")));
    }
    let orgs = state.store().list_orgs(None, 200).await?;
    let orgs = orgs
        .into_iter()
        .map(|o| OrgRow { id: o.id.to_string(), name: o.name, toolkit: o.enterprise_toolkit })
        .collect();
    html(&HomePage { chrome: Chrome::new(csrf, &portal, None), orgs })
}

#[derive(Template)]
#[template(path = "portal/org.html")]
struct OrgPage {
    chrome: Chrome,
    toolkit: bool,
    users: usize,
    more_users: bool,
    /// Only for a platform admin: setup links can be made here.
    links: Option<Vec<LinkRow>>,
    new_link: Option<String>,
}

struct LinkRow {
    created_by: String,
    created_at: String,
    expires_at: String,
    state: &'static str,
}

async fn org_page(
    State(state): State<AppState>,
    axum::Extension(CsrfToken(csrf)): axum::Extension<CsrfToken>,
    portal: Portal,
    Path(org): Path<OrgId>,
) -> Result<Response, PageError> {
    render_org(&state, csrf, &portal, org, None).await
}

async fn render_org(
    state: &AppState,
    csrf: String,
    portal: &Portal,
    org: OrgId,
    new_link: Option<String>,
) -> Result<Response, PageError> {
    let org = portal.org(state, org).await?;
    let page = state.store().list_users(org.id, None, 200).await?;
    let now = state.clock().now();
    let links = if portal.only_org().is_none() {
        let links = portal_access::list_links(state, org.id).await?;
        Some(
            links
                .into_iter()
                .map(|l| LinkRow {
                    created_by: l.created_by,
                    created_at: when(l.created_at),
                    expires_at: when(l.expires_at),
                    state: if l.revoked_at.is_some() {
                        "revoked"
                    } else if l.expires_at <= now {
                        "expired"
                    } else {
                        "live"
                    },
                })
                .collect(),
        )
    } else {
        None
    };
    html(&OrgPage {
        toolkit: org.enterprise_toolkit,
        users: page.users.len(),
        more_users: page.next.is_some(),
        chrome: Chrome::new(csrf, portal, Some(&org)),
        links,
        new_link,
    })
}

/// A platform admin makes a setup link for the organization's IT admin;
/// its address is shown this once.
async fn create_setup_link(
    State(state): State<AppState>,
    axum::Extension(CsrfToken(csrf)): axum::Extension<CsrfToken>,
    portal: Portal,
    Path(org): Path<OrgId>,
    PageForm(_): PageForm<Empty>,
) -> Result<Response, PageError> {
    if portal.only_org().is_some() {
        return Err(PageError(ApiError::Forbidden {
            code: "platform_admins_only",
            message: "Only platform admins make setup links.".into(),
        }));
    }
    let org = portal.org(&state, org).await?;
    let (_, token) = portal_access::create_link(&state, &portal.actor(), org.id, None).await?;
    let url = portal_access::link_url(&state, &token);
    render_org(&state, csrf, &portal, org.id, Some(url)).await
}

// ---- users ---------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "portal/users.html")]
struct UsersPage {
    chrome: Chrome,
    users: Vec<UserRow>,
    next: Option<String>,
    notice: Option<String>,
}

struct UserRow {
    id: String,
    email: String,
    name: String,
    active: bool,
    admin: bool,
    created_via: &'static str,
    last_sign_in: String,
    is_self: bool,
}

#[derive(Deserialize)]
struct UsersQuery {
    #[serde(default)]
    after: Option<UserId>,
    #[serde(default)]
    notice: Option<String>,
}

async fn users_page(
    State(state): State<AppState>,
    axum::Extension(CsrfToken(csrf)): axum::Extension<CsrfToken>,
    portal: Portal,
    Path(org): Path<OrgId>,
    Query(q): Query<UsersQuery>,
) -> Result<Response, PageError> {
    let org = portal.org(&state, org).await?;
    let page = state.store().list_users(org.id, q.after, 100).await?;
    let ids: Vec<UserId> = page.users.iter().map(|u| u.id).collect();
    let seen = state.store().last_sign_ins(&ids).await?;
    let me = portal.own_user().map(|(u, _)| u.id);
    let users = page
        .users
        .into_iter()
        .map(|u| UserRow {
            id: u.id.to_string(),
            last_sign_in: seen
                .iter()
                .find(|(id, _)| *id == u.id)
                .map(|(_, at)| when(*at))
                .unwrap_or_else(|| "never".into()),
            email: u.handle().to_owned(),
            name: u.display_name,
            active: u.active,
            admin: u.role == Role::Admin,
            created_via: match u.created_via {
                gatehouse_core::Origin::Admin => "admin",
                gatehouse_core::Origin::Scim => "SCIM",
                gatehouse_core::Origin::JustInTime => "JIT (first sign-in)",
                gatehouse_core::Origin::Unknown => "unknown",
            },
            is_self: me == Some(u.id),
        })
        .collect();
    // Only the notices this page itself links to are shown.
    let notice = match q.notice.as_deref() {
        Some("changed") => Some("Saved.".to_owned()),
        _ => None,
    };
    html(&UsersPage {
        chrome: Chrome::new(csrf, &portal, Some(&org)),
        users,
        next: page.next.map(|n| n.to_string()),
        notice,
    })
}

#[derive(Deserialize)]
struct UserAction {
    action: String,
}

/// Activates, deactivates, or changes the role of a user.
async fn change_user(
    State(state): State<AppState>,
    portal: Portal,
    Path((org, user)): Path<(OrgId, UserId)>,
    PageForm(form): PageForm<UserAction>,
) -> Result<Response, PageError> {
    let org = portal.org(&state, org).await?;
    if portal.own_user().is_some_and(|(me, _)| me.id == user) {
        return Err(PageError(ApiError::Conflict(
            "You cannot deactivate yourself or take away your own admin role here: ask another admin.".into(),
        )));
    }
    let change = match form.action.as_str() {
        "activate" => UpdateUser { active: Some(true), ..Default::default() },
        "deactivate" => UpdateUser { active: Some(false), ..Default::default() },
        "make_admin" => UpdateUser { role: Some("admin".into()), ..Default::default() },
        "make_member" => UpdateUser { role: Some("member".into()), ..Default::default() },
        _ => {
            return Err(PageError(ApiError::invalid(
                "action",
                "is not something that can be done to a user",
            )));
        }
    };
    directory::update_user(&state, &portal.actor(), org.id, user, change).await?;
    Ok(see_other(&format!("/admin/orgs/{}/users?notice=changed", org.id)))
}

// ---- audit ------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "portal/audit.html")]
struct AuditPage {
    chrome: Chrome,
    kind: String,
    user: String,
    events: Vec<EventRow>,
    next: Option<String>,
    error: Option<String>,
}

struct EventRow {
    at: String,
    kind: String,
    outcome: String,
    method: String,
    user: String,
    actor: String,
    detail: String,
}

#[derive(Deserialize)]
struct AuditForm {
    #[serde(default)]
    kind: Option<String>,
    /// A user's email or id.
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    before: Option<String>,
}

async fn audit_page(
    State(state): State<AppState>,
    axum::Extension(CsrfToken(csrf)): axum::Extension<CsrfToken>,
    portal: Portal,
    Path(org): Path<OrgId>,
    Query(form): Query<AuditForm>,
) -> Result<Response, PageError> {
    let org = portal.org(&state, org).await?;
    let kind = form.kind.as_deref().map(str::trim).filter(|k| !k.is_empty()).map(str::to_owned);
    let user_text = form.user.as_deref().map(str::trim).unwrap_or("").chars().take(254).collect::<String>();
    // A user is named by email here; the API takes their id.
    let user_id = if user_text.is_empty() {
        Ok(None)
    } else if let Ok(id) = user_text.parse::<UserId>() {
        Ok(Some(id.to_string()))
    } else {
        match gatehouse_core::Email::parse(&user_text) {
            Ok(email) => match state.store().find_user_by_email(&email).await? {
                Some(u) if u.org_id == org.id => Ok(Some(u.id.to_string())),
                _ => Err("No user of this organization has that email.".to_owned()),
            },
            Err(_) => Err("Give a user's email.".to_owned()),
        }
    };
    let chrome = Chrome::new(csrf, &portal, Some(&org));
    let shown = |events, next, error| AuditPage {
        chrome,
        kind: kind.clone().unwrap_or_default(),
        user: user_text.clone(),
        events,
        next,
        error,
    };
    let user_id = match user_id {
        Ok(id) => id,
        Err(message) => return html(&shown(vec![], None, Some(message))),
    };
    let query = AuditQuery {
        limit: Some(50),
        before: form.before.clone(),
        kind: kind.clone(),
        user_id,
        since: None,
        until: None,
        org_id: None,
    };
    let filter = match query.filter(gatehouse_store::OrgScope::Only(org.id)) {
        Ok(filter) => filter,
        Err(e) => return html(&shown(vec![], None, Some(super::describe(&e).2))),
    };
    let page = state.store().list_audit_events(&filter, query.before()?.as_deref(), 50).await?;
    let events = page
        .events
        .into_iter()
        .map(|e| EventRow {
            at: when(e.created_at),
            kind: e.kind,
            outcome: e.outcome,
            method: e.method.unwrap_or_default(),
            user: e.user_id.map(|u| u.to_string()).unwrap_or_default(),
            actor: e.actor.unwrap_or_default(),
            detail: e.detail.map(|d| d.to_string()).unwrap_or_default(),
        })
        .collect();
    html(&shown(events, page.next, None))
}
