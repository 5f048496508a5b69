//! Domain types shared by every Gatehouse crate.
//!
//! This crate is the API boundary between the HTTP layer (`gatehouse`), storage
//! (`gatehouse-store`), token issuing (`gatehouse-session`) and the identity
//! provider connectors. It does no IO: everything here is plain data, the
//! [`Clock`] through which all "now" flows, and the connector traits.
//!
//! Connectors are split by *mechanism*, not by vendor, as Dex does it: a
//! [`PasswordConnector`] receives a user's credentials and answers yes or no.
//! A wrong password is a value ([`LoginOutcome::Rejected`]), never an error;
//! only an infrastructure failure is an `Err`.

mod clock;
mod connector;
mod hex;
mod model;

pub use clock::{Clock, ManualClock, SystemClock};
pub use connector::{ConnectorError, Device, LoginOutcome, PasswordAttempt, PasswordConnector, RejectReason};
pub use hex::{hex, push_hex};
pub use model::{
    AccountPolicy, AccountSettings, AuthMethod, Email, EmailDomains, EmailError, EmailIndexEntry,
    GroupsSource, IdpGroups, InvalidField, OrgId, Organization, Origin, Password, Role, SessionId, User,
    UserId,
};
