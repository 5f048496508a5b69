//! REST credential pass-through: an organization's own web service decides
//! whether its users' passwords are right.
//!
//! The admin configures a URL, headers and a body as `{{PLACEHOLDER}}`
//! templates ([`RestAuthConfig`]); [`RestAuthConfig::validate`] parses and
//! checks them once ([`RestAuth`]). On each sign-in the [`RestConnector`]
//! renders the request, escaping every value for where it lands, sends it
//! through the shared [`OutboundClient`], and reads only the status: exactly
//! 200 means yes.
//!
//! Architecture invariant: this crate sees no axum type and no storage; it is
//! handed a user, a password and a device, and answers with a verdict.

mod config;
mod connector;
mod escape;
#[cfg(test)]
mod fuzz;
mod template;

pub use config::{
    DataAs, HeaderTemplate, HttpAction, HttpAuthType, InvalidConfig, MAX_TIMEOUT_MS, MIN_TIMEOUT_MS,
    RestAuth, RestAuthConfig,
};
pub use connector::{Exchange, RestConnector, SentRequest};
pub use gatehouse_outbound::{OutboundClient, UpstreamError};
pub use template::{Placeholder, Template, TemplateError};
