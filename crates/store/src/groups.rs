use chrono::{DateTime, Utc};
use gatehouse_core::{OrgId, UserId};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::{Backend, Result, Store, StoreError, from_millis, millis, parse_id};

/// A SCIM group with its members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: String,
    pub org_id: OrgId,
    pub display_name: String,
    pub external_id: Option<String>,
    /// The resource as the IdP last wrote it, without members (JSON).
    pub scim_resource: Option<String>,
    /// Members with their display names, in id order.
    pub members: Vec<(UserId, String)>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a group becomes: the whole of it (a create, a PUT, a patched group).
#[derive(Debug, Clone)]
pub struct GroupState {
    pub display_name: String,
    pub external_id: Option<String>,
    pub scim_resource: Option<String>,
    pub members: Vec<UserId>,
}

const COLUMNS: &str = "id, org_id, display_name, external_id, scim_resource, version, created_at, updated_at";

/// A group's own row, without members.
fn head(row: &AnyRow) -> Result<Group> {
    Ok(Group {
        id: row.try_get("id")?,
        org_id: parse_id(&row.try_get::<String, _>("org_id")?)?,
        display_name: row.try_get("display_name")?,
        external_id: row.try_get("external_id")?,
        scim_resource: row.try_get("scim_resource")?,
        members: Vec::new(),
        version: row.try_get("version")?,
        created_at: from_millis(row.try_get("created_at")?),
        updated_at: from_millis(row.try_get("updated_at")?),
    })
}

async fn load(conn: &mut AnyConnection, row: &AnyRow) -> Result<Group> {
    let id: String = row.try_get("id")?;
    let members = sqlx::query(
        "SELECT u.id, u.display_name FROM group_members m JOIN users u ON u.id = m.user_id \
         WHERE m.group_id = $1 ORDER BY u.id",
    )
    .bind(&id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| Ok((parse_id(&r.try_get::<String, _>("id")?)?, r.try_get("display_name")?)))
    .collect::<Result<Vec<_>>>()?;
    Ok(Group {
        org_id: parse_id(&row.try_get::<String, _>("org_id")?)?,
        display_name: row.try_get("display_name")?,
        external_id: row.try_get("external_id")?,
        scim_resource: row.try_get("scim_resource")?,
        members,
        version: row.try_get("version")?,
        created_at: from_millis(row.try_get("created_at")?),
        updated_at: from_millis(row.try_get("updated_at")?),
        id,
    })
}

/// Checks that every member is a user of `org`; a group never reaches into
/// another organization.
async fn check_members(conn: &mut AnyConnection, org: OrgId, members: &[UserId]) -> Result<()> {
    for m in members {
        let found = sqlx::query("SELECT 1 FROM users WHERE id = $1 AND org_id = $2")
            .bind(m.to_string())
            .bind(org.to_string())
            .fetch_optional(&mut *conn)
            .await?;
        if found.is_none() {
            return Err(StoreError::UnknownReference(m.to_string()));
        }
    }
    Ok(())
}

/// Makes the stored member set `members`, touching only what changed, so a
/// one-member change costs the same in a group of ten or ten thousand.
async fn write_members(
    conn: &mut AnyConnection,
    group: &str,
    current: &[UserId],
    members: &[UserId],
) -> Result<()> {
    use std::collections::BTreeSet;
    let before: BTreeSet<&UserId> = current.iter().collect();
    let after: BTreeSet<&UserId> = members.iter().collect();
    for gone in before.difference(&after) {
        sqlx::query("DELETE FROM group_members WHERE group_id = $1 AND user_id = $2")
            .bind(group)
            .bind(gone.to_string())
            .execute(&mut *conn)
            .await?;
    }
    for new in after.difference(&before) {
        sqlx::query("INSERT INTO group_members (group_id, user_id) VALUES ($1, $2)")
            .bind(group)
            .bind(new.to_string())
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

impl Store {
    pub async fn create_group(&self, org: OrgId, state: &GroupState, now: DateTime<Utc>) -> Result<Group> {
        let id = uuid::Uuid::now_v7().to_string();
        let mut tx = self.begin_write().await?;
        check_members(&mut tx, org, &state.members).await?;
        sqlx::query(
            "INSERT INTO scim_groups (id, org_id, display_name, display_name_normalized, external_id, scim_resource, \
             version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7)",
        )
        .bind(&id)
        .bind(org.to_string())
        .bind(&state.display_name)
        .bind(state.display_name.to_lowercase())
        .bind(state.external_id.clone())
        .bind(state.scim_resource.clone())
        .bind(millis(now))
        .execute(&mut *tx)
        .await
        .map_err(StoreError::unique("a group with this displayName"))?;
        write_members(&mut tx, &id, &[], &state.members).await?;
        let group = fetch(&mut tx, &id).await?;
        tx.commit().await?;
        Ok(group)
    }

    pub async fn get_group(&self, org: OrgId, id: &str) -> Result<Group> {
        let mut conn = self.pool.acquire().await?;
        let group = fetch(&mut conn, id).await?;
        if group.org_id != org {
            return Err(StoreError::NotFound);
        }
        Ok(group)
    }

    /// The organization's group with this display name, whatever its case
    /// (one probe of the unique index).
    pub async fn find_group_by_display_name(&self, org: OrgId, name: &str) -> Result<Option<Group>> {
        let mut conn = self.pool.acquire().await?;
        let sql =
            format!("SELECT {COLUMNS} FROM scim_groups WHERE org_id = $1 AND display_name_normalized = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(org.to_string())
            .bind(name.to_lowercase())
            .fetch_optional(&mut *conn)
            .await?;
        match row {
            Some(row) => Ok(Some(load(&mut conn, &row).await?)),
            None => Ok(None),
        }
    }

    /// Every group of the organization, in id (creation) order.
    pub async fn list_groups(&self, org: OrgId) -> Result<Vec<Group>> {
        let mut conn = self.pool.acquire().await?;
        let sql = format!("SELECT {COLUMNS} FROM scim_groups WHERE org_id = $1 ORDER BY id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(org.to_string()).fetch_all(&mut *conn).await?;
        let mut groups = Vec::with_capacity(rows.len());
        for row in &rows {
            groups.push(load(&mut conn, row).await?);
        }
        Ok(groups)
    }

    /// Reads the group, lets `change` decide its new state, and stores it, all
    /// in one transaction with the group locked: concurrent changes to one
    /// group are applied one after another, and none is lost.
    pub async fn modify_group<E: From<StoreError>>(
        &self,
        org: OrgId,
        id: &str,
        now: DateTime<Utc>,
        change: impl FnOnce(&Group) -> std::result::Result<GroupState, E>,
    ) -> std::result::Result<Group, E> {
        let mut tx = self.begin_write().await?;
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        };
        let sql = format!("SELECT {COLUMNS} FROM scim_groups WHERE id = $1 AND org_id = $2{lock}");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(org.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::from)?
            .ok_or(StoreError::NotFound)?;
        let current = load(&mut tx, &row).await?;
        let next = change(&current)?;
        // Members already in the group were checked when they joined (and a
        // deleted user leaves by cascade); only newcomers need checking.
        let newcomers: Vec<UserId> =
            next.members.iter().filter(|m| !current.members.iter().any(|(c, _)| c == *m)).copied().collect();
        check_members(&mut tx, org, &newcomers).await?;
        sqlx::query(
            "UPDATE scim_groups SET display_name = $2, display_name_normalized = $3, external_id = $4, \
             scim_resource = $5, version = version + 1, updated_at = $6 WHERE id = $1",
        )
        .bind(id)
        .bind(&next.display_name)
        .bind(next.display_name.to_lowercase())
        .bind(next.external_id.clone())
        .bind(next.scim_resource.clone())
        .bind(millis(now))
        .execute(&mut *tx)
        .await
        .map_err(StoreError::unique("a group with this displayName"))?;
        let current_members: Vec<UserId> = current.members.iter().map(|(m, _)| *m).collect();
        write_members(&mut tx, id, &current_members, &next.members).await?;
        let group = fetch(&mut tx, id).await?;
        tx.commit().await?;
        Ok(group)
    }

    /// The group without its members, for readers that leave them out (the
    /// members of a large group are most of its cost). Its `members` is
    /// empty.
    pub async fn get_group_head(&self, org: OrgId, id: &str) -> Result<Group> {
        let sql = format!("SELECT {COLUMNS} FROM scim_groups WHERE id = $1 AND org_id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(org.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        head(&row)
    }

    /// Every group of the organization without members, in id order.
    pub async fn list_group_heads(&self, org: OrgId) -> Result<Vec<Group>> {
        let sql = format!("SELECT {COLUMNS} FROM scim_groups WHERE org_id = $1 ORDER BY id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(org.to_string()).fetch_all(&self.pool).await?;
        rows.iter().map(head).collect()
    }

    /// Adds and removes members without reading the others: the cost of a
    /// change is that of the members it names, whatever the group's size.
    /// Adding a member already there, or removing one who is not, changes
    /// nothing. With `expected_version`, only that version is changed
    /// (`VersionMismatch` otherwise). Returns the group without members.
    pub async fn change_group_members(
        &self,
        org: OrgId,
        id: &str,
        add: &[UserId],
        remove: &[UserId],
        expected_version: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<Group> {
        let mut tx = self.begin_write().await?;
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        };
        let sql = format!("SELECT {COLUMNS} FROM scim_groups WHERE id = $1 AND org_id = $2{lock}");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(org.to_string())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let current = head(&row)?;
        if expected_version.is_some_and(|v| v != current.version) {
            return Err(StoreError::VersionMismatch);
        }
        check_members(&mut tx, org, add).await?;
        for member in remove {
            sqlx::query("DELETE FROM group_members WHERE group_id = $1 AND user_id = $2")
                .bind(id)
                .bind(member.to_string())
                .execute(&mut *tx)
                .await?;
        }
        for member in add {
            sqlx::query(
                "INSERT INTO group_members (group_id, user_id) VALUES ($1, $2) ON CONFLICT (group_id, user_id) DO NOTHING",
            )
            .bind(id)
            .bind(member.to_string())
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE scim_groups SET version = version + 1, updated_at = $2 WHERE id = $1")
            .bind(id)
            .bind(millis(now))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Group { version: current.version + 1, updated_at: now, ..current })
    }

    pub async fn delete_group(&self, org: OrgId, id: &str) -> Result<()> {
        let _turn = self.write_turn().await;
        let done = sqlx::query("DELETE FROM scim_groups WHERE id = $1 AND org_id = $2")
            .bind(id)
            .bind(org.to_string())
            .execute(&self.pool)
            .await?;
        crate::found(done)
    }

    /// The display names of the user's groups, sorted: the `groups` claim.
    pub async fn group_names_of(&self, user: UserId) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT g.display_name FROM group_members m JOIN scim_groups g ON g.id = m.group_id \
             WHERE m.user_id = $1 ORDER BY g.display_name",
        )
        .bind(user.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("display_name")?)).collect()
    }
}

async fn fetch(conn: &mut AnyConnection, id: &str) -> Result<Group> {
    let sql = format!("SELECT {COLUMNS} FROM scim_groups WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound)?;
    load(conn, &row).await
}
