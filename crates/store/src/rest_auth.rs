use chrono::{DateTime, Utc};
use gatehouse_core::OrgId;
use sqlx::Row;

use crate::{Result, Store, StoreError, millis};

impl Store {
    /// Turns on (or replaces) the organization's REST authentication and, in
    /// the same transaction, erases every local password hash of its users:
    /// with external authentication on, the platform stores no passwords.
    /// Returns how many hashes were erased.
    pub async fn enable_rest_auth(&self, org: OrgId, config_sealed: &str, now: DateTime<Utc>) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let exists = sqlx::query("SELECT 1 FROM organizations WHERE id = $1")
            .bind(org.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound);
        }
        sqlx::query(
            "INSERT INTO rest_auth_configs (org_id, config_sealed, created_at, updated_at) VALUES ($1, $2, $3, $3) \
             ON CONFLICT (org_id) DO UPDATE SET config_sealed = excluded.config_sealed, updated_at = excluded.updated_at",
        )
        .bind(org.to_string())
        .bind(config_sealed)
        .bind(millis(now))
        .execute(&mut *tx)
        .await?;
        let erased = sqlx::query(
            "UPDATE users SET password_hash = NULL, updated_at = $2 WHERE org_id = $1 AND password_hash IS NOT NULL",
        )
        .bind(org.to_string())
        .bind(millis(now))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(erased)
    }

    /// The organization's sealed REST authentication configuration, if on.
    pub async fn rest_auth(&self, org: OrgId) -> Result<Option<String>> {
        let row = sqlx::query("SELECT config_sealed FROM rest_auth_configs WHERE org_id = $1")
            .bind(org.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("config_sealed")).transpose()?)
    }

    /// Turns REST authentication off. `NotFound` when it was not on.
    pub async fn disable_rest_auth(&self, org: OrgId) -> Result<()> {
        let _turn = self.write_turn().await;
        let done = sqlx::query("DELETE FROM rest_auth_configs WHERE org_id = $1")
            .bind(org.to_string())
            .execute(&self.pool)
            .await?;
        crate::found(done)
    }
}
