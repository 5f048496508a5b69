//! The OpenAPI description, generated from the handlers' annotations.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{
    admin, connections, domains, external_auth, login, ops, portal_links, saml, scim, sso, well_known,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "Gatehouse", description = "Identity federation: every organization chooses how its users sign in."),
    paths(
        login::login, login::forgot_password, login::refresh, login::logout, login::end_browser_session, login::me,
        admin::create_org, admin::list_orgs, admin::get_org, admin::update_org, admin::delete_org,
        admin::create_user, admin::list_users, admin::get_user, admin::update_user, admin::delete_user,
        admin::list_audit_events, admin::list_platform_audit_events,
        domains::add_domain, domains::list_domains, domains::get_domain, domains::delete_domain,
        domains::verify_domain, domains::list_conflicts,
        portal_links::create_link, portal_links::list_links, portal_links::revoke_link,
        scim::create_token, scim::list_tokens, scim::revoke_token,
        connections::create_connection, connections::list_connections, connections::get_connection,
        connections::replace_connection, connections::delete_connection, connections::test_connection,
        connections::get_sso_policy, connections::put_sso_policy,
        sso::start, sso::callback, sso::token, saml::metadata, saml::acs,
        external_auth::put_rest, external_auth::get_rest, external_auth::delete_rest, external_auth::test_rest,
        well_known::jwks, well_known::openapi,
        ops::healthz, ops::readyz, ops::metrics,
    ),
    modifiers(&BearerSchemes),
)]
pub(crate) struct ApiDoc;

struct BearerSchemes;

impl Modify for BearerSchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components
            .add_security_scheme("admin_token", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        components
            .add_security_scheme("access_token", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}
