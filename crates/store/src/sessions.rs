use chrono::{DateTime, Utc};
use gatehouse_core::{AuthMethod, Device, IdpGroups, OrgId, SessionId, User, UserId};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::inserts::Inserts;
use crate::{NewAuditEvent, Result, Store, StoreError, from_millis, millis, parse_id};

#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: SessionId,
    pub user_id: UserId,
    pub org_id: OrgId,
    pub auth_method: AuthMethod,
    pub device: Device,
    /// The absolute end of the session: refreshing never extends it.
    pub expires_at: DateTime<Utc>,
    /// What the identity provider asserted about groups, for single sign-on.
    pub idp_groups: Option<IdpGroups>,
    /// For a browser's session, the hash of the opaque token in its cookie.
    pub browser_token_hash: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: SessionId,
    pub user_id: UserId,
    pub org_id: OrgId,
    pub auth_method: AuthMethod,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub idp_groups: Option<IdpGroups>,
}

impl SessionRecord {
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at > now
    }
}

/// What presenting a refresh token led to.
#[derive(Debug)]
pub enum RefreshOutcome {
    /// The token was current: it is now spent and the new one stored.
    Rotated { session: SessionRecord, user: Box<User> },
    /// The token had already been rotated. Someone holds a copy, so the whole
    /// session has been revoked.
    Reused { session_id: SessionId },
    /// Unknown token, or a session that is revoked, expired, or whose user is
    /// inactive.
    Invalid,
}

fn session_from_row(row: &AnyRow) -> Result<SessionRecord> {
    let method: String = row.try_get("auth_method")?;
    Ok(SessionRecord {
        id: parse_id(&row.try_get::<String, _>("id")?)?,
        user_id: parse_id(&row.try_get::<String, _>("user_id")?)?,
        org_id: parse_id(&row.try_get::<String, _>("org_id")?)?,
        auth_method: AuthMethod::parse(&method)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown auth method {method:?}")))?,
        created_at: from_millis(row.try_get("created_at")?),
        expires_at: from_millis(row.try_get("expires_at")?),
        revoked_at: row.try_get::<Option<i64>, _>("revoked_at")?.map(from_millis),
        idp_groups: read_idp_groups(row.try_get("idp_groups")?)?,
    })
}

/// The stored form of [`IdpGroups`]: JSON text.
pub(crate) fn write_idp_groups(groups: Option<&IdpGroups>) -> Option<String> {
    groups.map(|g| serde_json::to_string(g).unwrap_or_default())
}

pub(crate) fn read_idp_groups(text: Option<String>) -> Result<Option<IdpGroups>> {
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(format!("a session's IdP groups: {e}")))
    })
    .transpose()
}

const COLUMNS: &str = "id, user_id, org_id, auth_method, created_at, expires_at, revoked_at, idp_groups";

impl Store {
    /// Stores a new session with its first refresh token and, when given, the
    /// audit event of the sign-in that opened it: one transaction, so neither
    /// exists without the other. (Concurrent calls share transactions; see
    /// `session_writer`.)
    pub async fn create_session(
        &self,
        new: &NewSession,
        refresh_hash: &str,
        audit: Option<&NewAuditEvent>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let row = SessionRow {
            session: new.clone(),
            refresh_hash: refresh_hash.to_owned(),
            audit: audit.cloned(),
            now,
        };
        crate::group_commit::submit(self, self.session_writer.as_ref(), row).await
    }

    /// Writes the sessions, their first refresh tokens and their sign-in
    /// events: three multi-row inserts, all or none, in one round trip.
    async fn write_sessions(&self, rows: &[&SessionRow]) -> Result<()> {
        let mut inserts = Inserts::default();
        let audits: Vec<(&NewAuditEvent, DateTime<Utc>)> =
            rows.iter().filter_map(|r| r.audit.as_ref().map(|a| (a, r.now))).collect();
        crate::audit::add_audit_events(&mut inserts, &audits)?;
        inserts.insert(
            "sessions (id, user_id, org_id, auth_method, device_os, device_name, device_ip, created_at, expires_at, \
             idp_groups, browser_token_hash)",
            11,
            rows.len(),
        );
        for r in rows {
            let new = &r.session;
            inserts
                .bind(new.id.to_string())?
                .bind(new.user_id.to_string())?
                .bind(new.org_id.to_string())?
                .bind(new.auth_method.as_str())?
                .bind(new.device.os.clone())?
                .bind(new.device.name.clone())?
                .bind(new.device.ip.map(|ip| ip.to_string()))?
                .bind(millis(r.now))?
                .bind(millis(new.expires_at))?
                .bind(write_idp_groups(new.idp_groups.as_ref()))?
                .bind(new.browser_token_hash.clone())?;
        }
        inserts.insert("refresh_tokens (token_hash, session_id, created_at)", 3, rows.len());
        for r in rows {
            inserts.bind(r.refresh_hash.clone())?.bind(r.session.id.to_string())?.bind(millis(r.now))?;
        }
        self.apply(inserts).await
    }

    /// The session whose browser token hashes to `hash`, with its user,
    /// live or not (the caller judges).
    pub async fn browser_session(&self, hash: &str) -> Result<Option<(SessionRecord, User)>> {
        let sql = format!("SELECT {COLUMNS} FROM sessions WHERE browser_token_hash = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(hash).fetch_optional(&self.pool).await?;
        let Some(row) = row else { return Ok(None) };
        let session = session_from_row(&row)?;
        let user = match self.get_user(session.user_id).await {
            Ok(user) => user,
            Err(StoreError::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some((session, user)))
    }

    pub async fn get_session(&self, id: SessionId) -> Result<SessionRecord> {
        let sql = format!("SELECT {COLUMNS} FROM sessions WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        session_from_row(&row)
    }

    /// Spends the refresh token `presented_hash` and stores `new_hash` in its
    /// place, in one transaction.
    ///
    /// The spend is a conditional update, so of two concurrent refreshes with
    /// the same token exactly one wins; the other is treated as reuse.
    pub async fn rotate_refresh_token(
        &self,
        presented_hash: &str,
        new_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<RefreshOutcome> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query("SELECT session_id, rotated_at FROM refresh_tokens WHERE token_hash = $1")
            .bind(presented_hash)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(RefreshOutcome::Invalid);
        };
        let session_id: SessionId = parse_id(&row.try_get::<String, _>("session_id")?)?;
        let already_rotated = row.try_get::<Option<i64>, _>("rotated_at")?.is_some();
        let session = {
            let sql = format!("SELECT {COLUMNS} FROM sessions WHERE id = $1");
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(session_id.to_string())
                .fetch_one(&mut *tx)
                .await?;
            session_from_row(&row)?
        };
        if !session.is_live(now) {
            return Ok(RefreshOutcome::Invalid);
        }
        let spent = if already_rotated {
            false
        } else {
            sqlx::query(
                "UPDATE refresh_tokens SET rotated_at = $2 WHERE token_hash = $1 AND rotated_at IS NULL",
            )
            .bind(presented_hash)
            .bind(millis(now))
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1
        };
        if !spent {
            revoke_session(&mut tx, session_id, "refresh token reused", now).await?;
            tx.commit().await?;
            return Ok(RefreshOutcome::Reused { session_id });
        }
        let user = crate::users::fetch_user(&mut tx, session.user_id).await?;
        if !user.active {
            return Ok(RefreshOutcome::Invalid);
        }
        insert_refresh(&mut tx, new_hash, session_id, now).await?;
        tx.commit().await?;
        Ok(RefreshOutcome::Rotated { session, user: Box::new(user) })
    }

    /// Ends the session the refresh token belongs to. Returns whether there
    /// was such a live session.
    pub async fn revoke_by_refresh_token(&self, hash: &str, now: DateTime<Utc>) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query("SELECT session_id FROM refresh_tokens WHERE token_hash = $1")
            .bind(hash)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(false);
        };
        let session_id: SessionId = parse_id(&row.try_get::<String, _>("session_id")?)?;
        let revoked = revoke_session(&mut tx, session_id, "logout", now).await?;
        tx.commit().await?;
        Ok(revoked)
    }
}

impl Store {
    /// Ends session `id` (a browser signing out). Returns whether it was
    /// live.
    pub async fn revoke_session(&self, id: SessionId, reason: &str, now: DateTime<Utc>) -> Result<bool> {
        let _turn = self.write_turn().await;
        let mut conn = self.pool.acquire().await?;
        revoke_session(&mut conn, id, reason, now).await
    }
}

async fn insert_refresh(
    conn: &mut AnyConnection,
    hash: &str,
    session: SessionId,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query("INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES ($1, $2, $3)")
        .bind(hash)
        .bind(session.to_string())
        .bind(millis(now))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn revoke_session(
    conn: &mut AnyConnection,
    id: SessionId,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE sessions SET revoked_at = $2, revoked_reason = $3 WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind(id.to_string())
    .bind(millis(now))
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub(crate) async fn revoke_user_sessions(
    conn: &mut AnyConnection,
    user: UserId,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<u64> {
    let done = sqlx::query(
        "UPDATE sessions SET revoked_at = $2, revoked_reason = $3 WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(user.to_string())
    .bind(millis(now))
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// Ends the live sessions of the organization's users that were signed in
/// by `method`.
pub(crate) async fn revoke_org_sessions_by_method(
    conn: &mut AnyConnection,
    org: OrgId,
    method: AuthMethod,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<u64> {
    let done = sqlx::query(
        "UPDATE sessions SET revoked_at = $3, revoked_reason = $4 \
         WHERE org_id = $1 AND auth_method = $2 AND revoked_at IS NULL",
    )
    .bind(org.to_string())
    .bind(method.as_str())
    .bind(millis(now))
    .bind(reason.to_owned())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// What one new session writes.
#[derive(Debug, Clone)]
pub(crate) struct SessionRow {
    session: NewSession,
    refresh_hash: String,
    audit: Option<NewAuditEvent>,
    now: DateTime<Utc>,
}

impl crate::group_commit::BatchRow for SessionRow {
    fn write<'a>(
        store: &'a Store,
        rows: &'a [&'a Self],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>> {
        Box::pin(store.write_sessions(rows))
    }
}
