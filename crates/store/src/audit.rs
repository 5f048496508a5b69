use chrono::{DateTime, Utc};
use gatehouse_core::{Device, OrgId, UserId};
use sqlx::{AnyConnection, Row};

use crate::inserts::{Inserts, Value};
use crate::{Result, Store, clamp_limit, from_millis, millis, parse_id};

/// An audit event as recorded. `detail` is free-form JSON text chosen by the
/// caller; it must never hold a secret.
#[derive(Debug, Clone)]
pub struct NewAuditEvent {
    pub org_id: Option<OrgId>,
    pub user_id: Option<UserId>,
    pub kind: &'static str,
    pub method: Option<&'static str>,
    pub outcome: &'static str,
    pub detail: Option<serde_json::Value>,
    pub device: Device,
    /// Who made the change, when a person or token did (`admin:…`).
    pub actor: Option<String>,
}

impl NewAuditEvent {
    /// A successful change to an organization's set-up or directory, made
    /// by an admin or an IdP (no device is involved).
    pub fn change(
        org: OrgId,
        kind: &'static str,
        method: Option<&'static str>,
        detail: serde_json::Value,
    ) -> Self {
        Self {
            org_id: Some(org),
            user_id: None,
            kind,
            method,
            outcome: "success",
            detail: Some(detail),
            device: Device::default(),
            actor: None,
        }
    }

    /// The same event, made by `actor`.
    pub fn by(self, actor: String) -> Self {
        Self { actor: Some(actor), ..self }
    }

    /// The same event, about `user`.
    pub fn for_user(self, user: Option<UserId>) -> Self {
        Self { user_id: user, ..self }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    pub id: String,
    pub org_id: Option<OrgId>,
    pub user_id: Option<UserId>,
    pub kind: String,
    pub method: Option<String>,
    pub outcome: String,
    pub detail: Option<serde_json::Value>,
    pub device_os: Option<String>,
    pub device_name: Option<String>,
    pub device_ip: Option<String>,
    pub actor: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    /// Pass as `before` for the next (older) page.
    pub next: Option<String>,
}

impl Store {
    pub async fn record_audit_event(&self, event: &NewAuditEvent, now: DateTime<Utc>) -> Result<()> {
        let _turn = self.write_turn().await;
        let mut conn = self.pool.acquire().await?;
        insert_audit_event(&mut conn, event, now).await
    }

    /// Events matching `filter`, newest first, `limit` at a time, older than
    /// the `before` cursor.
    pub async fn list_audit_events(
        &self,
        filter: &AuditFilter,
        before: Option<&str>,
        limit: u32,
    ) -> Result<AuditPage> {
        let limit = clamp_limit(limit);
        let (sql, params) = list_sql(filter, before);
        let query = sqlx::query(sqlx::AssertSqlSafe(sql));
        let query = params.into_iter().fold(query, |query, param| param.bind_to(query));
        let rows = query.bind(limit + 1).fetch_all(&self.pool).await?;
        let mut events = rows
            .iter()
            .map(|row| {
                Ok(AuditEvent {
                    id: row.try_get("id")?,
                    org_id: row
                        .try_get::<Option<String>, _>("org_id")?
                        .as_deref()
                        .map(parse_id)
                        .transpose()?,
                    user_id: row
                        .try_get::<Option<String>, _>("user_id")?
                        .as_deref()
                        .map(parse_id)
                        .transpose()?,
                    kind: row.try_get("kind")?,
                    method: row.try_get("method")?,
                    outcome: row.try_get("outcome")?,
                    detail: row
                        .try_get::<Option<String>, _>("detail")?
                        .and_then(|d| serde_json::from_str(&d).ok()),
                    device_os: row.try_get("device_os")?,
                    device_name: row.try_get("device_name")?,
                    device_ip: row.try_get("device_ip")?,
                    actor: row.try_get("actor")?,
                    created_at: from_millis(row.try_get("created_at")?),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let next = if events.len() as i64 > limit {
            events.truncate(limit as usize);
            events.last().map(|e| e.id.clone())
        } else {
            None
        };
        Ok(AuditPage { events, next })
    }

    /// Deletes events recorded before `cutoff`, a bounded batch at a time so
    /// that a first prune of a long history does not hold the database;
    /// returns how many went.
    pub async fn prune_audit_events(&self, cutoff: DateTime<Utc>) -> Result<u64> {
        let mut total = 0;
        loop {
            let _turn = self.write_turn().await;
            let done = sqlx::query(
                "DELETE FROM audit_events WHERE id IN \
                   (SELECT id FROM audit_events WHERE created_at < $1 ORDER BY created_at LIMIT 5000)",
            )
            .bind(millis(cutoff))
            .execute(&self.pool)
            .await?;
            total += done.rows_affected();
            if done.rows_affected() < 5000 {
                return Ok(total);
            }
        }
    }
}

/// The statement that lists the events `filter` and the `before` cursor
/// select, with its parameters in order, the page's limit last (not
/// included). Only the conditions that are given are written: one written
/// as `($n = '' OR user_id = $n)`, so that one text served every filter,
/// kept both backends' planners from the index that serves it (a plan is
/// chosen for the text, whatever the values), and a user's events were
/// found by reading the organization's. So the text is one of a few dozen,
/// one per set of conditions given.
fn list_sql(filter: &AuditFilter, before: Option<&str>) -> (String, Vec<Value>) {
    let mut conditions = Vec::new();
    let mut params = Vec::new();
    let mut condition = |sql: &str, param: Option<Value>| {
        match param {
            Some(param) => {
                params.push(param);
                conditions.push(sql.replace('?', &format!("${}", params.len())));
            }
            None => conditions.push(sql.to_owned()),
        };
    };
    match filter.org {
        OrgScope::Any => {}
        OrgScope::Only(org) => condition("org_id = ?", Some(Value::from(org.to_string()))),
        OrgScope::None => condition("org_id IS NULL", None),
    }
    // An empty kind or cursor selects nothing out, as before this text
    // was built per filter.
    if let Some(kind) = filter.kind.as_ref().filter(|kind| !kind.is_empty()) {
        condition("kind = ?", Some(Value::from(kind.clone())));
    }
    if let Some(user) = filter.user {
        condition("user_id = ?", Some(Value::from(user.to_string())));
    }
    if let Some(before) = before.filter(|before| !before.is_empty()) {
        condition("id < ?", Some(Value::from(before.to_owned())));
    }
    if let Some(since) = filter.since {
        condition("created_at >= ?", Some(Value::from(millis(since))));
    }
    if let Some(until) = filter.until {
        condition("created_at < ?", Some(Value::from(millis(until))));
    }
    let filter =
        if conditions.is_empty() { String::new() } else { format!("WHERE {} ", conditions.join(" AND ")) };
    let sql = format!(
        "SELECT id, org_id, user_id, kind, method, outcome, detail, device_os, device_name, device_ip, \
           actor, created_at \
         FROM audit_events {filter}ORDER BY id DESC LIMIT ${}",
        params.len() + 1
    );
    (sql, params)
}

/// Which organization's events to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OrgScope {
    /// Every organization's, and those of no organization.
    #[default]
    Any,
    Only(OrgId),
    /// Those of no organization: sign-in attempts that matched none.
    None,
}

/// What to list of the audit trail; every field narrows it.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub org: OrgScope,
    pub kind: Option<String>,
    pub user: Option<UserId>,
    /// Recorded at or after this.
    pub since: Option<DateTime<Utc>>,
    /// Recorded before this.
    pub until: Option<DateTime<Utc>>,
}

impl AuditFilter {
    /// The organization's events.
    pub fn org(org: OrgId) -> Self {
        Self { org: OrgScope::Only(org), ..Self::default() }
    }
}

pub(crate) async fn insert_audit_event(
    conn: &mut AnyConnection,
    event: &NewAuditEvent,
    now: DateTime<Utc>,
) -> Result<()> {
    insert_audit_events(conn, &[(event, now)]).await
}

/// Inserts the events with one statement, in the caller's transaction.
pub(crate) async fn insert_audit_events(
    conn: &mut AnyConnection,
    events: &[(&NewAuditEvent, DateTime<Utc>)],
) -> Result<()> {
    let mut inserts = Inserts::default();
    add_audit_events(&mut inserts, events);
    Ok(inserts.execute_in(conn).await?)
}

/// Declares the insert of `events` in `inserts`.
pub(crate) fn add_audit_events(inserts: &mut Inserts, events: &[(&NewAuditEvent, DateTime<Utc>)]) {
    inserts.insert(
        "audit_events (id, org_id, user_id, kind, method, outcome, detail, device_os, device_name, device_ip, \
         created_at, actor)",
        12,
        events.len(),
    );
    for (event, now) in events {
        inserts
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(event.org_id.map(|o| o.to_string()))
            .bind(event.user_id.map(|u| u.to_string()))
            .bind(event.kind)
            .bind(event.method)
            .bind(event.outcome)
            .bind(event.detail.as_ref().map(|d| d.to_string()))
            .bind(event.device.os.clone())
            .bind(event.device.name.clone())
            .bind(event.device.ip.map(|ip| ip.to_string()))
            .bind(millis(*now))
            .bind(event.actor.clone());
    }
}

#[cfg(test)]
mod tests {
    use gatehouse_core::{OrgId, UserId};
    use sqlx::{AssertSqlSafe, Row};

    use super::*;

    /// Each filter is read through the index made for it, with or without
    /// the page's cursor. SQLite plans a statement by its text alone, as
    /// PostgreSQL's generic plans do, so its plan shows what the text
    /// allows; a condition switched off by a parameter allowed only the
    /// organization's index or a scan.
    #[tokio::test]
    async fn each_filter_reads_its_own_index() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::open(&format!("sqlite://{}?mode=rwc", dir.path().join("a.db").display())).await.unwrap();
        let (org, user) = (OrgId::new(), UserId::new());
        let by_kind = AuditFilter { kind: Some("login".into()), ..AuditFilter::default() };
        let cases = [
            (AuditFilter { user: Some(user), ..AuditFilter::org(org) }, "audit_events_by_user"),
            (AuditFilter { user: Some(user), ..AuditFilter::default() }, "audit_events_by_user"),
            (by_kind, "audit_events_by_kind"),
            (AuditFilter::org(org), "audit_events_by_org"),
        ];
        for (filter, index) in cases {
            for before in [None, Some("01900000-0000-7000-8000-000000000000")] {
                let (sql, params) = list_sql(&filter, before);
                let query = sqlx::query(AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")));
                let query = params.into_iter().fold(query, |query, param| param.bind_to(query));
                let rows = query.bind(50_i64).fetch_all(&store.pool).await.unwrap();
                let plan: Vec<String> = rows.iter().map(|row| row.try_get("detail").unwrap()).collect();
                assert!(plan.iter().any(|step| step.contains(index)), "{filter:?}, {before:?}: {plan:?}");
            }
        }
        store.close().await;
    }

    /// Values are bound, never written into the statement, and its
    /// placeholders are numbered in the order of its parameters.
    #[test]
    fn values_are_bound_in_order() {
        let user = UserId::new();
        let filter = AuditFilter {
            kind: Some("x' OR 1=1 --".into()),
            user: Some(user),
            since: Some(DateTime::from_timestamp_millis(5).unwrap()),
            ..AuditFilter::org(OrgId::new())
        };
        let (sql, params) = list_sql(&filter, Some("$1"));
        assert!(!sql.contains("OR 1=1"), "{sql}");
        assert!(
            sql.contains("org_id = $1 AND kind = $2 AND user_id = $3 AND id < $4 AND created_at >= $5"),
            "{sql}"
        );
        assert!(sql.ends_with("LIMIT $6"), "{sql}");
        assert_eq!(params[1], Value::from("x' OR 1=1 --"));
        assert_eq!(params[3], Value::from("$1"));
        assert_eq!(params[4], Value::from(5_i64));
        let (sql, params) = list_sql(&AuditFilter::default(), None);
        assert!(!sql.contains("WHERE") && sql.ends_with("LIMIT $1") && params.is_empty(), "{sql}");
        let empty = AuditFilter { kind: Some(String::new()), ..AuditFilter::default() };
        assert_eq!(list_sql(&empty, Some("")), (sql, params));
    }
}
