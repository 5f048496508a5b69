//! What the web portal keeps: the sessions of people who are not an
//! organization's users (platform admins, customers' IT admins who followed
//! a setup link), setup links, and password reset links. Every token is
//! stored as its hash.

use chrono::{DateTime, Utc};
use gatehouse_core::{OrgId, UserId};
use sqlx::Row;

use crate::{Result, Store, StoreError, from_millis, millis, parse_id};

/// A portal session that is not a user's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalSession {
    /// The organization it may manage; `None` for every organization.
    pub org_id: Option<OrgId>,
    /// Who acts through it, as the audit trail names them.
    pub actor: String,
    pub expires_at: DateTime<Utc>,
}

/// A setup link, without its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalLink {
    pub id: String,
    pub org_id: OrgId,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl Store {
    pub async fn create_portal_session(
        &self,
        token_hash: &str,
        session: &PortalSession,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let _turn = self.write_turn().await;
        // Expired sessions are forgotten as new ones are made.
        sqlx::query("DELETE FROM portal_sessions WHERE expires_at <= $1")
            .bind(millis(now))
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO portal_sessions (token_hash, org_id, actor, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash)
        .bind(session.org_id.map(|o| o.to_string()))
        .bind(&session.actor)
        .bind(millis(now))
        .bind(millis(session.expires_at))
        .execute(&self.pool)
        .await
        .map_err(StoreError::on_insert("a portal session with this token"))?;
        Ok(())
    }

    /// The live portal session with this token hash.
    pub async fn portal_session(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<PortalSession>> {
        let row = sqlx::query(
            "SELECT org_id, actor, expires_at FROM portal_sessions \
             WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > $2",
        )
        .bind(token_hash)
        .bind(millis(now))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(PortalSession {
                org_id: row.try_get::<Option<String>, _>("org_id")?.as_deref().map(parse_id).transpose()?,
                actor: row.try_get("actor")?,
                expires_at: from_millis(row.try_get("expires_at")?),
            })
        })
        .transpose()
    }

    pub async fn end_portal_session(&self, token_hash: &str, now: DateTime<Utc>) -> Result<()> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "UPDATE portal_sessions SET revoked_at = $2 WHERE token_hash = $1 AND revoked_at IS NULL",
        )
        .bind(token_hash)
        .bind(millis(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn create_portal_link(&self, link: &PortalLink, token_hash: &str) -> Result<()> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "INSERT INTO portal_links (id, org_id, token_hash, created_by, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&link.id)
        .bind(link.org_id.to_string())
        .bind(token_hash)
        .bind(&link.created_by)
        .bind(millis(link.created_at))
        .bind(millis(link.expires_at))
        .execute(&self.pool)
        .await
        .map_err(StoreError::on_insert("a setup link with this token"))?;
        Ok(())
    }

    /// The live setup link with this token hash.
    pub async fn portal_link(&self, token_hash: &str, now: DateTime<Utc>) -> Result<Option<PortalLink>> {
        let row = sqlx::query(
            "SELECT id, org_id, created_by, created_at, expires_at, revoked_at FROM portal_links \
             WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > $2",
        )
        .bind(token_hash)
        .bind(millis(now))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(link_from_row).transpose()
    }

    /// The organization's setup links, newest first.
    pub async fn list_portal_links(&self, org: OrgId) -> Result<Vec<PortalLink>> {
        let rows = sqlx::query(
            "SELECT id, org_id, created_by, created_at, expires_at, revoked_at FROM portal_links \
             WHERE org_id = $1 ORDER BY id DESC LIMIT 200",
        )
        .bind(org.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(link_from_row).collect()
    }

    /// Revokes a setup link, and ends the portal sessions it opened (their
    /// actor names it).
    pub async fn revoke_portal_link(
        &self,
        org: OrgId,
        id: &str,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE portal_links SET revoked_at = $3 WHERE id = $1 AND org_id = $2 AND revoked_at IS NULL",
        )
        .bind(id)
        .bind(org.to_string())
        .bind(millis(now))
        .execute(&mut *tx)
        .await?;
        crate::found(done)?;
        sqlx::query("UPDATE portal_sessions SET revoked_at = $2 WHERE actor = $1 AND revoked_at IS NULL")
            .bind(actor)
            .bind(millis(now))
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// Records a password reset link for `user`, and forgets the user's
    /// earlier ones: only the newest link works.
    pub async fn create_password_reset(
        &self,
        user: UserId,
        token_hash: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM password_resets WHERE user_id = $1 OR expires_at <= $2")
            .bind(user.to_string())
            .bind(millis(now))
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO password_resets (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(token_hash)
        .bind(user.to_string())
        .bind(millis(now))
        .bind(millis(expires_at))
        .execute(&mut *tx)
        .await
        .map_err(StoreError::on_insert("a reset link with this token"))?;
        tx.commit().await
    }

    /// The user a live, unused reset link is for.
    pub async fn password_reset_user(&self, token_hash: &str, now: DateTime<Utc>) -> Result<Option<UserId>> {
        let row = sqlx::query(
            "SELECT user_id FROM password_resets WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
        )
        .bind(token_hash)
        .bind(millis(now))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| parse_id(&r.try_get::<String, _>("user_id")?)).transpose()
    }

    /// Spends a reset link and sets the user's new password hash, in one
    /// transaction; the user's sessions end with it. `None` when the link
    /// was not live (expired, used, or never issued).
    pub async fn spend_password_reset(
        &self,
        token_hash: &str,
        password_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<UserId>> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "UPDATE password_resets SET used_at = $2 \
             WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 RETURNING user_id",
        )
        .bind(token_hash)
        .bind(millis(now))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let user: UserId = parse_id(&row.try_get::<String, _>("user_id")?)?;
        sqlx::query(
            "UPDATE users SET password_hash = $2, updated_at = $3, version = version + 1 WHERE id = $1",
        )
        .bind(user.to_string())
        .bind(password_hash)
        .bind(millis(now))
        .execute(&mut *tx)
        .await?;
        crate::sessions::revoke_user_sessions(&mut tx, user, "password reset", now).await?;
        tx.commit().await?;
        Ok(Some(user))
    }

    /// When each of these users last signed in (their newest session).
    pub async fn last_sign_ins(&self, users: &[UserId]) -> Result<Vec<(UserId, DateTime<Utc>)>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT user_id, MAX(created_at) AS at FROM sessions WHERE user_id IN {} GROUP BY user_id",
            crate::in_json_strings(self.backend, 1)
        );
        let ids: Vec<String> = users.iter().map(UserId::to_string).collect();
        let query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(crate::json_strings(&ids));
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| Ok((parse_id(&r.try_get::<String, _>("user_id")?)?, from_millis(r.try_get("at")?))))
            .collect()
    }
}

fn link_from_row(row: &sqlx::any::AnyRow) -> Result<PortalLink> {
    Ok(PortalLink {
        id: row.try_get("id")?,
        org_id: parse_id(&row.try_get::<String, _>("org_id")?)?,
        created_by: row.try_get("created_by")?,
        created_at: from_millis(row.try_get("created_at")?),
        expires_at: from_millis(row.try_get("expires_at")?),
        revoked_at: row.try_get::<Option<i64>, _>("revoked_at")?.map(from_millis),
    })
}
