//! Rate limits and lockouts: brute force and abuse, held to configured
//! rates on every node at once (the counters are in the database, see
//! `gatehouse_store::throttles`).
//!
//! An attempt is keyed by its action and by the account it names and/or the
//! client address it comes from. Accounts are keyed by a hash of the
//! normalised email, registered or not, so that a lockout answers the same
//! for every address and no unknown address is stored; IPv6 clients by their
//! /64, which one subscriber usually holds whole.
//!
//! A blocked key answers 429 with `Retry-After` before any work is done. The
//! hit that trips a limit is an audit event (`rate_limit`); attempts refused
//! while it holds are only counted in metrics, so that an attacker cannot
//! fill the audit trail by hammering a blocked key.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use gatehouse_core::{Device, Email, OrgId, UserId};
use gatehouse_store::{HitOutcome, NewAuditEvent, ThrottleRule, ThrottleState};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::state::AppState;

/// What is being limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Failed password sign-ins (local or through the organization's REST
    /// service).
    Login,
    /// Password reset requests, whatever their outcome.
    ForgotPassword,
    /// Single sign-on starts (each stores a flow).
    SsoStart,
    /// SAML responses that were refused.
    SamlAcs,
    /// SCIM calls whose token was missing or unknown.
    ScimAuth,
}

impl Action {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::ForgotPassword => "forgot_password",
            Self::SsoStart => "sso_start",
            Self::SamlAcs => "saml_acs",
            Self::ScimAuth => "scim_auth",
        }
    }

    /// The per-account and per-address rules.
    fn rules(self, state: &AppState) -> (Option<ThrottleRule>, Option<ThrottleRule>) {
        let l = &state.settings().rate_limits;
        match self {
            Self::Login => (l.login_account, l.login_ip),
            Self::ForgotPassword => (l.forgot_password_account, l.forgot_password_ip),
            Self::SsoStart => (None, l.sso_start_ip),
            Self::SamlAcs => (None, l.saml_acs_ip),
            Self::ScimAuth => (None, l.scim_auth_ip),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Account,
    Address,
}

impl Scope {
    fn name(self) -> &'static str {
        match self {
            Self::Account => "account",
            Self::Address => "ip",
        }
    }
}

struct Key {
    scope: Scope,
    rule: ThrottleRule,
    key: String,
}

/// One attempt's keys.
pub(crate) struct Throttle {
    action: Action,
    keys: Vec<Key>,
}

/// What the keys said before the attempt.
#[derive(Debug, Default)]
pub(crate) struct Standing {
    /// The account has failures counted (a success should forget them).
    account_counting: bool,
}

/// Who a tripped limit concerns, for its audit event.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Concerning {
    pub(crate) org: Option<OrgId>,
    pub(crate) user: Option<UserId>,
}

/// What counting an attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tally {
    /// The first attempt counted from this address in its window (or no
    /// address was counted at all).
    First,
    /// Not the first from this address in its window.
    Repeat,
    /// This attempt tripped a limit, which lifts in this many seconds.
    Tripped { retry_after: u64 },
}

impl Throttle {
    pub(crate) fn new(state: &AppState, action: Action, account: Option<&Email>, ip: Option<IpAddr>) -> Self {
        let (account_rule, ip_rule) = action.rules(state);
        let mut keys = Vec::with_capacity(2);
        if let (Some(rule), Some(email)) = (account_rule, account) {
            keys.push(Key {
                scope: Scope::Account,
                rule,
                key: key(action, Scope::Account, email.normalized()),
            });
        }
        if let (Some(rule), Some(ip)) = (ip_rule, ip) {
            keys.push(Key { scope: Scope::Address, rule, key: key(action, Scope::Address, &address(ip)) });
        }
        Self { action, keys }
    }

    /// The keys to read (for a caller that reads them with other things).
    pub(crate) fn keys(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.key.as_str()).collect()
    }

    /// Refuses the attempt with 429 while any of its keys is blocked.
    pub(crate) async fn check(&self, state: &AppState) -> Result<Standing, ApiError> {
        if self.keys.is_empty() {
            return Ok(Standing::default());
        }
        let states = state.store().throttle_states(&self.keys()).await?;
        self.judge(state, &states)
    }

    /// What `states` (this attempt's keys, as read) say: 429 while any is
    /// blocked.
    pub(crate) fn judge(&self, state: &AppState, states: &[ThrottleState]) -> Result<Standing, ApiError> {
        let now = state.clock().now();
        if let Some(blocked) = states.iter().filter(|s| s.blocked_until > now).max_by_key(|s| s.blocked_until)
        {
            let scope = self.keys.iter().find(|k| k.key == blocked.key).map_or("ip", |k| k.scope.name());
            metrics::counter!("gatehouse_throttled_total", "action" => self.action.name(), "scope" => scope)
                .increment(1);
            return Err(ApiError::TooManyRequests { retry_after: seconds_until(blocked.blocked_until, now) });
        }
        let account_counting = self
            .keys
            .iter()
            .filter(|k| k.scope == Scope::Account)
            .any(|k| states.iter().any(|s| s.key == k.key && s.hits > 0));
        Ok(Standing { account_counting })
    }

    /// Counts the attempt against every key; a limit it trips is recorded as
    /// an audit event about `who`, from `device`.
    pub(crate) async fn count(
        &self,
        state: &AppState,
        who: Concerning,
        device: &Device,
    ) -> Result<Tally, ApiError> {
        let now = state.clock().now();
        let mut counted = Tally::First;
        for key in &self.keys {
            match state.store().throttle_hit(&key.key, key.rule, now).await? {
                HitOutcome::Tripped { until } => {
                    counted = Tally::Tripped { retry_after: seconds_until(until, now) };
                    let event = NewAuditEvent {
                        org_id: who.org.filter(|_| key.scope == Scope::Account),
                        user_id: who.user.filter(|_| key.scope == Scope::Account),
                        kind: "rate_limit",
                        method: None,
                        outcome: "applied",
                        detail: Some(serde_json::json!({
                            "action": self.action.name(),
                            "scope": key.scope.name(),
                            "limit": key.rule.limit,
                            "window_secs": key.rule.window.num_seconds(),
                            "until": until,
                        })),
                        device: device.clone(),
                        actor: None,
                    };
                    state.store().record_audit_event(&event, now).await?;
                    tracing::warn!(action = self.action.name(), scope = key.scope.name(), %until, "limit applied");
                }
                HitOutcome::Counted { hits } if !matches!(counted, Tally::Tripped { .. }) => {
                    if key.scope == Scope::Address && hits > 1 {
                        counted = Tally::Repeat;
                    }
                }
                HitOutcome::Counted { .. } => {}
            }
        }
        Ok(counted)
    }

    /// A success forgets the account's counted failures.
    pub(crate) async fn succeeded(&self, state: &AppState, standing: &Standing) -> Result<(), ApiError> {
        if standing.account_counting {
            for key in self.keys.iter().filter(|k| k.scope == Scope::Account) {
                state.store().throttle_reset(&key.key).await?;
            }
        }
        Ok(())
    }
}

/// The key for `value` (an email or an address), hashed so that the table
/// holds no address in plain. The keys are stored: a change to their form
/// would forget every counter (the tests pin it).
fn key(action: Action, scope: Scope, value: &str) -> String {
    let digest = Sha256::digest(value.as_bytes());
    // Written into one string: every sign-in makes two of these, and a
    // string per hex digit pair was 1% of a sign-in's CPU.
    let (action, scope) = (action.name(), scope.name());
    let mut key = String::with_capacity(action.len() + scope.len() + 2 + 32);
    key.push_str(action);
    key.push(':');
    key.push_str(scope);
    key.push(':');
    gatehouse_core::push_hex(&mut key, &digest[..16]);
    key
}

/// An IPv4 address as it is; an IPv6 address by its /64 (IPv4-mapped ones
/// as IPv4).
fn address(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// Whole seconds from `now` until `then`, at least one.
fn seconds_until(then: DateTime<Utc>, now: DateTime<Utc>) -> u64 {
    let ms = (then - now).num_milliseconds().max(0) as u64;
    ms.div_ceil(1000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_keyed_by_subscriber() {
        let a = |s: &str| address(s.parse().unwrap());
        assert_eq!(a("203.0.113.7"), "203.0.113.7");
        assert_eq!(a("::ffff:203.0.113.7"), "203.0.113.7");
        assert_eq!(a("2001:db8:1:2:3:4:5:6"), a("2001:db8:1:2:ffff::1"), "one /64");
        assert_ne!(a("2001:db8:1:2::1"), a("2001:db8:1:3::1"));
    }

    #[test]
    fn keys_hold_no_email_or_address_in_plain() {
        let k = key(Action::Login, Scope::Account, "alice@example.com");
        assert!(k.starts_with("login:account:") && !k.contains("alice"), "{k}");
        // The stored form: the first 16 bytes of the SHA-256, in hex.
        assert_eq!(k, "login:account:ff8d9819fc0e12bf0d24892e45987e24");
        assert_eq!(
            key(Action::ForgotPassword, Scope::Address, "203.0.113.7"),
            format!("forgot_password:ip:{}", &hex_sha256("203.0.113.7")[..32])
        );
        assert_ne!(k, key(Action::ForgotPassword, Scope::Account, "alice@example.com"), "per action");
    }

    fn hex_sha256(value: &str) -> String {
        Sha256::digest(value.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn retry_after_rounds_up() {
        let now = DateTime::<Utc>::UNIX_EPOCH;
        assert_eq!(seconds_until(now + chrono::Duration::milliseconds(1500), now), 2);
        assert_eq!(seconds_until(now, now), 1);
    }
}
