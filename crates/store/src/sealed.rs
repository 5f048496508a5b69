//! Every value sealed with the master key, listed and replaced, for
//! re-sealing them under a new key (`gatehouse master-key rotate`).
//!
//! The store does not open them (it never sees a master key); it hands out
//! each sealed value with its row's key and swaps in a re-sealed one only if
//! the row still holds what was handed out, so a concurrent change is never
//! overwritten with a stale secret.

use sqlx::Row;

use crate::{Result, Store};

/// A column of sealed values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedColumn {
    /// Signing keys' private halves, by key id.
    SigningKeys,
    /// Organizations' REST configurations, by organization id.
    RestAuth,
    /// Connections' secrets (an OIDC client secret, a SAML SP key), by
    /// connection id.
    ConnectionSecrets,
    /// Single sign-on flows in progress, by state hash.
    SsoFlows,
}

impl SealedColumn {
    pub const ALL: [SealedColumn; 4] =
        [Self::SigningKeys, Self::RestAuth, Self::ConnectionSecrets, Self::SsoFlows];

    pub fn name(self) -> &'static str {
        match self {
            Self::SigningKeys => "signing keys",
            Self::RestAuth => "REST configurations",
            Self::ConnectionSecrets => "connection secrets",
            Self::SsoFlows => "sign-ins in progress",
        }
    }

    /// Table, key column, sealed column: fixed names, never input.
    fn sql(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Self::SigningKeys => ("signing_keys", "kid", "sealed_private_key"),
            Self::RestAuth => ("rest_auth_configs", "org_id", "config_sealed"),
            Self::ConnectionSecrets => ("connections", "id", "client_secret_sealed"),
            Self::SsoFlows => ("sso_flows", "state_hash", "sealed"),
        }
    }
}

impl Store {
    /// Every `(row key, sealed value)` of `column`.
    pub async fn sealed_values(&self, column: SealedColumn) -> Result<Vec<(String, String)>> {
        let (table, key, sealed) = column.sql();
        let sql = format!("SELECT {key} AS k, {sealed} AS s FROM {table} ORDER BY {key}");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((r.try_get("k")?, r.try_get("s")?))).collect()
    }

    /// Replaces row `key`'s sealed value with `new`, if it still is `old`.
    /// Returns whether it did.
    pub async fn replace_sealed(
        &self,
        column: SealedColumn,
        key: &str,
        old: &str,
        new: &str,
    ) -> Result<bool> {
        let (table, key_column, sealed) = column.sql();
        let sql = format!("UPDATE {table} SET {sealed} = $3 WHERE {key_column} = $1 AND {sealed} = $2");
        let _turn = self.write_turn().await;
        let done = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(key.to_owned())
            .bind(old.to_owned())
            .bind(new.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
