use chrono::{DateTime, Utc};
use gatehouse_session::{NewSigningKey, SigningAlgorithm, StoredKey};
use sqlx::Row;

use crate::{Result, Store, StoreError, from_millis, millis};

impl Store {
    /// Stores `key` as the signing key and retires the one before it, in one
    /// transaction.
    pub async fn add_signing_key(&self, key: &NewSigningKey, now: DateTime<Utc>) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL")
            .bind(millis(now))
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, alg, sealed_private_key, public_jwk, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&key.kid)
        .bind(key.alg.as_str())
        .bind(&key.sealed_private_key)
        .bind(&key.public_jwk)
        .bind(millis(now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Keys still in use, newest first: the current one, and retired ones
    /// whose tokens may not have expired yet (retired after `retired_after`).
    pub async fn published_signing_keys(&self, retired_after: DateTime<Utc>) -> Result<Vec<StoredKey>> {
        let rows = sqlx::query(
            "SELECT kid, alg, sealed_private_key, public_jwk, created_at, retired_at FROM signing_keys \
             WHERE retired_at IS NULL OR retired_at > $1 ORDER BY created_at DESC, kid DESC",
        )
        .bind(millis(retired_after))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let alg: String = row.try_get("alg")?;
                Ok(StoredKey {
                    kid: row.try_get("kid")?,
                    alg: SigningAlgorithm::parse(&alg)
                        .ok_or_else(|| StoreError::Corrupt(format!("unknown signing algorithm {alg:?}")))?,
                    sealed_private_key: row.try_get("sealed_private_key")?,
                    public_jwk: row.try_get("public_jwk")?,
                    created_at: from_millis(row.try_get("created_at")?),
                    retired_at: row.try_get::<Option<i64>, _>("retired_at")?.map(from_millis),
                })
            })
            .collect()
    }
}
