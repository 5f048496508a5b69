//! Single sign-on state: organization policies, flows in progress, native
//! apps' one-time codes, and identity links. Secrets arrive hashed or sealed;
//! the store interprets neither.

use chrono::{DateTime, Utc};
use gatehouse_core::{AuthMethod, IdpGroups, OrgId, User, UserId};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::inserts::Inserts;
use crate::read_then_write::ReadThenWrite;
use crate::users::{UserRow, insert_users};
use crate::{NewAuditEvent, NewUser, Result, Store, StoreError, millis, parse_id};

/// An organization's single sign-on policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SsoPolicy {
    /// Members sign in only through single sign-on; `/v1/login` refuses them.
    pub sso_required: bool,
    /// Where a sign-in may return the browser or the native app.
    pub redirect_urls: Vec<String>,
}

/// A flow taken back at its callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsoFlow {
    pub org_id: OrgId,
    pub connection_id: String,
    pub sealed: String,
}

/// A native app's code, taken back at the exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsoCode {
    pub user_id: UserId,
    pub code_challenge: String,
    pub method: AuthMethod,
    pub idp_groups: Option<IdpGroups>,
}

impl Store {
    /// The organization's policy; the default (nothing required, nowhere to
    /// return) when none was set.
    pub async fn sso_policy(&self, org: OrgId) -> Result<SsoPolicy> {
        let row = sqlx::query("SELECT sso_required, redirect_urls FROM sso_policies WHERE org_id = $1")
            .bind(org.to_string())
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(SsoPolicy::default()) };
        let urls: String = row.try_get("redirect_urls")?;
        Ok(SsoPolicy {
            sso_required: row.try_get::<i64, _>("sso_required")? != 0,
            redirect_urls: serde_json::from_str(&urls)
                .map_err(|e| StoreError::Corrupt(format!("redirect_urls: {e}")))?,
        })
    }

    /// Sets the organization's policy. `NotFound` for an unknown organization.
    pub async fn set_sso_policy(&self, org: OrgId, policy: &SsoPolicy, now: DateTime<Utc>) -> Result<()> {
        let urls =
            serde_json::to_string(&policy.redirect_urls).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let _turn = self.write_turn().await;
        sqlx::query(
            "INSERT INTO sso_policies (org_id, sso_required, redirect_urls, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (org_id) DO UPDATE SET sso_required = excluded.sso_required, \
             redirect_urls = excluded.redirect_urls, updated_at = excluded.updated_at",
        )
        .bind(org.to_string())
        .bind(i64::from(policy.sso_required))
        .bind(urls)
        .bind(millis(now))
        .execute(&self.pool)
        .await
        .map_err(StoreError::on_insert("an SSO policy"))?;
        Ok(())
    }

    /// Records a flow sent to the provider, and forgets flows that expired
    /// unfinished.
    pub async fn create_sso_flow(
        &self,
        state_hash: &str,
        flow: &SsoFlow,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let insert = sqlx::query(
            "INSERT INTO sso_flows (state_hash, org_id, connection_id, sealed, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(state_hash.to_owned())
        .bind(flow.org_id.to_string())
        .bind(flow.connection_id.clone())
        .bind(flow.sealed.clone())
        .bind(millis(expires_at));
        self.insert_expiring(
            "DELETE FROM sso_flows WHERE expires_at <= $1",
            insert,
            "a flow with this state",
            now,
        )
        .await
    }

    /// Takes the flow with this state: it is deleted whether or not it is
    /// still live, so a state works once. `None` when unknown or expired.
    pub async fn take_sso_flow(&self, state_hash: &str, now: DateTime<Utc>) -> Result<Option<SsoFlow>> {
        const SQL: &str =
            "DELETE FROM sso_flows WHERE state_hash = $1 RETURNING org_id, connection_id, sealed, expires_at";
        let Some(row) = self.take_live(SQL, state_hash, now).await? else { return Ok(None) };
        Ok(Some(SsoFlow {
            org_id: parse_id(&row.try_get::<String, _>("org_id")?)?,
            connection_id: row.try_get("connection_id")?,
            sealed: row.try_get("sealed")?,
        }))
    }

    /// Records a native app's one-time code, and forgets expired ones.
    pub async fn create_sso_code(
        &self,
        code_hash: &str,
        code: &SsoCode,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let insert = sqlx::query(
            "INSERT INTO sso_codes (code_hash, user_id, code_challenge, auth_method, expires_at, idp_groups) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(code_hash.to_owned())
        .bind(code.user_id.to_string())
        .bind(code.code_challenge.clone())
        .bind(code.method.as_str())
        .bind(millis(expires_at))
        .bind(crate::sessions::write_idp_groups(code.idp_groups.as_ref()));
        self.insert_expiring(
            "DELETE FROM sso_codes WHERE expires_at <= $1",
            insert,
            "a code with this hash",
            now,
        )
        .await
    }

    /// Takes a code: it works once, live or not. `None` when unknown or
    /// expired.
    pub async fn take_sso_code(&self, code_hash: &str, now: DateTime<Utc>) -> Result<Option<SsoCode>> {
        const SQL: &str = "DELETE FROM sso_codes WHERE code_hash = $1 \
                           RETURNING user_id, code_challenge, auth_method, expires_at, idp_groups";
        let Some(row) = self.take_live(SQL, code_hash, now).await? else { return Ok(None) };
        Ok(Some(SsoCode {
            user_id: parse_id(&row.try_get::<String, _>("user_id")?)?,
            code_challenge: row.try_get("code_challenge")?,
            method: AuthMethod::parse(&row.try_get::<String, _>("auth_method")?)
                .ok_or_else(|| StoreError::Corrupt("unknown auth_method".into()))?,
            idp_groups: crate::sessions::read_idp_groups(row.try_get("idp_groups")?)?,
        }))
    }

    /// Runs `insert` after `purge` (a delete of the table's rows expired at
    /// `$1`), in one transaction: short-lived rows clean up after
    /// themselves. A duplicate is a `Conflict` over `what`.
    async fn insert_expiring(
        &self,
        purge: &'static str,
        insert: sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments>,
        what: &'static str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(purge).bind(millis(now)).execute(&mut *tx).await?;
        insert.execute(&mut *tx).await.map_err(StoreError::on_insert(what))?;
        tx.commit().await?;
        Ok(())
    }

    /// Runs `sql`, a `DELETE … RETURNING …, expires_at` of one row by key,
    /// and returns the row if it was still live: a taken row is gone either
    /// way, so it works once.
    async fn take_live(&self, sql: &'static str, key: &str, now: DateTime<Utc>) -> Result<Option<AnyRow>> {
        let _turn = self.write_turn().await;
        let row = sqlx::query(sql).bind(key).fetch_optional(&self.pool).await?;
        match row {
            Some(row) if row.try_get::<i64, _>("expires_at")? > millis(now) => Ok(Some(row)),
            _ => Ok(None),
        }
    }

    /// Records that the assertion was used; `false` when it already was (a
    /// replay). Expired entries are forgotten on the way.
    pub async fn first_use_of_assertion(
        &self,
        connection_id: &str,
        assertion_id: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let insert = sqlx::query(
            "INSERT INTO saml_assertions_seen (connection_id, assertion_id, expires_at) VALUES ($1, $2, $3)",
        )
        .bind(connection_id.to_owned())
        .bind(assertion_id.to_owned())
        .bind(millis(expires_at));
        match self
            .insert_expiring(
                "DELETE FROM saml_assertions_seen WHERE expires_at <= $1",
                insert,
                "assertion",
                now,
            )
            .await
        {
            Ok(()) => Ok(true),
            Err(StoreError::Conflict(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The user linked to `subject` at this connection.
    pub async fn linked_user(&self, connection_id: &str, subject: &str) -> Result<Option<User>> {
        let row = sqlx::query("SELECT user_id FROM identity_links WHERE connection_id = $1 AND subject = $2")
            .bind(connection_id)
            .bind(subject)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let id: UserId = parse_id(&row.try_get::<String, _>("user_id")?)?;
        match self.get_user(id).await {
            Ok(user) => Ok(Some(user)),
            Err(StoreError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Links `subject` at this connection to an existing user. A subject
    /// already linked is a conflict.
    pub async fn link_identity(
        &self,
        connection_id: &str,
        subject: &str,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        insert_link(&mut tx, connection_id, subject, user, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Creates a user (first sign-in, just in time) and links `subject` to it,
    /// with `audit`, in one transaction: a user is never left unlinked.
    pub async fn create_linked_user(
        &self,
        new: &NewUser,
        connection_id: &str,
        subject: &str,
        audit: &NewAuditEvent,
        now: DateTime<Utc>,
    ) -> Result<User> {
        let id = UserId::new();
        let audit = NewAuditEvent { user_id: Some(id), ..audit.clone() };
        let row = UserRow::new(id, new.clone(), Some(audit), now);
        let tx = ReadThenWrite::begin(self, self.lease_to_write().await?).await?;
        let what = "a user with this email, or a link for this subject";
        insert_users(tx, &[&row], what, |inserts| add_link(inserts, connection_id, subject, id, now)).await?;
        self.get_user(id).await
    }
}

async fn insert_link(
    conn: &mut sqlx::AnyConnection,
    connection_id: &str,
    subject: &str,
    user: UserId,
    now: DateTime<Utc>,
) -> Result<()> {
    let mut inserts = Inserts::default();
    add_link(&mut inserts, connection_id, subject, user, now);
    inserts.execute_in(conn).await.map_err(StoreError::on_insert("a link for this subject"))
}

/// Declares the insert of a link from `subject` to `user`.
fn add_link(inserts: &mut Inserts, connection_id: &str, subject: &str, user: UserId, now: DateTime<Utc>) {
    inserts.insert("identity_links (connection_id, subject, user_id, created_at)", 4, 1);
    inserts.bind(connection_id.to_owned()).bind(subject.to_owned()).bind(user.to_string()).bind(millis(now));
}
