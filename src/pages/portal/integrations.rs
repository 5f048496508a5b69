//! Organization Setup › Integrations › External User Authentication And
//! Provisioning: the REST service, Okta, Azure Active Directory and Ping
//! Identity connections, single sign-on policy and SCIM tokens.
//!
//! A change that could lock out the person making it is tried first: an
//! organization admin turning on REST pass-through must pass a test with
//! their own credentials; one who signed in through single sign-on must see
//! a new configuration of that protocol check out before it is saved; and
//! only someone who signed in through single sign-on may require it.
//! (Platform admins and setup links do not sign in through the
//! organization, and a setup link is the way back in.)

use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use gatehouse_core::{AuthMethod, OrgId, Organization, Password};
use gatehouse_passthrough::{Placeholder, RestAuthConfig};
use gatehouse_store::SsoPolicy;
use serde::Deserialize;
use serde_json::Value;

use super::fields::{self, Field, Input, Spec, spec};
use super::{Chrome, Portal, when};
use crate::configure::{self, ConnectionCheck};
use crate::connections::{Config, Connection, Kind};
use crate::error::ApiError;
use crate::external_auth::{self, TestResult};
use crate::pages::{BrowserDevice, CsrfToken, Empty, PageError, PageForm, describe, html_with_status};
use crate::state::AppState;

const BASE: &str = "/admin/orgs/{org}/setup/integrations/external-auth";

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route(BASE, get(overview))
        .route(&format!("{BASE}/rest"), get(rest_page).post(rest_post))
        .route(&format!("{BASE}/new/{{kind}}"), get(new_connection_page).post(new_connection_post))
        .route(&format!("{BASE}/connections/{{id}}"), get(connection_page).post(connection_post))
        .route(&format!("{BASE}/sso-policy"), post(sso_policy_post))
        .route(&format!("{BASE}/scim-tokens"), post(mint_scim_token))
        .route(&format!("{BASE}/scim-tokens/{{id}}/revoke"), post(revoke_scim_token))
}

pub(crate) fn base(org: OrgId) -> String {
    BASE.replace("{org}", &org.to_string())
}

fn kind_of_slug(slug: &str) -> Result<Kind, PageError> {
    Kind::from_slug(slug).ok_or(PageError(ApiError::NotFound("kind of connection")))
}

fn guide(kind: Kind) -> String {
    format!("/admin/guides/{}", kind.slug())
}

// ---- the overview ------------------------------------------------------------------

#[derive(Template)]
#[template(path = "portal/external_auth.html")]
struct Overview {
    chrome: Chrome,
    base: String,
    toolkit: bool,
    rest_on: bool,
    options: Vec<OptionCard>,
    connections: Vec<ConnectionRow>,
    sso_required: bool,
    redirect_urls: String,
    scim_base: String,
    scim_tokens: Vec<TokenRow>,
    new_token: Option<String>,
    notice: Option<String>,
    error: Option<String>,
}

struct OptionCard {
    title: &'static str,
    slug: &'static str,
    guide: String,
    guide_title: &'static str,
    protocol: &'static str,
    configured: usize,
}

struct ConnectionRow {
    id: String,
    title: &'static str,
    last_success: String,
    last_failure: String,
    certificate: String,
    certificate_warning: bool,
}

struct TokenRow {
    id: String,
    label: String,
    idp: String,
    created_at: String,
}

async fn overview(
    State(state): State<AppState>,
    axum::Extension(CsrfToken(csrf)): axum::Extension<CsrfToken>,
    portal: Portal,
    Path(org): Path<OrgId>,
) -> Result<Response, PageError> {
    let org = portal.org(&state, org).await?;
    render_overview(&state, csrf, &portal, &org, Notice::None).await
}

enum Notice {
    None,
    Done(String),
    Failed(String),
    Token(String),
}

impl Notice {
    /// What a change's outcome says: its message, or why it failed.
    fn after(outcome: Result<String, ApiError>) -> Self {
        match outcome {
            Ok(message) => Self::Done(message),
            Err(e) => Self::Failed(describe(&e).2),
        }
    }
}

async fn render_overview(
    state: &AppState,
    csrf: String,
    portal: &Portal,
    org: &Organization,
    notice: Notice,
) -> Result<Response, PageError> {
    let records = state.store().list_connections(org.id).await?;
    let mut connections = Vec::new();
    let now = state.clock().now();
    for record in records {
        let connection = Connection::open(state, record)?;
        let health = configure::health(state, &connection).await?;
        let (certificate, certificate_warning) = match &health.certificate_expires {
            None => ("not used (OpenID Connect)".to_owned(), false),
            Some(Ok(at)) if *at <= now => (format!("expired {}", when(*at)), true),
            Some(Ok(at)) => (format!("expires {}", when(*at)), *at - now < chrono::Duration::days(30)),
            Some(Err(why)) => (why.clone(), true),
        };
        connections.push(ConnectionRow {
            id: connection.record.id.clone(),
            title: connection.kind.title(),
            last_success: health.last_success_at.map(when).unwrap_or_else(|| "none yet".into()),
            last_failure: match (health.last_failure_at, health.last_failure_reason) {
                (Some(at), Some(why)) => format!("{}: {why}", when(at)),
                (Some(at), None) => when(at),
                _ => "none".into(),
            },
            certificate,
            certificate_warning,
        });
    }
    let options = Kind::ALL
        .into_iter()
        .map(|kind| OptionCard {
            title: kind.title(),
            slug: kind.slug(),
            guide: guide(kind),
            guide_title: super::guides::title_of(kind),
            protocol: match kind.method() {
                AuthMethod::Saml => "SAML 2.0 single sign-on",
                _ => "OpenID Connect single sign-on and SCIM provisioning",
            },
            configured: connections.iter().filter(|c| c.title == kind.title()).count(),
        })
        .collect();
    let policy = state.store().sso_policy(org.id).await?;
    let scim_tokens = state
        .store()
        .list_scim_tokens(org.id, 200)
        .await?
        .into_iter()
        .map(|t| TokenRow { id: t.id, label: t.label, idp: t.idp, created_at: when(t.created_at) })
        .collect();
    let (notice, error, new_token) = match notice {
        Notice::None => (None, None, None),
        Notice::Done(m) => (Some(m), None, None),
        Notice::Failed(m) => (None, Some(m), None),
        Notice::Token(t) => (None, None, Some(t)),
    };
    let status =
        if error.is_some() { axum::http::StatusCode::BAD_REQUEST } else { axum::http::StatusCode::OK };
    html_with_status(
        status,
        &Overview {
            base: base(org.id),
            toolkit: org.enterprise_toolkit,
            rest_on: state.store().rest_auth(org.id).await?.is_some(),
            options,
            connections,
            sso_required: policy.sso_required,
            redirect_urls: policy.redirect_urls.join("\n"),
            scim_base: scim_base(state),
            scim_tokens,
            new_token,
            notice,
            error,
            chrome: Chrome::new(csrf, portal, Some(org)),
        },
    )
}

/// The SCIM base URL to give the IdP.
pub(crate) fn scim_base(state: &AppState) -> String {
    format!("{}/scim/v2", state.issuer())
}

// ---- the configuration form, for every kind ------------------------------------------------

#[derive(Template)]
#[template(path = "portal/configure.html")]
struct ConfigurePage {
    chrome: Chrome,
    base: String,
    heading: String,
    guide: Option<String>,
    action: String,
    fields: Vec<Field>,
    /// Values the IdP's administrator copies from here.
    copy: Vec<CopyValue>,
    /// Links to download: (label, href).
    downloads: Vec<(&'static str, String)>,
    /// REST: the placeholders, as typed into a template.
    placeholders: Vec<String>,
    test: Option<TestView>,
    /// REST: who the test signs in as (an organization admin: themself).
    test_as: Option<String>,
    /// The test user's email as typed, to test again.
    test_email: String,
    can_delete: bool,
    delete_label: &'static str,
    notice: Option<String>,
    error: Option<String>,
}

/// A value to copy: (label, value, element id).
type CopyValue = (&'static str, String, &'static str);

/// What a test showed.
struct TestView {
    ok: bool,
    summary: String,
    lines: Vec<String>,
}

const ACCOUNT_FIELDS: [Spec; 8] = [
    spec("jit_provisioning", "Create users on their first sign-in (just in time)", Input::Check, ""),
    spec(
        "link_by_email",
        "Link a first sign-in to an existing user with the same verified email",
        Input::Check,
        "",
    ),
    spec(
        "allowed_email_domains",
        "Allowed email domains",
        Input::Lines,
        "One per line; empty allows every domain.",
    ),
    spec(
        "trust_unverified_email_domains",
        "Believe the IdP's email outside the organization's verified domains",
        Input::Check,
        "Leave off unless every address the IdP asserts is one it owns.",
    ),
    spec(
        "admin_group",
        "Admins' IdP group",
        Input::Text,
        "Optional. Members of this IdP group become the organization's admins when they sign in; everyone else signing in here becomes a member. Azure AD sends group object ids.",
    ),
    spec(
        "jit_alongside_scim",
        "Create users just in time even though SCIM provisions them",
        Input::Check,
        "",
    ),
    spec(
        "groups_source",
        "Groups in access tokens",
        Input::Choice(&[("", "Both (default)"), ("idp", "From the IdP at sign-in"), ("scim", "From SCIM")]),
        "",
    ),
    spec(
        "external_id_claim",
        "Claim matched with SCIM externalId",
        Input::Text,
        "Okta: sub (the default). Azure AD: oid, when objectId is mapped to externalId.",
    ),
];

fn oidc_specs(kind: Kind) -> Vec<Spec> {
    let mut specs = match kind {
        Kind::Okta => vec![spec(
            "issuer",
            "Issuer",
            Input::Url,
            "https://{your Okta domain} for the org authorization server, or https://{domain}/oauth2/{id} for a custom one.",
        )],
        _ => vec![
            spec(
                "tenant",
                "Directory (tenant) ID",
                Input::Text,
                "A GUID, or organizations / common for a multi-tenant app.",
            ),
            spec(
                "allowed_tenant_ids",
                "Allowed tenant IDs",
                Input::Lines,
                "Multi-tenant apps only: the tenants whose users may sign in.",
            ),
            spec(
                "authority",
                "Authority",
                Input::Url,
                "Only for national clouds; default https://login.microsoftonline.com.",
            ),
        ],
    };
    specs.extend([
        spec("client_id", "Client ID", Input::Text, ""),
        spec(
            "client_secret",
            "Client secret",
            Input::Secret,
            "Write-only: leave empty to keep the saved one.",
        ),
        spec("scopes", "Scopes", Input::Lines, "Default: openid, email, profile."),
        spec("email_claim", "Email claim", Input::Text, "Default: email."),
        spec("groups_claim", "Groups claim", Input::Text, "Default: groups."),
    ]);
    specs.extend(ACCOUNT_FIELDS);
    specs
}

fn saml_specs() -> Vec<Spec> {
    let mut specs = vec![
        spec(
            "idp_metadata_url",
            "IdP metadata URL",
            Input::Url,
            "PingFederate: https://{host}:9031/pf/federation_metadata.ping?PartnerSpId={our entity id}. Or paste the XML below.",
        ),
        spec("idp_metadata_xml", "IdP metadata XML", Input::Area, "Instead of a URL."),
        spec(
            "idp_entity_id",
            "IdP entity ID",
            Input::Text,
            "Without metadata: the IdP's entity ID, SSO URL and certificate.",
        ),
        spec("idp_sso_url", "IdP single sign-on URL", Input::Url, ""),
        spec("idp_certificates", "IdP signing certificates", Input::Pems, "PEM; several for a rollover."),
        spec(
            "signed",
            "What the IdP signs",
            Input::Choice(&[
                ("assertion", "The assertion (Ping's default)"),
                ("response", "The response"),
                ("both", "Both"),
            ]),
            "",
        ),
        spec("sign_authn_requests", "Sign our requests", Input::Check, ""),
        spec(
            "allow_sha1",
            "Accept RSA-SHA1 signatures",
            Input::Check,
            "Never unless the IdP cannot do better.",
        ),
        spec("clock_skew_secs", "Clock skew allowed (seconds)", Input::Number, "Default: 120."),
        spec(
            "name_id_format",
            "NameID format",
            Input::Text,
            "Default: urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress.",
        ),
        spec(
            "email_attribute",
            "Email attribute",
            Input::Text,
            "Default: the NameID when it is an email, else email.",
        ),
        spec("first_name_attribute", "First name attribute", Input::Text, ""),
        spec("last_name_attribute", "Last name attribute", Input::Text, ""),
        spec("groups_attribute", "Groups attribute", Input::Text, "Default: groups."),
        spec("allow_idp_initiated", "Accept IdP-initiated sign-in", Input::Check, ""),
        spec(
            "allowed_relay_states",
            "Allowed RelayState addresses",
            Input::Lines,
            "Where an IdP-initiated sign-in may land.",
        ),
    ];
    specs.extend(ACCOUNT_FIELDS.iter().map(|s| {
        if s.name == "external_id_claim" {
            spec("external_id_attribute", "Attribute matched with SCIM externalId", Input::Text, "")
        } else {
            *s
        }
    }));
    specs
}

/// A stored connection's fields, as its form shows them.
fn stored_fields(kind: Kind, config: &str) -> Result<Vec<Field>, PageError> {
    let stored: Value = serde_json::from_str(config).map_err(ApiError::internal)?;
    Ok(fields::render(&specs_for(kind), &stored, None))
}

fn specs_for(kind: Kind) -> Vec<Spec> {
    match kind {
        Kind::Okta | Kind::AzureAd => oidc_specs(kind),
        Kind::Ping => saml_specs(),
    }
}

/// What the IdP's administrator copies from here.
fn copy_values(
    state: &AppState,
    kind: Kind,
    id: Option<&str>,
) -> (Vec<CopyValue>, Vec<(&'static str, String)>) {
    match (kind, id) {
        (Kind::Okta | Kind::AzureAd, _) => (
            vec![
                ("Sign-in redirect URI", crate::sso::callback_url(state).to_string(), "redirect-uri"),
                ("SCIM base URL", scim_base(state), "scim-base"),
            ],
            vec![],
        ),
        (Kind::Ping, Some(id)) => {
            let sp = crate::saml::endpoints(state, id);
            (
                vec![("ACS URL", sp.acs_url, "acs-url"), ("Entity ID", sp.entity_id.clone(), "entity-id")],
                vec![("Download our SP metadata", sp.entity_id)],
            )
        }
        (Kind::Ping, None) => (vec![], vec![]),
    }
}

struct Form {
    pairs: Vec<(String, String)>,
}

impl<'de> Deserialize<'de> for Form {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self { pairs: Vec::deserialize(d)? })
    }
}

impl Form {
    fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    fn action(&self) -> &str {
        self.get("action").unwrap_or("save")
    }
}

/// The form read into the API's JSON for `kind`, or the field at fault.
fn config_of(kind: Kind, form: &Form) -> Result<(Config, Value), (String, String)> {
    let mut map = fields::read(&specs_for(kind), &form.pairs).map_err(|(f, m)| (f.to_owned(), m))?;
    map.insert("kind".into(), Value::String(kind.as_str().into()));
    let json = Value::Object(map);
    let config = Config::parse(json.to_string().as_bytes()).map_err(field_error)?;
    Ok((config, json))
}

fn field_error(e: ApiError) -> (String, String) {
    match e {
        ApiError::Invalid { field: Some(field), message } => (field, message),
        other => (String::new(), describe(&other).2),
    }
}

fn check_view(check: &ConnectionCheck) -> TestView {
    let mut lines = vec![format!("Fetched: {}", check.discovery_url)];
    lines.extend(check.issuer.as_ref().map(|i| format!("Issuer: {i}")));
    lines.extend(check.authorization_endpoint.as_ref().map(|a| format!("Sign-in endpoint: {a}")));
    lines.push(format!("Signing keys: {}", check.keys.len()));
    TestView {
        ok: check.ok(),
        summary: match &check.error {
            None => "The IdP answered, and what it publishes checks out.".into(),
            Some(e) => format!("The IdP's configuration could not be used: {e}"),
        },
        lines,
    }
}

async fn new_connection_page(
    State(state): State<AppState>,
    axum::Extension(CsrfToken(csrf)): axum::Extension<CsrfToken>,
    portal: Portal,
    Path((org, kind)): Path<(OrgId, String)>,
) -> Result<Response, PageError> {
    let org = portal.org(&state, org).await?;
    let kind = kind_of_slug(&kind)?;
    if !org.enterprise_toolkit {
        return Err(PageError(configure::toolkit_required()));
    }
    let fields = fields::render(&specs_for(kind), &Value::Null, None);
    connection_form(&state, csrf, &portal, &org, kind, None, fields, None, Err(None))
}

#[allow(clippy::too_many_arguments)]
fn connection_form(
    state: &AppState,
    csrf: String,
    portal: &Portal,
    org: &Organization,
    kind: Kind,
    id: Option<&str>,
    fields: Vec<Field>,
    test: Option<TestView>,
    outcome: Result<String, Option<String>>,
) -> Result<Response, PageError> {
    let (copy, downloads) = copy_values(state, kind, id);
    let (notice, error) = match outcome {
        Ok(n) => (Some(n), None),
        Err(e) => (None, e),
    };
    let failed = error.is_some() || fields.iter().any(|f| f.error.is_some());
    let page = ConfigurePage {
        base: base(org.id),
        heading: format!("{} {}", kind.title(), if id.is_some() { "connection" } else { "— new connection" }),
        guide: Some(guide(kind)),
        action: match id {
            Some(id) => format!("{}/connections/{id}", base(org.id)),
            None => format!("{}/new/{}", base(org.id), kind.slug()),
        },
        fields,
        copy,
        downloads,
        placeholders: vec![],
        test,
        test_as: None,
        test_email: String::new(),
        can_delete: id.is_some(),
        delete_label: "Delete this connection",
        notice,
        error,
        chrome: Chrome::new(csrf, portal, Some(org)),
    };
    let status = if failed { axum::http::StatusCode::BAD_REQUEST } else { axum::http::StatusCode::OK };
    html_with_status(status, &page)
}

async fn new_connection_post(
    State(state): State<AppState>,
    axum::Extension(CsrfToken(csrf)): axum::Extension<CsrfToken>,
    portal: Portal,
    Path((org, kind)): Path<(OrgId, String)>,
    PageForm(form): PageForm<Form>,
) -> Result<Response, PageError> {
    let org = portal.org(&state, org).await?;
    let kind = kind_of_slug(&kind)?;
    save_connection(&state, csrf, &portal, &org, kind, None, &form).await
}

async fn connection_page(
    State(state): State<AppState>,
    axum::Extension(CsrfToken(csrf)): axum::Extension<CsrfToken>,
    portal: Portal,
    Path((org, id)): Path<(OrgId, String)>,
) -> Result<Response, PageError> {
    let org = portal.org(&state, org).await?;
    let record = configure::require_connection(&state, org.id, &id).await?;
    let connection = Connection::open(&state, record)?;
    let fields = stored_fields(connection.kind, &connection.record.config)?;
    connection_form(&state, csrf, &portal, &org, connection.kind, Some(&id), fields, None, Err(None))
}

async fn connection_post(
    State(state): State<AppState>,
    axum::Extension(CsrfToken(csrf)): axum::Extension<CsrfToken>,
    portal: Portal,
    Path((org, id)): Path<(OrgId, String)>,
    PageForm(form): PageForm<Form>,
) -> Result<Response, PageError> {
    let org = portal.org(&state, org).await?;
    let record = configure::require_connection(&state, org.id, &id).await?;
    let kind = Kind::parse(&record.kind)
        .ok_or_else(|| ApiError::internal("a stored connection of no known kind"))?;
    if form.action() == "delete" {
        if let Some((_, method)) = portal.own_user()
            && method == kind.method()
            && state.store().list_connections(org.id).await?.len() == 1
        {
            let fields = stored_fields(kind, &record.config)?;
            let why = "You signed in through this connection, and it is the only one: deleting it would lock you out. Use a setup link, or ask a platform admin.";
            return connection_form(
                &state,
                csrf,
                &portal,
                &org,
                kind,
                Some(&id),
                fields,
                None,
                Err(Some(why.into())),
            );
        }
        return match configure::delete_connection(&state, &portal.actor(), org.id, &id).await {
            Ok(()) => {
                render_overview(
                    &state,
                    csrf,
                    &portal,
                    &org,
                    Notice::Done(format!("The {} connection is deleted.", kind.title())),
                )
                .await
            }
            Err(e) => {
                let fields = stored_fields(kind, &record.config)?;
                connection_form(
                    &state,
                    csrf,
                    &portal,
                    &org,
                    kind,
                    Some(&id),
                    fields,
                    None,
                    Err(Some(describe(&e).2)),
                )
            }
        };
    }
    save_connection(&state, csrf, &portal, &org, kind, Some(&id), &form).await
}

/// Tests or saves a connection's form.
async fn save_connection(
    state: &AppState,
    csrf: String,
    portal: &Portal,
    org: &Organization,
    kind: Kind,
    id: Option<&str>,
    form: &Form,
) -> Result<Response, PageError> {
    let specs = specs_for(kind);
    // What was typed is shown again, secrets excepted.
    let typed = Value::Object(fields::read(&specs, &form.pairs).unwrap_or_default());
    let again =
        |error: Option<(&str, &str)>, test: Option<TestView>, outcome: Result<String, Option<String>>| {
            let fields = fields::render(&specs, &typed, error);
            connection_form(state, csrf.clone(), portal, org, kind, id, fields, test, outcome)
        };
    let (config, _) = match config_of(kind, form) {
        Ok(c) => c,
        Err((field, message)) if specs.iter().any(|s| s.name == field) => {
            return again(Some((&field, &message)), None, Err(None));
        }
        Err((_, message)) => return again(None, None, Err(Some(message))),
    };
    let must_check = portal.own_user().is_some_and(|(_, method)| method == kind.method());
    if form.action() == "test" || must_check {
        let check = match configure::check_config(state, &config).await {
            Ok(check) => check,
            Err(e) => {
                let (field, message) = field_error(e);
                return again(Some((&field, &message)), None, Err(Some(message.clone())));
            }
        };
        let ok = check.ok();
        let view = check_view(&check);
        if form.action() == "test" {
            return again(None, Some(view), Err(None));
        }
        if !ok {
            let why = "You signed in through single sign-on: this configuration must check out before it is saved, or you could be locked out.";
            return again(None, Some(view), Err(Some(why.into())));
        }
    }
    let saved = match id {
        Some(id) => configure::replace_connection(state, &portal.actor(), org.id, id, &config).await,
        None => configure::create_connection(state, &portal.actor(), org.id, &config).await,
    };
    match saved {
        Ok(record) => {
            let fields = stored_fields(kind, &record.config)?;
            connection_form(
                state,
                csrf.clone(),
                portal,
                org,
                kind,
                Some(&record.id),
                fields,
                None,
                Ok("Saved.".into()),
            )
        }
        Err(ApiError::Invalid { field: Some(field), message }) if specs.iter().any(|s| s.name == field) => {
            again(Some((&field, &message)), None, Err(None))
        }
        Err(e) => again(None, None, Err(Some(describe(&e).2))),
    }
}

// ---- REST ---------------------------------------------------------------------------------------

const REST_SPECS: [Spec; 9] = [
    spec(
        "authentication_url",
        "Authentication URL",
        Input::Url,
        "Placeholders work here, in the headers and in the body.",
    ),
    spec(
        "http_action",
        "HTTP Action",
        Input::Choice(&[("POST", "POST"), ("PUT", "PUT"), ("GET", "GET")]),
        "",
    ),
    spec(
        "data_as",
        "Data As",
        Input::Choice(&[("json", "JSON"), ("url_encoded", "URL-encoded"), ("xml", "XML")]),
        "How the body is sent (not for GET).",
    ),
    spec(
        "http_auth_type",
        "HTTP Auth Type",
        Input::Choice(&[("none", "None"), ("basic", "Basic (email and password)")]),
        "",
    ),
    spec(
        "headers",
        "Headers",
        Input::Headers,
        "One Name: value per line. Values are never shown again: a name with no value keeps the saved value.",
    ),
    spec("body", "Body", Input::Area, "Ignored for GET."),
    spec(
        "forgot_password_url",
        "Forgot Password URL",
        Input::Url,
        "Receives reset requests as a GET; every placeholder but the password.",
    ),
    spec("timeout_ms", "Timeout (milliseconds)", Input::Number, "Default: 10000."),
    spec(
        "allow_insecure_http",
        "Allow plain http (credentials cross the network unencrypted)",
        Input::Check,
        "",
    ),
];

async fn rest_page(
    State(state): State<AppState>,
    axum::Extension(CsrfToken(csrf)): axum::Extension<CsrfToken>,
    portal: Portal,
    Path(org): Path<OrgId>,
) -> Result<Response, PageError> {
    let org = portal.org(&state, org).await?;
    let saved = external_auth::load(&state, org.id).await?;
    let stored = match &saved {
        Some(auth) => serde_json::to_value(auth.config.without_secrets()).map_err(ApiError::internal)?,
        None => serde_json::json!({ "http_action": "POST", "data_as": "json" }),
    };
    let fields = fields::render(&REST_SPECS, &stored, None);
    rest_form(csrf, &portal, &org, "", fields, saved.is_some(), None, Err(None))
}

#[allow(clippy::too_many_arguments)]
fn rest_form(
    csrf: String,
    portal: &Portal,
    org: &Organization,
    test_email: &str,
    fields: Vec<Field>,
    saved: bool,
    test: Option<TestView>,
    outcome: Result<String, Option<String>>,
) -> Result<Response, PageError> {
    let (notice, error) = match outcome {
        Ok(n) => (Some(n), None),
        Err(e) => (None, e),
    };
    let failed = error.is_some() || fields.iter().any(|f| f.error.is_some());
    let page = ConfigurePage {
        base: base(org.id),
        heading: "REST web service".into(),
        guide: None,
        action: format!("{}/rest", base(org.id)),
        fields,
        copy: vec![],
        downloads: vec![],
        placeholders: Placeholder::ALL.iter().map(|p| format!("{{{{{}}}}}", p.name())).collect(),
        test,
        test_as: Some(portal.own_user().map(|(u, _)| u.handle().to_owned()).unwrap_or_default()),
        test_email: test_email.chars().take(254).collect(),
        can_delete: saved,
        delete_label: "Turn REST authentication off",
        notice,
        error,
        chrome: Chrome::new(csrf, portal, Some(org)),
    };
    let status = if failed { axum::http::StatusCode::BAD_REQUEST } else { axum::http::StatusCode::OK };
    html_with_status(status, &page)
}

fn test_view(result: &TestResult) -> TestView {
    let r = &result.request;
    let mut lines = vec![format!("{} {}", r.method, r.url)];
    lines.extend(r.headers.iter().map(|h| format!("{}: {}", h.name, h.value)));
    lines.extend(r.body.iter().map(|b| format!("\n{b}")));
    lines.extend(result.warnings.iter().map(|w| format!("Warning: {w}")));
    let summary = match (result.outcome, result.status, result.error) {
        ("authenticated", _, _) => format!(
            "Authenticated: the service answered 200 in {} ms.",
            result.elapsed_ms.unwrap_or_default()
        ),
        ("rejected", Some(status), _) => {
            format!("Refused: the service answered {status}; only 200 signs in.")
        }
        (_, _, Some(why)) => format!("No answer from the service ({}).", why.replace('_', " ")),
        _ => "No answer from the service.".into(),
    };
    TestView { ok: result.authenticated(), summary, lines }
}

async fn rest_post(
    State(state): State<AppState>,
    axum::Extension(CsrfToken(csrf)): axum::Extension<CsrfToken>,
    BrowserDevice(device): BrowserDevice,
    portal: Portal,
    Path(org): Path<OrgId>,
    PageForm(form): PageForm<Form>,
) -> Result<Response, PageError> {
    let org = portal.org(&state, org).await?;
    let saved = state.store().rest_auth(org.id).await?.is_some();
    let typed = Value::Object(fields::read(&REST_SPECS, &form.pairs).unwrap_or_default());
    let again =
        |error: Option<(&str, &str)>, test: Option<TestView>, outcome: Result<String, Option<String>>| {
            rest_form(
                csrf.clone(),
                &portal,
                &org,
                form.get("test_email").unwrap_or(""),
                fields::render(&REST_SPECS, &typed, error),
                saved,
                test,
                outcome,
            )
        };
    if form.action() == "delete" {
        if portal.own_user().is_some_and(|(_, method)| method == AuthMethod::ExternalRest) {
            return again(None, None, Err(Some("You signed in through the REST service: turning it off would lock you out (its users have no local password). Use a setup link, or ask a platform admin.".into())));
        }
        return match external_auth::disable(&state, &portal.actor(), org.id).await {
            Ok(()) => {
                render_overview(
                    &state,
                    csrf.clone(),
                    &portal,
                    &org,
                    Notice::Done("REST authentication is off.".into()),
                )
                .await
            }
            Err(e) => again(None, None, Err(Some(describe(&e).2))),
        };
    }
    let config: RestAuthConfig =
        match fields::read(&REST_SPECS, &form.pairs).map_err(|(f, m)| (f.to_owned(), m)).and_then(|map| {
            serde_json::from_value(Value::Object(map))
                .map_err(|e| (String::new(), format!("The configuration is not complete: {e}.")))
        }) {
            Ok(config) => config,
            Err((field, message)) if !field.is_empty() => {
                return again(Some((&field, &message)), None, Err(None));
            }
            Err((_, message)) => return again(None, None, Err(Some(message))),
        };
    let auth = match external_auth::prepare(&state, org.id, config.clone()).await {
        Ok(auth) => auth,
        Err(e) => {
            let (field, message) = field_error(e);
            return again(Some((&field, &message)), None, Err(Some(message.clone())).filter_field(&field));
        }
    };
    // An organization admin tests as themself; others name a user.
    let test_email = match portal.own_user() {
        Some((me, _)) => me.email.as_ref().map(|e| e.as_str().to_owned()).unwrap_or_default(),
        None => form.get("test_email").unwrap_or("").trim().to_owned(),
    };
    let test_password = form.get("test_password").unwrap_or("");
    // An organization admin must test before saving; anyone else who gives
    // a user's credentials gets the same: saved only if the test signs in.
    let must_test = portal.own_user().is_some() || !test_password.is_empty();
    let mut view = None;
    if form.action() == "test" || must_test {
        if test_email.is_empty() || test_password.is_empty() {
            let why = if must_test {
                "Saving sends your organization's sign-ins to this service: test it first with your own password at the service."
            } else {
                "To test, give the email of a registered user and their password at the service."
            };
            return again(None, None, Err(Some(why.into())));
        }
        let result = match external_auth::test(
            &state,
            org.id,
            &auth,
            &test_email,
            Password::new(test_password.to_owned()),
            &device,
        )
        .await
        {
            Ok(result) => result,
            Err(ApiError::NotFound(_)) => {
                return again(None, None, Err(Some("No user of this organization has that email.".into())));
            }
            Err(e) => return again(None, None, Err(Some(describe(&e).2))),
        };
        let tested = test_view(&result);
        let ok = tested.ok;
        if form.action() == "test" {
            return again(None, Some(tested), Err(None));
        }
        if !ok {
            let why = if portal.own_user().is_some() {
                "Not saved: the test with your own credentials did not sign in, so saving would lock you out."
            } else {
                "Not saved: the test did not sign in."
            };
            return again(None, Some(tested), Err(Some(why.into())));
        }
        view = Some(tested);
    }
    match external_auth::save(&state, &portal.actor(), org.id, config).await {
        Ok((auth, erased)) => {
            let stored = serde_json::to_value(auth.config.without_secrets()).map_err(ApiError::internal)?;
            let mut notice = "Saved: the organization's users now sign in through this service.".to_owned();
            if erased > 0 {
                notice.push_str(&format!(" {erased} local passwords were erased."));
            }
            rest_form(
                csrf.clone(),
                &portal,
                &org,
                form.get("test_email").unwrap_or(""),
                fields::render(&REST_SPECS, &stored, None),
                true,
                view,
                Ok(notice),
            )
        }
        Err(e) => {
            let (field, message) = field_error(e);
            again(Some((&field, &message)), None, Err(Some(message.clone())).filter_field(&field))
        }
    }
}

/// An error named beside its field is not repeated at the top.
trait FilterField {
    fn filter_field(self, field: &str) -> Self;
}

impl FilterField for Result<String, Option<String>> {
    fn filter_field(self, field: &str) -> Self {
        match self {
            Err(Some(_)) if REST_SPECS.iter().any(|s| s.name == field) => Err(None),
            other => other,
        }
    }
}

// ---- single sign-on policy and SCIM tokens ----------------------------------------------------

#[derive(Deserialize)]
struct PolicyForm {
    #[serde(default)]
    sso_required: Option<String>,
    #[serde(default)]
    redirect_urls: String,
}

async fn sso_policy_post(
    State(state): State<AppState>,
    axum::Extension(CsrfToken(csrf)): axum::Extension<CsrfToken>,
    portal: Portal,
    Path(org): Path<OrgId>,
    PageForm(form): PageForm<PolicyForm>,
) -> Result<Response, PageError> {
    let org = portal.org(&state, org).await?;
    let policy = SsoPolicy {
        sso_required: form.sso_required.is_some(),
        redirect_urls: form
            .redirect_urls
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
    };
    if policy.sso_required
        && let Some((_, method)) = portal.own_user()
        && !matches!(method, AuthMethod::Oidc | AuthMethod::Saml)
    {
        let why = "Only someone signed in through single sign-on can require it: sign in through your identity provider first, so we know it lets you in.";
        return render_overview(&state, csrf, &portal, &org, Notice::Failed(why.into())).await;
    }
    let saved = configure::set_sso_policy(&state, &portal.actor(), org.id, policy).await;
    let notice = Notice::after(saved.map(|_| "The sign-in policy is saved.".into()));
    render_overview(&state, csrf, &portal, &org, notice).await
}

#[derive(Deserialize)]
struct MintForm {
    label: String,
    idp: String,
}

async fn mint_scim_token(
    State(state): State<AppState>,
    axum::Extension(CsrfToken(csrf)): axum::Extension<CsrfToken>,
    portal: Portal,
    Path(org): Path<OrgId>,
    PageForm(form): PageForm<MintForm>,
) -> Result<Response, PageError> {
    let org = portal.org(&state, org).await?;
    let notice =
        match configure::mint_scim_token(&state, &portal.actor(), org.id, &form.label, &form.idp).await {
            Ok((_, token)) => Notice::Token(token),
            Err(e) => Notice::after(Err(e)),
        };
    render_overview(&state, csrf, &portal, &org, notice).await
}

async fn revoke_scim_token(
    State(state): State<AppState>,
    axum::Extension(CsrfToken(csrf)): axum::Extension<CsrfToken>,
    portal: Portal,
    Path((org, id)): Path<(OrgId, String)>,
    PageForm(_): PageForm<Empty>,
) -> Result<Response, PageError> {
    let org = portal.org(&state, org).await?;
    let revoked = configure::revoke_scim_token(&state, &portal.actor(), org.id, &id).await;
    let notice = Notice::after(revoked.map(|()| "The SCIM token is revoked.".into()));
    render_overview(&state, csrf, &portal, &org, notice).await
}
