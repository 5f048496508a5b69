//! HTTP integration tests: one binary, one module per surface.
//!
//! Every test starts its own server on a loopback port with its own database
//! (see `support`), so tests share nothing and run in any order.

// Helpers are `pub` for the sibling modules; nothing here is a public API.
#![allow(unreachable_pub)]
// The servers under test run on a manual clock; the peers (identity
// providers) stamp their tokens with the wall clock, which the tests read
// to set it. Only the service is held to its Clock (clippy.toml).
#![allow(clippy::disallowed_methods)]

mod chrome;
mod dns_server;
mod peer;
mod proxy;
mod smtp;
mod stub;
mod support;

mod admin;
mod bad_input;
mod cli;
mod connections;
mod domains;
mod faults;
mod federation;
mod keys;
mod limits;
mod master_key;
mod multi_process;
mod oidc_provider;
mod ops;
mod page_input;
mod pages;
mod passthrough;
mod saml;
mod saml_idp;
mod scim;
mod sessions;
mod sso;
mod throttles;
