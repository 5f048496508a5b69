use chrono::{DateTime, Utc};
use gatehouse_core::OrgId;

use crate::columns::Columns;
use crate::{Result, Store, StoreError, clamp_limit, from_millis, millis, parse_id};

/// A SCIM bearer token's record; the token itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimTokenRecord {
    pub id: String,
    pub org_id: OrgId,
    pub label: String,
    /// `okta`, `azure_ad` or `generic`.
    pub idp: String,
    pub created_at: DateTime<Utc>,
}

fn from_row<R: Columns + ?Sized>(row: &R) -> Result<ScimTokenRecord> {
    Ok(ScimTokenRecord {
        id: row.text("id")?,
        org_id: parse_id(&row.text("org_id")?)?,
        label: row.text("label")?,
        idp: row.text("idp")?,
        created_at: from_millis(row.int("created_at")?),
    })
}

/// A live token, and whether its organization has the Enterprise ToolKit.
fn live_token_from_row(row: &dyn Columns) -> Result<(ScimTokenRecord, bool)> {
    Ok((from_row(row)?, row.int("enterprise_toolkit")? != 0))
}

const LIVE_TOKEN: &str = "SELECT t.id, t.org_id, t.label, t.idp, t.created_at, o.enterprise_toolkit FROM scim_tokens t \
                          JOIN organizations o ON o.id = t.org_id WHERE t.token_hash = $1 AND t.revoked_at IS NULL";

impl Store {
    pub async fn create_scim_token(
        &self,
        org: OrgId,
        label: &str,
        idp: &str,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<ScimTokenRecord> {
        let id = uuid::Uuid::now_v7().to_string();
        let _turn = self.write_turn().await;
        sqlx::query(
            "INSERT INTO scim_tokens (id, org_id, label, idp, token_hash, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(org.to_string())
        .bind(label)
        .bind(idp)
        .bind(token_hash)
        .bind(millis(now))
        .execute(&self.pool)
        .await
        .map_err(StoreError::on_insert("a SCIM token with this hash"))?;
        Ok(ScimTokenRecord {
            id,
            org_id: org,
            label: label.into(),
            idp: idp.into(),
            created_at: from_millis(millis(now)),
        })
    }

    /// The live token with this hash, and whether its organization has the
    /// Enterprise ToolKit (one query: this runs on every SCIM request).
    pub async fn find_scim_token(&self, token_hash: &str) -> Result<Option<(ScimTokenRecord, bool)>> {
        self.optional_row(LIVE_TOKEN, &[token_hash], live_token_from_row).await
    }

    /// The organization's live tokens, oldest first.
    pub async fn list_scim_tokens(&self, org: OrgId, limit: u32) -> Result<Vec<ScimTokenRecord>> {
        let rows = sqlx::query(
            "SELECT id, org_id, label, idp, created_at FROM scim_tokens \
             WHERE org_id = $1 AND revoked_at IS NULL ORDER BY id LIMIT $2",
        )
        .bind(org.to_string())
        .bind(clamp_limit(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }

    pub async fn revoke_scim_token(&self, org: OrgId, id: &str, now: DateTime<Utc>) -> Result<()> {
        let _turn = self.write_turn().await;
        let done = sqlx::query(
            "UPDATE scim_tokens SET revoked_at = $3 WHERE id = $1 AND org_id = $2 AND revoked_at IS NULL",
        )
        .bind(id)
        .bind(org.to_string())
        .bind(millis(now))
        .execute(&self.pool)
        .await?;
        crate::found(done)
    }
}
