use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::{Result, Store, StoreError, from_millis, millis};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminTokenRecord {
    pub id: String,
    pub label: String,
    pub created_at: DateTime<Utc>,
}

impl Store {
    pub async fn create_admin_token(
        &self,
        label: &str,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<AdminTokenRecord> {
        let id = uuid::Uuid::now_v7().to_string();
        let _turn = self.write_turn().await;
        sqlx::query("INSERT INTO admin_tokens (id, label, token_hash, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&id)
            .bind(label)
            .bind(token_hash)
            .bind(millis(now))
            .execute(&self.pool)
            .await
            .map_err(StoreError::unique("an admin token with this hash"))?;
        Ok(AdminTokenRecord { id, label: label.to_owned(), created_at: from_millis(millis(now)) })
    }

    /// The live admin token with this hash, if any.
    pub async fn find_admin_token(&self, token_hash: &str) -> Result<Option<AdminTokenRecord>> {
        let row = sqlx::query(
            "SELECT id, label, created_at FROM admin_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(AdminTokenRecord {
                id: row.try_get("id")?,
                label: row.try_get("label")?,
                created_at: from_millis(row.try_get("created_at")?),
            })
        })
        .transpose()
    }

    pub async fn revoke_admin_token(&self, id: &str, now: DateTime<Utc>) -> Result<()> {
        let _turn = self.write_turn().await;
        let done =
            sqlx::query("UPDATE admin_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind(id)
                .bind(millis(now))
                .execute(&self.pool)
                .await?;
        crate::found(done)
    }
}
