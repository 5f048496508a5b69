use chrono::{DateTime, Utc};
use gatehouse_core::{OrgId, Organization};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Result, Store, StoreError, clamp_limit, from_millis, millis, parse_id};

/// A partial update; `None` leaves a field as it is.
#[derive(Debug, Default, Clone)]
pub struct OrgUpdate {
    pub name: Option<String>,
    pub enterprise_toolkit: Option<bool>,
}

const COLUMNS: &str = "id, name, enterprise_toolkit, created_at, updated_at";

fn org_from_row(row: &AnyRow) -> Result<Organization> {
    Ok(Organization {
        id: parse_id(&row.try_get::<String, _>("id")?)?,
        name: row.try_get("name")?,
        enterprise_toolkit: row.try_get::<i64, _>("enterprise_toolkit")? != 0,
        created_at: from_millis(row.try_get("created_at")?),
        updated_at: from_millis(row.try_get("updated_at")?),
    })
}

impl Store {
    pub async fn create_org(
        &self,
        name: &str,
        enterprise_toolkit: bool,
        now: DateTime<Utc>,
    ) -> Result<Organization> {
        let org = Organization {
            id: OrgId::new(),
            name: name.to_owned(),
            enterprise_toolkit,
            created_at: now,
            updated_at: now,
        };
        let _turn = self.write_turn().await;
        sqlx::query("INSERT INTO organizations (id, name, enterprise_toolkit, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)")
            .bind(org.id.to_string())
            .bind(&org.name)
            .bind(i64::from(enterprise_toolkit))
            .bind(millis(now))
            .execute(&self.pool)
            .await?;
        // Read back so that the value returned is exactly what was stored
        // (timestamps at the store's millisecond precision).
        self.get_org(org.id).await
    }

    pub async fn get_org(&self, id: OrgId) -> Result<Organization> {
        let sql = format!("SELECT {COLUMNS} FROM organizations WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        org_from_row(&row)
    }

    /// Organizations in creation order, `limit` at a time, after the cursor.
    pub async fn list_orgs(&self, after: Option<OrgId>, limit: u32) -> Result<Vec<Organization>> {
        let sql = format!("SELECT {COLUMNS} FROM organizations WHERE id > $1 ORDER BY id LIMIT $2");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(after.map(|a| a.to_string()).unwrap_or_default())
            .bind(clamp_limit(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(org_from_row).collect()
    }

    pub async fn update_org(
        &self,
        id: OrgId,
        update: &OrgUpdate,
        now: DateTime<Utc>,
    ) -> Result<Organization> {
        let _turn = self.write_turn().await;
        let done = sqlx::query(
            "UPDATE organizations SET name = COALESCE($2, name), \
             enterprise_toolkit = COALESCE($3, enterprise_toolkit), updated_at = $4 WHERE id = $1",
        )
        .bind(id.to_string())
        .bind(update.name.clone())
        .bind(update.enterprise_toolkit.map(i64::from))
        .bind(millis(now))
        .execute(&self.pool)
        .await?;
        crate::found(done)?;
        self.get_org(id).await
    }

    /// Deletes the organization with its users, their sessions and refresh
    /// tokens (by cascade).
    pub async fn delete_org(&self, id: OrgId) -> Result<()> {
        let _turn = self.write_turn().await;
        let done = sqlx::query("DELETE FROM organizations WHERE id = $1")
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        crate::found(done)
    }
}
