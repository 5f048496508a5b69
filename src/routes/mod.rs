//! The HTTP surface, grouped by who calls it.
//!
//! ```text
//! /v1/login, /v1/token/refresh, /v1/logout, /v1/me      login.rs      apps and users
//! /admin/v1/orgs[/{org_id}[/users[/{user_id}]]]         admin.rs      platform admins
//! /admin/v1/audit-events, /admin/v1/orgs/{org_id}/audit-events  admin.rs
//! /admin/v1/orgs/{org_id}/domains[/{domain}[/verify]]   domains.rs
//! /admin/v1/domain-conflicts                            domains.rs
//! /admin/v1/orgs/{org_id}/external-auth/rest[/test]     external_auth.rs
//! /v1/password/forgot                                   login.rs
//! /admin/v1/orgs/{org_id}/scim-tokens[/{token_id}]       scim.rs
//! /admin/v1/orgs/{org_id}/connections[/{id}[/test]]    connections.rs
//! /admin/v1/orgs/{org_id}/sso                           connections.rs
//! /admin/v1/orgs/{org_id}/portal-links[/{id}]           portal_links.rs
//! /v1/sso/start, /v1/sso/oidc/callback, /v1/sso/token   sso.rs        browsers, native apps
//! /v1/sso/saml/{id}/metadata, /v1/sso/saml/{id}/acs     saml.rs       browsers via the IdP
//! /scim[/v2]/Users, /ServiceProviderConfig, …           scim.rs       Okta, Entra ID
//! /.well-known/jwks.json, /openapi.json                 well_known.rs anyone
//! /healthz, /readyz, /metrics                           ops.rs        operators
//! ```
//!
//! The web pages (`/login`, `/account`, `/admin`) are in `pages/`, beside
//! these and as thin.

pub(crate) mod admin;
pub(crate) mod connections;
pub(crate) mod domains;
pub(crate) mod external_auth;
pub(crate) mod login;
pub(crate) mod ops;
pub(crate) mod portal_links;
pub(crate) mod saml;
pub(crate) mod scim;
pub(crate) mod sso;
pub(crate) mod well_known;
