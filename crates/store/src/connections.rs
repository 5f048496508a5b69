use chrono::{DateTime, Utc};
use gatehouse_core::OrgId;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Result, Store, StoreError, from_millis, millis, parse_id};

/// A stored connection: its configuration as JSON text and its sealed
/// secret. The store does not interpret either.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRecord {
    pub id: String,
    pub org_id: OrgId,
    pub kind: String,
    pub config: String,
    pub client_secret_sealed: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, org_id, kind, config, client_secret_sealed, created_at, updated_at";

fn from_row(row: &AnyRow) -> Result<ConnectionRecord> {
    Ok(ConnectionRecord {
        id: row.try_get("id")?,
        org_id: parse_id(&row.try_get::<String, _>("org_id")?)?,
        kind: row.try_get("kind")?,
        config: row.try_get("config")?,
        client_secret_sealed: row.try_get("client_secret_sealed")?,
        created_at: from_millis(row.try_get("created_at")?),
        updated_at: from_millis(row.try_get("updated_at")?),
    })
}

impl Store {
    /// Stores a new connection; `id` is chosen by the caller, which seals the
    /// secret to it.
    pub async fn create_connection(&self, record: &ConnectionRecord) -> Result<()> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "INSERT INTO connections (id, org_id, kind, config, client_secret_sealed, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&record.id)
        .bind(record.org_id.to_string())
        .bind(&record.kind)
        .bind(&record.config)
        .bind(&record.client_secret_sealed)
        .bind(millis(record.created_at))
        .bind(millis(record.updated_at))
        .execute(&self.pool)
        .await
        .map_err(StoreError::on_insert("a connection with this id"))?;
        Ok(())
    }

    pub async fn get_connection(&self, org: OrgId, id: &str) -> Result<ConnectionRecord> {
        let sql = format!("SELECT {COLUMNS} FROM connections WHERE id = $1 AND org_id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(org.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        from_row(&row)
    }

    /// A connection by id alone (ids are unique across organizations), for
    /// sign-ins that name only the connection.
    pub async fn find_connection(&self, id: &str) -> Result<Option<ConnectionRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM connections WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(from_row).transpose()
    }

    /// The organization's connections, oldest first.
    pub async fn list_connections(&self, org: OrgId) -> Result<Vec<ConnectionRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM connections WHERE org_id = $1 ORDER BY id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(org.to_string()).fetch_all(&self.pool).await?;
        rows.iter().map(from_row).collect()
    }

    /// Replaces a connection's configuration and sealed secret.
    pub async fn update_connection(
        &self,
        org: OrgId,
        id: &str,
        config: &str,
        client_secret_sealed: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let _turn = self.write_turn().await;
        let done = sqlx::query(
            "UPDATE connections SET config = $3, client_secret_sealed = $4, updated_at = $5 WHERE id = $1 AND org_id = $2",
        )
        .bind(id)
        .bind(org.to_string())
        .bind(config)
        .bind(client_secret_sealed)
        .bind(millis(now))
        .execute(&self.pool)
        .await?;
        crate::found(done)
    }

    pub async fn delete_connection(&self, org: OrgId, id: &str) -> Result<()> {
        let _turn = self.write_turn().await;
        let done = sqlx::query("DELETE FROM connections WHERE id = $1 AND org_id = $2")
            .bind(id)
            .bind(org.to_string())
            .execute(&self.pool)
            .await?;
        crate::found(done)
    }

    /// Records how a sign-in through the connection ended, for its health
    /// at a glance: a success, or a failure and its reason.
    pub async fn record_connection_outcome(
        &self,
        id: &str,
        failure: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let (success_at, failure_at) = match failure {
            None => (Some(millis(now)), None),
            Some(_) => (None, Some(millis(now))),
        };
        let _turn = self.write_turn().await;
        sqlx::query(
            "INSERT INTO connection_health (connection_id, last_success_at, last_failure_at, last_failure_reason) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (connection_id) DO UPDATE SET \
               last_success_at = COALESCE(excluded.last_success_at, connection_health.last_success_at), \
               last_failure_at = COALESCE(excluded.last_failure_at, connection_health.last_failure_at), \
               last_failure_reason = CASE WHEN excluded.last_failure_at IS NULL \
                 THEN connection_health.last_failure_reason ELSE excluded.last_failure_reason END",
        )
        .bind(id)
        .bind(success_at)
        .bind(failure_at)
        .bind(failure)
        .execute(&self.pool)
        .await
        // A connection deleted meanwhile has no health to keep.
        .map_err(StoreError::on_insert("health"))
        .or_else(|e| if matches!(e, StoreError::NotFound) { Ok(Default::default()) } else { Err(e) })?;
        Ok(())
    }

    pub async fn connection_health(&self, id: &str) -> Result<ConnectionHealth> {
        let row = sqlx::query(
            "SELECT last_success_at, last_failure_at, last_failure_reason FROM connection_health WHERE connection_id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(ConnectionHealth::default()) };
        Ok(ConnectionHealth {
            last_success_at: row.try_get::<Option<i64>, _>("last_success_at")?.map(from_millis),
            last_failure_at: row.try_get::<Option<i64>, _>("last_failure_at")?.map(from_millis),
            last_failure_reason: row.try_get("last_failure_reason")?,
        })
    }
}

/// How sign-ins through a connection went lately.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionHealth {
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_failure_at: Option<DateTime<Utc>>,
    pub last_failure_reason: Option<String>,
}
