use chrono::{DateTime, Utc};
use gatehouse_core::{Email, OrgId, Origin, Role, User, UserId};
use sqlx::{AnyConnection, Row};

use crate::columns::Columns;
use crate::embedded_writer::{OnWriter, at_once};
use crate::inserts::Inserts;
use crate::read_then_write::ReadThenWrite;
use crate::{Backend, Result, Store, StoreError, clamp_limit, from_millis, millis, parse_id};

#[derive(Debug, Clone)]
pub struct NewUser {
    pub org_id: OrgId,
    /// `None` only with a `user_name`: a user has one or the other, or both.
    pub email: Option<Email>,
    pub display_name: String,
    pub external_id: Option<String>,
    pub password_hash: Option<String>,
    /// Users are normally created active; an IdP may provision one inactive.
    pub active: bool,
    /// The SCIM userName, for users an IdP provisions.
    pub user_name: Option<String>,
    pub scim_resource: Option<String>,
    pub role: Role,
    pub created_via: Origin,
}

impl NewUser {
    /// An active member of `org_id`, created through `created_via`, and
    /// nothing more: no email or userName (set one of them, or both), no
    /// name, password, external id or SCIM resource. The rest is set with
    /// struct update syntax: `NewUser { email, ..NewUser::member(org, via) }`.
    pub fn member(org_id: OrgId, created_via: Origin) -> Self {
        Self {
            org_id,
            email: None,
            display_name: String::new(),
            external_id: None,
            password_hash: None,
            active: true,
            user_name: None,
            scim_resource: None,
            role: Role::Member,
            created_via,
        }
    }
}

/// A partial update. For the optional fields, `Some(None)` clears the value.
#[derive(Debug, Default, Clone)]
pub struct UserUpdate {
    pub email: Option<Option<Email>>,
    pub display_name: Option<String>,
    pub external_id: Option<Option<String>>,
    pub active: Option<bool>,
    pub password_hash: Option<Option<String>>,
    pub user_name: Option<Option<String>>,
    pub scim_resource: Option<Option<String>>,
    pub role: Option<Role>,
    /// Apply only if the user is still at this version.
    pub expected_version: Option<i64>,
}

/// A condition on users that the database evaluates: the part of a SCIM
/// filter on attributes that are columns. Text values are compared as the
/// columns hold them (lower-cased with Rust's `to_lowercase`), so callers
/// lower-case what they compare with; a missing value matches nothing but
/// `Ne` (which it always matches), as in RFC 7644.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserCondition {
    Text {
        column: UserColumn,
        op: TextOp,
        value: String,
    },
    Present(UserColumn),
    Active(bool),
    /// A comparison with an instant, chronological (RFC 7644 §3.4.2.2).
    Time {
        column: TimeColumn,
        op: TimeOp,
        at: DateTime<Utc>,
    },
    /// Some entry of the user's SCIM emails meets the condition.
    AnyEmail(EmailCondition),
    /// No entry of the user's SCIM emails meets the condition.
    NoEmail(EmailCondition),
    And(Box<UserCondition>, Box<UserCondition>),
    Or(Box<UserCondition>, Box<UserCondition>),
    Not(Box<UserCondition>),
}

/// A condition on one entry of a user's SCIM emails, as the email index
/// holds it (see `gatehouse_core::User::email_index`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmailCondition {
    Text {
        field: EmailField,
        op: TextOp,
        value: String,
    },
    /// `primary` is this boolean.
    Primary(bool),
    /// `primary` is absent, not a boolean, or not this boolean.
    NotPrimary(bool),
    And(Box<EmailCondition>, Box<EmailCondition>),
    Or(Box<EmailCondition>, Box<EmailCondition>),
    Not(Box<EmailCondition>),
}

/// The text sub-attributes of an email entry, lower-cased.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailField {
    Value,
    Type,
}

/// The text columns a condition can compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserColumn {
    /// The effective SCIM userName, lower-cased.
    UserName,
    /// externalId, lower-cased.
    ExternalId,
    /// The id, as it is (only `Eq` and `Ne`).
    Id,
    /// The display name, lower-cased; absent when empty.
    DisplayName,
}

/// The instants a condition can compare: `meta.created` and
/// `meta.lastModified`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeColumn {
    Created,
    Modified,
}

/// How an instant compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

impl UserCondition {
    /// The condition as SQL, binding its values from `$first` on; the
    /// organization is `$1`.
    fn sql(&self, backend: Backend, visit: Visit, binds: &mut Vec<String>, first: usize) -> String {
        match self {
            Self::Text { column, op, value } => {
                let col = match column {
                    UserColumn::UserName => "user_name_normalized",
                    UserColumn::ExternalId => "external_id_normalized",
                    UserColumn::Id => "id",
                    UserColumn::DisplayName => "display_name_normalized",
                };
                compare_text(col, *op, value, backend, binds, first)
            }
            Self::Time { column, op, at } => compare_time(*column, *op, *at),
            Self::Present(column) => match column {
                UserColumn::UserName => "(user_name_normalized <> '')".to_owned(),
                UserColumn::ExternalId => {
                    "(external_id_normalized IS NOT NULL AND external_id_normalized <> '')".to_owned()
                }
                UserColumn::Id => "(1 = 1)".to_owned(),
                UserColumn::DisplayName => {
                    "(display_name_normalized IS NOT NULL AND display_name_normalized <> '')".to_owned()
                }
            },
            Self::Active(active) => format!("(active = {})", i32::from(*active)),
            // The rows in the email index that meet the condition: for
            // every user, read once as a set (led by the index on (org_id,
            // value_normalized) where it helps); for a few, each one's own.
            Self::AnyEmail(c) | Self::NoEmail(c) => {
                let none = if matches!(self, Self::NoEmail(_)) { "NOT " } else { "" };
                let c = c.sql(backend, binds, first);
                match visit {
                    Visit::Every => format!(
                        "(users.id {none}IN (SELECT e.user_id FROM user_emails e WHERE e.org_id = $1 AND {c}))"
                    ),
                    Visit::Few => format!(
                        "({none}EXISTS (SELECT 1 FROM user_emails e WHERE e.user_id = users.id AND {c}))"
                    ),
                }
            }
            Self::And(a, b) => format!(
                "({} AND {})",
                a.sql(backend, visit, binds, first),
                b.sql(backend, visit, binds, first)
            ),
            Self::Or(a, b) => format!(
                "({} OR {})",
                a.sql(backend, visit, binds, first),
                b.sql(backend, visit, binds, first)
            ),
            Self::Not(a) => format!("(NOT {})", a.sql(backend, visit, binds, first)),
        }
    }
}

/// Which users a condition is tested on, which decides how a condition on
/// their emails is best written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Visit {
    /// Every user of the organization.
    Every,
    /// A few, found by key (trigrams.rs).
    Few,
}

impl EmailCondition {
    /// The condition on one row `e` of the email index, never NULL.
    fn sql(&self, backend: Backend, binds: &mut Vec<String>, first: usize) -> String {
        match self {
            Self::Text { field, op, value } => {
                let col = match field {
                    EmailField::Value => "e.value_normalized",
                    EmailField::Type => "e.type_normalized",
                };
                compare_text(col, *op, value, backend, binds, first)
            }
            Self::Primary(primary) => {
                format!("(e.is_primary IS NOT NULL AND e.is_primary = {})", i32::from(*primary))
            }
            Self::NotPrimary(primary) => {
                format!("(e.is_primary IS NULL OR e.is_primary <> {})", i32::from(*primary))
            }
            Self::And(a, b) => {
                format!("({} AND {})", a.sql(backend, binds, first), b.sql(backend, binds, first))
            }
            Self::Or(a, b) => {
                format!("({} OR {})", a.sql(backend, binds, first), b.sql(backend, binds, first))
            }
            Self::Not(a) => format!("(NOT {})", a.sql(backend, binds, first)),
        }
    }
}

fn param(value: String, binds: &mut Vec<String>, first: usize) -> String {
    binds.push(value);
    format!("${}", first + binds.len() - 1)
}

/// `col op value` for a lower-cased text column, true or false (never
/// NULL, so that NOT means what it says): a missing value meets only `Ne`.
fn compare_text(
    col: &str,
    op: TextOp,
    value: &str,
    backend: Backend,
    binds: &mut Vec<String>,
    first: usize,
) -> String {
    // Byte order, as Rust compares strings (PostgreSQL would otherwise use
    // the database's collation).
    let ordered = match backend {
        Backend::Postgres => format!("{col} COLLATE \"C\""),
        Backend::Sqlite => col.to_owned(),
    };
    let like = |pattern: String, binds: &mut Vec<String>| {
        format!("({col} IS NOT NULL AND {col} LIKE {} ESCAPE '\\')", param(pattern, binds, first))
    };
    let escaped = value.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    match op {
        TextOp::Eq => format!("({col} IS NOT NULL AND {col} = {})", param(value.to_owned(), binds, first)),
        TextOp::Ne => format!("({col} IS NULL OR {col} <> {})", param(value.to_owned(), binds, first)),
        TextOp::Co => like(format!("%{escaped}%"), binds),
        // A prefix is a range of an index in byte order (SQLite's LIKE
        // cannot use one, PostgreSQL's only with a pattern operator class):
        // the bounds are in byte order, as `ordered` compares.
        TextOp::Sw if !value.is_empty() => {
            let low = param(value.to_owned(), binds, first);
            match prefix_successor(value) {
                Some(high) => {
                    let high = param(high, binds, first);
                    format!("({col} IS NOT NULL AND {ordered} >= {low} AND {ordered} < {high})")
                }
                None => format!("({col} IS NOT NULL AND {ordered} >= {low})"),
            }
        }
        TextOp::Sw => like(format!("{escaped}%"), binds),
        TextOp::Ew => like(format!("%{escaped}"), binds),
        TextOp::Gt | TextOp::Ge | TextOp::Lt | TextOp::Le => {
            let sign = match op {
                TextOp::Gt => ">",
                TextOp::Ge => ">=",
                TextOp::Lt => "<",
                _ => "<=",
            };
            format!("({col} IS NOT NULL AND {ordered} {sign} {})", param(value.to_owned(), binds, first))
        }
    }
}

/// `column op at` for an instant column, which holds milliseconds and is
/// never NULL. An instant between two milliseconds lies strictly between
/// two stored values, so it is rounded the way that keeps the comparison
/// true to the instant; only whole milliseconds are ever equal. The bounds
/// are integers computed here, written into the SQL as numbers.
fn compare_time(column: TimeColumn, op: TimeOp, at: DateTime<Utc>) -> String {
    let col = match column {
        TimeColumn::Created => "created_at",
        TimeColumn::Modified => "updated_at",
    };
    let floor = at.timestamp_millis();
    let whole = at.timestamp_subsec_nanos().is_multiple_of(1_000_000);
    let ceil = if whole { floor } else { floor + 1 };
    match op {
        TimeOp::Gt => format!("({col} > {floor})"),
        TimeOp::Ge => format!("({col} >= {ceil})"),
        TimeOp::Lt => format!("({col} < {ceil})"),
        TimeOp::Le => format!("({col} <= {floor})"),
        TimeOp::Eq if whole => format!("({col} = {floor})"),
        TimeOp::Ne if whole => format!("({col} <> {floor})"),
        TimeOp::Eq => "(1 = 0)".to_owned(),
        TimeOp::Ne => "(1 = 1)".to_owned(),
    }
}

/// The least string greater than every string starting with `prefix`: its
/// last character that has a successor, incremented, and what follows it
/// dropped. (UTF-8 byte order is code point order.) `None` when no
/// character has one.
fn prefix_successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = last as u32 + 1;
        while next <= 0x10FFFF {
            if let Some(c) = char::from_u32(next) {
                chars.push(c);
                return Some(chars.into_iter().collect());
            }
            next += 1;
        }
    }
    None
}

/// The ORDER BY of `sort`: nulls last when ascending and first when
/// descending, on both backends (they disagree by default), ties by id.
fn sort_order(sort: UserSort, backend: Backend) -> String {
    let dir = if sort.descending { "DESC" } else { "ASC" };
    // Byte order on both backends, as SCIM's in-memory sort has it.
    let c = match backend {
        Backend::Postgres => " COLLATE \"C\"",
        Backend::Sqlite => "",
    };
    match sort.key {
        UserSortKey::Id | UserSortKey::Created => format!("id {dir}"),
        UserSortKey::UserName => format!("user_name_normalized{c} {dir}, id {dir}"),
        UserSortKey::ExternalId => {
            format!("(external_id_normalized IS NULL) {dir}, external_id_normalized{c} {dir}, id {dir}")
        }
        UserSortKey::DisplayName => {
            format!("(display_name_normalized IS NULL) {dir}, display_name_normalized{c} {dir}, id {dir}")
        }
        UserSortKey::Email => {
            format!("(email_normalized IS NULL) {dir}, email_normalized{c} {dir}, id {dir}")
        }
        UserSortKey::Modified => format!("updated_at {dir}, id {dir}"),
    }
}

/// What a list of users is sorted by (SCIM `sortBy`, `sortOrder`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserSort {
    pub key: UserSortKey,
    pub descending: bool,
}

/// The attributes users can be sorted by, each a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserSortKey {
    Id,
    UserName,
    ExternalId,
    DisplayName,
    Email,
    Created,
    Modified,
}

/// Which page of a list of users: by position in a sort (SCIM's 1-based
/// `startIndex` is `offset + 1`), or in id order after a given user (the
/// keyset that RFC 9865 cursors carry, as cheap on the thousandth page as
/// on the first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserWindow {
    Offset { offset: u64, sort: Option<UserSort> },
    After(Option<UserId>),
}

/// A page of the users matching a condition.
#[derive(Debug, Clone)]
pub struct UserMatches {
    /// How many match in all.
    pub total: i64,
    pub users: Vec<User>,
    /// Whether more follow this page in id order (only known, and only
    /// asked, for `UserWindow::After`).
    pub more: bool,
}

#[derive(Debug, Clone)]
pub struct UserPage {
    pub users: Vec<User>,
    /// Pass as `after` to get the next page; `None` on the last page.
    pub next: Option<UserId>,
}

const COLUMNS: &str = "id, org_id, email, display_name, external_id, active, password_hash, user_name, \
                       scim_resource, version, role, created_via, created_at, updated_at";

/// The users' columns as `{alias}.{column} AS {prefix}{column}`, for a
/// join read with `columns::prefixed`.
pub(crate) fn columns_aliased(alias: &str, prefix: &str) -> String {
    crate::columns::aliased(COLUMNS, alias, prefix)
}

/// A subquery giving the display names of the groups of the user whose id
/// is `user_id` (a column of the outer query), as a JSON array of strings
/// in the order of `group_names_of`; each backend spells the aggregate its
/// own way.
pub(crate) fn group_names_json(backend: Backend, user_id: &str) -> String {
    let aggregate = match backend {
        Backend::Sqlite => "json_group_array(g.display_name ORDER BY g.display_name)",
        Backend::Postgres => "COALESCE(json_agg(g.display_name ORDER BY g.display_name), '[]')::text",
    };
    format!(
        "(SELECT {aggregate} FROM group_members m JOIN scim_groups g ON g.id = m.group_id WHERE m.user_id = {user_id})"
    )
}

pub(crate) fn user_from_row<R: Columns + ?Sized>(row: &R) -> Result<User> {
    Ok(User {
        id: parse_id(&row.text("id")?)?,
        org_id: parse_id(&row.text("org_id")?)?,
        email: row.text_opt("email")?.map(Email::from_trusted),
        display_name: row.text("display_name")?,
        external_id: row.text_opt("external_id")?,
        active: row.int("active")? != 0,
        password_hash: row.text_opt("password_hash")?,
        user_name: row.text_opt("user_name")?,
        scim_resource: row.text_opt("scim_resource")?,
        version: row.int("version")?,
        role: {
            let role = row.text("role")?;
            Role::parse(&role).ok_or_else(|| StoreError::Corrupt(format!("unknown role {role:?}")))?
        },
        created_via: Origin::parse(&row.text("created_via")?),
        created_at: from_millis(row.int("created_at")?),
        updated_at: from_millis(row.int("updated_at")?),
    })
}

/// A row of `find_user_for_login`: the account, and the rate-limit
/// counters of `throttle_keys` that exist.
fn login_from_row(
    row: &dyn Columns,
    throttle_keys: &[&str],
) -> Result<(LoginAccount, Vec<crate::ThrottleState>)> {
    let mut throttles = Vec::new();
    for (i, key) in throttle_keys.iter().take(2).enumerate() {
        let hits = row.int_opt(&format!("t{i}_hits"))?;
        let blocked = row.int_opt(&format!("t{i}_blocked"))?;
        if let (Some(hits), Some(blocked)) = (hits, blocked) {
            throttles.push(crate::ThrottleState {
                key: key.to_string(),
                hits: u32::try_from(hits).unwrap_or(u32::MAX),
                blocked_until: from_millis(blocked),
            });
        }
    }
    let groups = row.text("group_names")?;
    let account = LoginAccount {
        user: user_from_row(row)?,
        sso_required: row.int("sso_required")? != 0,
        rest_auth: row.text_opt("rest_auth")?,
        groups: serde_json::from_str(&groups)
            .map_err(|e| StoreError::Corrupt(format!("group names of a signing-in user: {e}")))?,
    };
    Ok((account, throttles))
}

impl Store {
    /// Creates a user. A duplicate email (compared case-insensitively,
    /// across every organization) is a conflict; an unknown organization is
    /// `NotFound`.
    pub async fn create_user(&self, new: &NewUser, now: DateTime<Utc>) -> Result<User> {
        self.create_user_audited(new, None, now).await
    }

    /// Creates the user and records `audit` in the same transaction.
    /// (Concurrent creates share transactions; see `group_commit`.)
    pub async fn create_user_audited(
        &self,
        new: &NewUser,
        audit: Option<&crate::NewAuditEvent>,
        now: DateTime<Utc>,
    ) -> Result<User> {
        Ok(self.write_new_user(new, audit, false, now).await?.0)
    }

    /// Creates a user that the organization's directory provisioned (SCIM),
    /// records `audit`, and lifts the deletions recorded for its email or
    /// externalId (`scim_tombstones`), which no longer stand in the way of
    /// its sign-in: all in one transaction. Returns the user and how many
    /// deletions were lifted.
    pub async fn provision_user(
        &self,
        new: &NewUser,
        audit: Option<&crate::NewAuditEvent>,
        now: DateTime<Utc>,
    ) -> Result<(User, u64)> {
        self.write_new_user(new, audit, true, now).await
    }

    async fn write_new_user(
        &self,
        new: &NewUser,
        audit: Option<&crate::NewAuditEvent>,
        lift_tombstones: bool,
        now: DateTime<Utc>,
    ) -> Result<(User, u64)> {
        let id = UserId::new();
        let audit = audit.map(|event| crate::NewAuditEvent { user_id: Some(id), ..event.clone() });
        let row = UserRow { id, new: new.clone(), audit, lift_tombstones, now };
        // Exactly what will be stored, without reading it back.
        let user = row.user();
        let lifted = crate::group_commit::submit(self, self.user_writer.as_ref(), row).await?;
        Ok((user, lifted))
    }

    /// Writes what filters read beside a user's own columns (the email
    /// index of migration 0016, the lower-cased display name of 0017) for
    /// users written before it existed, a batch at a time; once all have
    /// it, this is one probe.
    pub(crate) async fn write_missing_filter_data(&self) -> Result<()> {
        let unwritten = format!("SELECT {COLUMNS} FROM users WHERE filter_data_written = 0 LIMIT 500");
        let mut last_pass = Vec::new();
        loop {
            let rows = sqlx::query(sqlx::AssertSqlSafe(unwritten.as_str())).fetch_all(&self.pool).await?;
            if rows.is_empty() {
                return Ok(());
            }
            let users = rows.iter().map(user_from_row).collect::<Result<Vec<_>>>()?;
            // A pass whose users were not marked written would find them
            // again, and start-up would never end: fail instead, by name.
            // (Compared as sets: without an order, the same rows may come
            // back in another.)
            let mut ids: Vec<UserId> = users.iter().map(|u| u.id).collect();
            ids.sort_unstable();
            if ids == last_pass {
                return Err(StoreError::Corrupt(format!(
                    "{} users' filter data was written but not marked written",
                    ids.len()
                )));
            }
            last_pass = ids;
            let mut tx = self.begin_write().await?;
            for user in &users {
                sqlx::query("UPDATE users SET display_name_normalized = $2 WHERE id = $1")
                    .bind(user.id.to_string())
                    .bind(display_name_key(&user.display_name))
                    .execute(&mut *tx)
                    .await?;
            }
            index_emails(&mut tx, &users.iter().collect::<Vec<_>>()).await?;
            tx.commit().await?;
        }
    }

    /// Inserts the users, their audit events and their email index, and
    /// lifts the tombstones of those provisioned: one transaction. Returns
    /// the tombstones each row lifted.
    async fn write_users(&self, rows: &[&UserRow]) -> Result<Vec<u64>> {
        const WHAT: &str = "a user with this email or userName";
        let lifted = match &self.writer {
            Some(writer) => {
                let owned: Vec<UserRow> = rows.iter().map(|row| (*row).clone()).collect();
                writer
                    .transaction(move |conn| {
                        let rows: Vec<&UserRow> = owned.iter().collect();
                        insert_users_on(conn, &rows, WHAT)
                    })
                    .await?
            }
            None => {
                let tx = ReadThenWrite::begin(self, self.lease_to_write().await?).await?;
                insert_users(tx, rows, WHAT, |_| {}).await?
            }
        };
        let superseding: Vec<_> = rows.iter().map(|r| r.supersedes()).collect();
        Ok(crate::tombstones::count_per_user(lifted, &superseding))
    }

    pub async fn get_user(&self, id: UserId) -> Result<User> {
        let sql = format!("SELECT {COLUMNS} FROM users WHERE id = $1");
        let user = self.optional_row(&sql, &[&id.to_string()], |row| user_from_row(row)).await?;
        user.ok_or(StoreError::NotFound)
    }

    /// The organization's user whose SCIM userName is `name`, whatever its
    /// case: the userName an IdP gave, or else the email.
    pub async fn find_user_by_user_name(&self, org: OrgId, name: &str) -> Result<Option<User>> {
        // user_name_normalized always holds the effective userName, so this is
        // one probe of the unique index.
        let sql = format!("SELECT {COLUMNS} FROM users WHERE org_id = $1 AND user_name_normalized = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(org.to_string())
            .bind(name.to_lowercase())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// The organization's users whose externalId is `value`, whatever its case.
    pub async fn find_users_by_external_id(&self, org: OrgId, value: &str) -> Result<Vec<User>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM users WHERE org_id = $1 AND external_id_normalized = $2 ORDER BY id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(org.to_string())
            .bind(value.to_lowercase())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(user_from_row).collect()
    }

    /// The organization's users matching `condition` (all of them without
    /// one): how many, and the page `window` names, at most `limit` users.
    /// Ties in a sort are broken by id so that pages are stable; without a
    /// sort the order is the ids' (creation order).
    pub async fn users_matching(
        &self,
        org: OrgId,
        condition: Option<&UserCondition>,
        window: UserWindow,
        limit: u32,
    ) -> Result<UserMatches> {
        let mut binds = Vec::new();
        // On SQLite, a substring that few users contain is looked up in a
        // trigram index, and only those users are read (trigrams.rs);
        // they are visited from the list, by key, whatever the order asked.
        let candidates = match (self.backend, condition) {
            (Backend::Sqlite, Some(condition)) => self.trigram_candidates(condition).await?,
            _ => None,
        };
        let visit = if candidates.is_some() { Visit::Few } else { Visit::Every };
        // The users the condition is tested on, as `FROM … WHERE …`.
        let scope = match candidates {
            Some(seqs) => {
                let list = serde_json::to_string(&seqs)
                    .map_err(|e| StoreError::Corrupt(format!("a list of candidates: {e}")))?;
                format!(
                    "(SELECT value AS candidate FROM json_each({})) AS c \
                     CROSS JOIN users ON users.seq = c.candidate WHERE users.org_id = $1",
                    param(list, &mut binds, 2)
                )
            }
            None => "users WHERE org_id = $1".to_owned(),
        };
        let clause =
            condition.map_or_else(|| "(1 = 1)".to_owned(), |c| c.sql(self.backend, visit, &mut binds, 2));
        let count_sql = format!("SELECT COUNT(*) AS n FROM {scope} AND {clause}");
        let mut count = sqlx::query(sqlx::AssertSqlSafe(count_sql)).bind(org.to_string());
        for b in &binds {
            count = count.bind(b.clone());
        }
        // The count and the page on one connection, handed on after both.
        let mut conn = self.lease().await?;
        let total: i64 = count.fetch_one(&mut *conn).await?.try_get("n")?;
        let limit = i64::from(limit.min(1000));
        // A keyset page reads one more than it returns, to know whether
        // another follows; an offset page costs the rows it skips.
        let (keyset, order, integers) = match window {
            UserWindow::Offset { offset, sort } => {
                let sort = sort.unwrap_or(UserSort { key: UserSortKey::Id, descending: false });
                (
                    String::new(),
                    sort_order(sort, self.backend),
                    vec![limit, i64::try_from(offset).unwrap_or(i64::MAX)],
                )
            }
            UserWindow::After(after) => {
                let keyset = after.map_or_else(String::new, |id| {
                    format!(" AND id > {}", param(id.to_string(), &mut binds, 2))
                });
                (keyset, "id ASC".to_owned(), vec![limit + 1])
            }
        };
        // LIMIT (and OFFSET) take integers, bound after the text.
        let first = binds.len() + 2;
        let tail = match integers.len() {
            1 => format!("LIMIT ${first}"),
            _ => format!("LIMIT ${first} OFFSET ${}", first + 1),
        };
        let sql = format!("SELECT {COLUMNS} FROM {scope} AND {clause}{keyset} ORDER BY {order} {tail}");
        let mut page = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(org.to_string());
        for b in binds {
            page = page.bind(b);
        }
        for n in integers {
            page = page.bind(n);
        }
        let rows = page.fetch_all(&mut *conn).await?;
        conn.finish();
        let mut users = rows.iter().map(user_from_row).collect::<Result<Vec<_>>>()?;
        let more = match window {
            UserWindow::After(_) if users.len() as i64 > limit => {
                users.truncate(limit as usize);
                true
            }
            _ => false,
        };
        Ok(UserMatches { total, users, more })
    }

    /// How many users the organization has.
    pub async fn count_users(&self, org: OrgId) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users WHERE org_id = $1")
            .bind(org.to_string())
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    /// The user with this email, whatever its case.
    pub async fn find_user_by_email(&self, email: &Email) -> Result<Option<User>> {
        let sql = format!("SELECT {COLUMNS} FROM users WHERE email_normalized = $1");
        let row =
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(email.normalized()).fetch_optional(&self.pool).await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// Everything a password sign-in with `email` reads, in one query for
    /// the hot path: the user, their organization's sign-in settings, the
    /// group names their access token will carry, and the rate-limit
    /// counters under `throttle_keys` (at most two). For an email with no
    /// user the counters are read on their own.
    pub async fn find_user_for_login(&self, email: &Email, throttle_keys: &[&str]) -> Result<LoginLookup> {
        debug_assert!(throttle_keys.len() <= 2);
        let throttle_columns: String = (0..throttle_keys.len().min(2))
            .map(|i| {
                format!(
                    ", (SELECT hits FROM throttles WHERE key = ${n}) AS t{i}_hits, \
                     (SELECT blocked_until FROM throttles WHERE key = ${n}) AS t{i}_blocked",
                    n = i + 2
                )
            })
            .collect();
        let groups = group_names_json(self.backend, "users.id");
        let sql = format!(
            "SELECT {COLUMNS}, \
               COALESCE((SELECT sso_required FROM sso_policies p WHERE p.org_id = users.org_id), 0) \
                 AS sso_required, \
               (SELECT config_sealed FROM rest_auth_configs r WHERE r.org_id = users.org_id) AS rest_auth, \
               {groups} AS group_names{throttle_columns} \
             FROM users WHERE email_normalized = $1"
        );
        let mut params = vec![email.normalized()];
        params.extend(throttle_keys.iter().take(2));
        let found = self.optional_row(&sql, &params, |row| login_from_row(row, throttle_keys)).await?;
        match found {
            Some((account, throttles)) => Ok(LoginLookup { account: Some(account), throttles }),
            None => Ok(LoginLookup { account: None, throttles: self.throttle_states(throttle_keys).await? }),
        }
    }

    /// The organization's users in creation order, `limit` at a time.
    pub async fn list_users(&self, org: OrgId, after: Option<UserId>, limit: u32) -> Result<UserPage> {
        let limit = clamp_limit(limit);
        let sql = format!("SELECT {COLUMNS} FROM users WHERE org_id = $1 AND id > $2 ORDER BY id LIMIT $3");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(org.to_string())
            .bind(after.map(|a| a.to_string()).unwrap_or_default())
            .bind(limit + 1)
            .fetch_all(&self.pool)
            .await?;
        let mut users = rows.iter().map(user_from_row).collect::<Result<Vec<_>>>()?;
        let next = if users.len() as i64 > limit {
            users.truncate(limit as usize);
            users.last().map(|u| u.id)
        } else {
            None
        };
        Ok(UserPage { users, next })
    }

    /// Applies `update`. Deactivating a user, or changing or clearing their
    /// password, revokes all their sessions in the same transaction, so no
    /// refresh token outlives the credential or the account it came from.
    pub async fn update_user(&self, id: UserId, update: &UserUpdate, now: DateTime<Utc>) -> Result<User> {
        let mut tx = self.begin_write().await?;
        if let Some(Some(email)) = &update.email {
            let org: Option<String> = sqlx::query_scalar("SELECT org_id FROM users WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(org) = org {
                crate::domains::refuse_owned_elsewhere(&mut *tx, &[(parse_id(&org)?, email.domain())])
                    .await?;
            }
        }
        let done = sqlx::query(
            "UPDATE users SET \
               email = CASE WHEN $21 = 1 THEN $2 ELSE email END, \
               email_normalized = CASE WHEN $21 = 1 THEN $3 ELSE email_normalized END, \
               email_domain = CASE WHEN $21 = 1 THEN $19 ELSE email_domain END, \
               display_name = COALESCE($4, display_name), \
               display_name_normalized = CASE WHEN $22 = 1 THEN $23 ELSE display_name_normalized END, \
               external_id = CASE WHEN $5 = 1 THEN $6 ELSE external_id END, \
               external_id_normalized = CASE WHEN $5 = 1 THEN $18 ELSE external_id_normalized END, \
               active = COALESCE($7, active), \
               password_hash = CASE WHEN $8 = 1 THEN $9 ELSE password_hash END, \
               updated_at = $10, \
               user_name = CASE WHEN $11 = 1 THEN $12 ELSE user_name END, \
               user_name_normalized = CASE \
                 WHEN $11 = 1 THEN COALESCE($13, CASE WHEN $21 = 1 THEN $3 ELSE email_normalized END) \
                 WHEN user_name IS NULL AND $21 = 1 THEN $3 \
                 ELSE user_name_normalized END, \
               scim_resource = CASE WHEN $14 = 1 THEN $15 ELSE scim_resource END, \
               role = COALESCE($20, role), \
               version = version + 1 \
             WHERE id = $1 AND ($16 = 0 OR version = $17)",
        )
        .bind(id.to_string())
        .bind(update.email.clone().flatten().map(|e| e.as_str().to_owned()))
        .bind(update.email.clone().flatten().map(|e| e.normalized().to_owned()))
        .bind(update.display_name.clone())
        .bind(i64::from(update.external_id.is_some()))
        .bind(update.external_id.clone().flatten())
        .bind(update.active.map(i64::from))
        .bind(i64::from(update.password_hash.is_some()))
        .bind(update.password_hash.clone().flatten())
        .bind(millis(now))
        .bind(i64::from(update.user_name.is_some()))
        .bind(update.user_name.clone().flatten())
        .bind(update.user_name.clone().flatten().map(|n| n.to_lowercase()))
        .bind(i64::from(update.scim_resource.is_some()))
        .bind(update.scim_resource.clone().flatten())
        .bind(i64::from(update.expected_version.is_some()))
        .bind(update.expected_version.unwrap_or(0))
        .bind(update.external_id.clone().flatten().map(|e| e.to_lowercase()))
        .bind(update.email.clone().flatten().map_or_else(String::new, |e| e.domain().to_owned()))
        .bind(update.role.map(|r| r.as_str()))
        .bind(i64::from(update.email.is_some()))
        .bind(i64::from(update.display_name.is_some()))
        .bind(update.display_name.as_deref().and_then(display_name_key))
        .execute(&mut *tx)
        .await
        .map_err(StoreError::unique("a user with this email or userName"))?;
        if done.rows_affected() == 0 {
            let exists = sqlx::query("SELECT 1 FROM users WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await?;
            return Err(if exists.is_some() { StoreError::VersionMismatch } else { StoreError::NotFound });
        }
        if update.active == Some(false) {
            crate::sessions::revoke_user_sessions(&mut tx, id, "user deactivated", now).await?;
        } else if update.password_hash.is_some() {
            crate::sessions::revoke_user_sessions(&mut tx, id, "password changed", now).await?;
        }
        let user = fetch_user(&mut tx, id).await?;
        if update.email.is_some() || update.scim_resource.is_some() {
            index_emails(&mut tx, &[&user]).await?;
        }
        tx.commit().await?;
        Ok(user)
    }

    /// Deletes the user; their sessions and refresh tokens go with them.
    pub async fn delete_user(&self, id: UserId) -> Result<()> {
        let _turn = self.write_turn().await;
        let done =
            sqlx::query("DELETE FROM users WHERE id = $1").bind(id.to_string()).execute(&self.pool).await?;
        crate::found(done)
    }

    /// Removes the local password of every user in the organization, for when
    /// it switches to an external authentication service, and ends the
    /// sessions those passwords signed in. Returns how many hashes were
    /// erased.
    pub async fn clear_org_password_hashes(&self, org: OrgId, now: DateTime<Utc>) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE users SET password_hash = NULL, updated_at = $2 WHERE org_id = $1 AND password_hash IS NOT NULL",
        )
        .bind(org.to_string())
        .bind(millis(now))
        .execute(&mut *tx)
        .await?;
        let local = gatehouse_core::AuthMethod::LocalPassword;
        crate::sessions::revoke_org_sessions_by_method(&mut tx, org, local, "passwords cleared", now).await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }
}

pub(crate) async fn fetch_user(conn: &mut AnyConnection, id: UserId) -> Result<User> {
    let sql = format!("SELECT {COLUMNS} FROM users WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound)?;
    user_from_row(&row)
}

/// What a password sign-in reads: the account, if the email has one, and
/// the rate-limit counters it asked for that exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginLookup {
    pub account: Option<LoginAccount>,
    pub throttles: Vec<crate::ThrottleState>,
}

/// A user signing in with a password, and how their organization has them
/// sign in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginAccount {
    pub user: User,
    /// The organization signs in through single sign-on only.
    pub sso_required: bool,
    /// The organization's sealed REST authentication settings, when it has
    /// them on (see [`Store::rest_auth`]).
    pub rest_auth: Option<String>,
    /// The display names of the user's groups, sorted (as
    /// [`Store::group_names_of`]).
    pub groups: Vec<String>,
}

/// What one new user writes.
#[derive(Debug, Clone)]
pub(crate) struct UserRow {
    id: UserId,
    new: NewUser,
    audit: Option<crate::NewAuditEvent>,
    /// Provisioned by the directory: lift the deletions recorded for the
    /// user's email or externalId in the same transaction.
    lift_tombstones: bool,
    now: DateTime<Utc>,
}

impl UserRow {
    /// The tombstones this row lifts, if it lifts any.
    fn supersedes(&self) -> Option<crate::tombstones::Supersedes<'_>> {
        self.lift_tombstones.then(|| crate::tombstones::Supersedes {
            org: self.new.org_id,
            email: self.new.email.as_ref().map(Email::normalized),
            external_id: self.new.external_id.as_deref(),
        })
    }

    /// The user this row creates.
    fn user(&self) -> User {
        let (new, stored_at) = (&self.new, from_millis(millis(self.now)));
        User {
            id: self.id,
            org_id: new.org_id,
            email: new.email.clone(),
            display_name: new.display_name.clone(),
            external_id: new.external_id.clone(),
            active: new.active,
            password_hash: new.password_hash.clone(),
            user_name: new.user_name.clone(),
            scim_resource: new.scim_resource.clone(),
            version: 1,
            role: new.role,
            created_via: new.created_via,
            created_at: stored_at,
            updated_at: stored_at,
        }
    }

    pub(crate) fn new(
        id: UserId,
        new: NewUser,
        audit: Option<crate::NewAuditEvent>,
        now: DateTime<Utc>,
    ) -> Self {
        Self { id, new, audit, lift_tombstones: false, now }
    }
}

impl crate::group_commit::BatchRow for UserRow {
    /// The tombstones the row lifted.
    type Outcome = u64;

    fn write<'a>(store: &'a Store, rows: &'a [&'a Self]) -> crate::group_commit::BatchFuture<'a, u64> {
        Box::pin(store.write_users(rows))
    }
}

/// Inserts the users, their email index and their audit events, and
/// lifts the tombstones of the rows that lift them, then what `more`
/// declares after them, and commits `tx`; returns the tombstones lifted.
/// A duplicate is a conflict over `what`. After the check of the
/// addresses' domains (on `tx`'s reads), all of it goes with the commit:
/// as separate statements a batch was seven round trips, on SQLite each a
/// hand-off to the connection's thread and back (docs/benchmarks.md).
pub(crate) async fn insert_users(
    mut tx: ReadThenWrite<'_>,
    rows: &[&UserRow],
    what: &'static str,
    more: impl FnOnce(&mut Inserts),
) -> Result<Vec<crate::tombstones::Lifted>> {
    let checked = crate::domains::refuse_owned_elsewhere(&mut tx, &user_addresses(rows)).await;
    tx.or_roll_back(checked).await?;
    let users: Vec<User> = rows.iter().map(|r| r.user()).collect();
    let users: Vec<&User> = users.iter().collect();
    // A batch of users with very many emails each could pass a backend's
    // limit on the values of one statement; their index goes in
    // statements of its own, after the users they refer to.
    let emails = email_index_rows(&users);
    let index_apart = emails.len() > EMAIL_ROWS_PER_STATEMENT;
    let mut inserts = Inserts::default();
    declare_user_batch(&mut inserts, rows, (!index_apart).then_some(emails.as_slice()), more);
    // The organization's existence is the foreign key's to check.
    let lifted = if index_apart {
        let written = match inserts.fetch_in(tx.conn()).await {
            Ok(rows) => insert_email_index(tx.conn(), &emails).await.map(|()| rows),
            Err(e) => Err(StoreError::on_insert(what)(e)),
        };
        let rows = tx.or_roll_back(written).await?;
        tx.commit_with(Inserts::default()).await?;
        rows
    } else {
        tx.commit_with(inserts).await.map_err(StoreError::on_insert(what))?
    };
    crate::tombstones::lifted(&lifted)
}

/// As [`insert_users`] with nothing more, on the embedded writer's
/// connection inside its transaction (`embedded_writer`). Each row is a
/// statement of its own there, so the email index always goes with the
/// rest.
fn insert_users_on(
    conn: &rusqlite::Connection,
    rows: &[&UserRow],
    what: &'static str,
) -> Result<Vec<crate::tombstones::Lifted>> {
    at_once(crate::domains::refuse_owned_elsewhere(&mut OnWriter(conn), &user_addresses(rows)))?;
    let users: Vec<User> = rows.iter().map(|r| r.user()).collect();
    let users: Vec<&User> = users.iter().collect();
    let mut inserts = Inserts::default();
    declare_user_batch(&mut inserts, rows, Some(&email_index_rows(&users)), |_| {});
    inserts.run(conn, crate::tombstones::lifted_row).map_err(StoreError::on_embedded_insert(what))
}

/// Declares a batch of new users, in the order both ways of writing one
/// need: the users, their email index (`emails`; `None` when it is written
/// apart, after them), their audit events, what `more` declares, and last
/// the lifting of the tombstones they supersede, since only the last
/// statement's rows come back.
fn declare_user_batch(
    inserts: &mut Inserts,
    rows: &[&UserRow],
    emails: Option<&[EmailRow<'_>]>,
    more: impl FnOnce(&mut Inserts),
) {
    declare_users(inserts, rows);
    if let Some(emails) = emails {
        add_email_index(inserts, emails);
    }
    add_user_audits(inserts, rows);
    more(inserts);
    add_user_lifts(inserts, rows);
}

/// The (organization, email domain) of each row that has an email.
fn user_addresses<'r>(rows: &[&'r UserRow]) -> Vec<(OrgId, &'r str)> {
    rows.iter().filter_map(|r| Some((r.new.org_id, r.new.email.as_ref()?.domain()))).collect()
}

/// Declares the rows' audit events.
fn add_user_audits(inserts: &mut Inserts, rows: &[&UserRow]) {
    let audits: Vec<(&crate::NewAuditEvent, DateTime<Utc>)> =
        rows.iter().filter_map(|r| r.audit.as_ref().map(|a| (a, r.now))).collect();
    crate::audit::add_audit_events(inserts, &audits)
}

/// Declares the lifting of the tombstones the rows supersede.
fn add_user_lifts(inserts: &mut Inserts, rows: &[&UserRow]) {
    let superseding: Vec<_> = rows.iter().filter_map(|r| r.supersedes()).collect();
    crate::tombstones::add_lift(inserts, &superseding)
}

/// Declares the insert of the rows' users.
fn declare_users(inserts: &mut Inserts, rows: &[&UserRow]) {
    inserts.insert(
        "users (id, org_id, email, email_normalized, display_name, external_id, active, password_hash, user_name, \
         user_name_normalized, scim_resource, external_id_normalized, created_at, updated_at, email_domain, role, \
         created_via, filter_data_written, display_name_normalized)",
        19,
        rows.len(),
    );
    for r in rows {
        let new = &r.new;
        inserts
            .bind(r.id.to_string())
            .bind(new.org_id.to_string())
            .bind(new.email.as_ref().map(|e| e.as_str().to_owned()))
            .bind(new.email.as_ref().map(|e| e.normalized().to_owned()))
            .bind(new.display_name.clone())
            .bind(new.external_id.clone())
            .bind(i64::from(new.active))
            .bind(new.password_hash.clone())
            .bind(new.user_name.clone())
            .bind(
                new.user_name
                    .as_ref()
                    .map(|n| n.to_lowercase())
                    .or_else(|| new.email.as_ref().map(|e| e.normalized().to_owned())),
            )
            .bind(new.scim_resource.clone())
            .bind(new.external_id.as_ref().map(|e| e.to_lowercase()))
            .bind(millis(r.now))
            .bind(millis(r.now))
            .bind(new.email.as_ref().map_or_else(String::new, |e| e.domain().to_owned()))
            .bind(new.role.as_str())
            .bind(new.created_via.as_str())
            .bind(1_i64)
            .bind(display_name_key(&new.display_name));
    }
}

/// A display name as filters and sorting compare it (migration 0017):
/// lower-cased as the SCIM matcher lowers it; none when it is empty, as
/// the SCIM resource then has no displayName.
fn display_name_key(name: &str) -> Option<String> {
    (!name.is_empty()).then(|| name.to_lowercase())
}

/// Replaces the email index rows of `users` (migration 0016) with what
/// they hold now, and marks them indexed.
async fn index_emails(conn: &mut AnyConnection, users: &[&User]) -> Result<()> {
    let listed = crate::in_json_strings(crate::backend_of(conn), 1);
    let statements = [
        format!("DELETE FROM user_emails WHERE user_id IN {listed}"),
        format!("UPDATE users SET filter_data_written = 1 WHERE id IN {listed}"),
    ];
    for chunk in users.chunks(500) {
        let ids: Vec<String> = chunk.iter().map(|user| user.id.to_string()).collect();
        let ids = crate::json_strings(&ids);
        for statement in &statements {
            sqlx::query(sqlx::AssertSqlSafe(statement.as_str())).bind(&ids).execute(&mut *conn).await?;
        }
        insert_email_index(conn, &email_index_rows(chunk)).await?;
    }
    Ok(())
}

/// Email index rows in one statement at most: six values each, far below
/// either backend's limit with the rest of a batch beside them.
const EMAIL_ROWS_PER_STATEMENT: usize = 1000;

/// One row of the email index: the user, the entry's position, the entry.
type EmailRow<'u> = (&'u User, usize, gatehouse_core::EmailIndexEntry);

/// The email index rows of `users`.
fn email_index_rows<'u>(users: &[&'u User]) -> Vec<EmailRow<'u>> {
    users
        .iter()
        .flat_map(|user| user.email_index().into_iter().enumerate().map(move |(i, entry)| (*user, i, entry)))
        .collect()
}

/// Declares the insert of email index `rows` in `inserts`.
fn add_email_index(inserts: &mut Inserts, rows: &[EmailRow<'_>]) {
    inserts.insert_new(
        "user_emails (user_id, position, org_id, value_normalized, type_normalized, is_primary)",
        6,
        rows.len(),
        "user_id, position",
    );
    for (user, position, entry) in rows {
        inserts
            .bind(user.id.to_string())
            .bind(*position as i64)
            .bind(user.org_id.to_string())
            .bind(entry.value.clone())
            .bind(entry.kind.clone())
            .bind(entry.primary.map(i64::from));
    }
}

/// Inserts email index `rows` that are not there yet, in statements of
/// their own. (Two nodes indexing the same old users as they start write
/// the same rows.)
async fn insert_email_index(conn: &mut AnyConnection, rows: &[EmailRow<'_>]) -> Result<()> {
    for chunk in rows.chunks(EMAIL_ROWS_PER_STATEMENT) {
        let mut inserts = Inserts::default();
        add_email_index(&mut inserts, chunk);
        inserts.execute_in(conn).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use gatehouse_core::{OrgId, UserId};

    use super::prefix_successor;
    use crate::StoreError;

    /// Two nodes that index the same old users as they start write the same
    /// rows: the second write skips them, and fails nothing.
    #[tokio::test]
    async fn indexing_emails_twice_keeps_one_row_each() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("e.db").display());
        let store = crate::Store::open(&url).await.unwrap();
        let org = store.create_org("A", false, chrono::DateTime::UNIX_EPOCH).await.unwrap();
        let new = super::NewUser {
            active: true,
            org_id: org.id,
            email: Some(gatehouse_core::Email::parse("ivy@example.com").unwrap()),
            display_name: "Ivy".into(),
            external_id: None,
            password_hash: None,
            user_name: None,
            scim_resource: Some(r#"{"emails":[{"value":"Ivy@example.com"},{"value":"i@home.test"}]}"#.into()),
            role: gatehouse_core::Role::Member,
            created_via: gatehouse_core::Origin::Scim,
        };
        let user = store.create_user(&new, chrono::DateTime::UNIX_EPOCH).await.unwrap();
        let mut conn = store.pool.acquire().await.unwrap();
        super::insert_email_index(&mut conn, &super::email_index_rows(&[&user])).await.unwrap();
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT value_normalized, position FROM user_emails ORDER BY position")
                .fetch_all(&mut *conn)
                .await
                .unwrap();
        assert_eq!(rows, [("ivy@example.com".to_owned(), 0), ("i@home.test".to_owned(), 1)]);
    }

    /// The reads that run on the caller's thread (`embedded`) and the same
    /// reads through the pool answer alike, for a user with everything a
    /// sign-in reads (groups, an SSO policy, REST settings, counters).
    #[tokio::test]
    async fn the_callers_thread_and_the_pool_read_alike() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("r.db").display());
        let store = crate::Store::open(&url).await.unwrap();
        let now = chrono::DateTime::UNIX_EPOCH;
        let org = store.create_org("A", true, now).await.unwrap();
        let email = gatehouse_core::Email::parse("Ivy@Example.com").unwrap();
        let new = super::NewUser {
            active: true,
            org_id: org.id,
            email: Some(email.clone()),
            display_name: "Ivy".into(),
            external_id: Some("ext-1".into()),
            password_hash: None,
            user_name: None,
            scim_resource: None,
            role: gatehouse_core::Role::Member,
            created_via: gatehouse_core::Origin::Scim,
        };
        let user = store.create_user(&new, now).await.unwrap();
        for name in ["Zeta", "alpha"] {
            let group = crate::GroupState {
                display_name: name.into(),
                external_id: None,
                scim_resource: None,
                members: vec![user.id],
            };
            store.create_group(org.id, &group, now).await.unwrap();
        }
        let policy = crate::SsoPolicy { sso_required: true, redirect_urls: vec![] };
        store.set_sso_policy(org.id, &policy, now).await.unwrap();
        store.enable_rest_auth(org.id, "sealed", now).await.unwrap();
        let rule = crate::ThrottleRule { limit: 1, window: chrono::Duration::minutes(5) };
        store.throttle_hit("account:ivy", rule, now).await.unwrap();
        let token = store.create_scim_token(org.id, "t", "okta", "hash", now).await.unwrap();

        let keys = ["account:ivy", "ip:none"];
        let before = store.readers.as_ref().unwrap().answered();
        let here = (
            store.find_user_for_login(&email, &keys).await.unwrap(),
            store.get_user(user.id).await.unwrap(),
            store.find_scim_token("hash").await.unwrap(),
        );
        assert_eq!(
            store.readers.as_ref().unwrap().answered() - before,
            3,
            "the reads ran on the caller's thread"
        );
        store.readers.as_ref().unwrap().close();
        let pooled = (
            store.find_user_for_login(&email, &keys).await.unwrap(),
            store.get_user(user.id).await.unwrap(),
            store.find_scim_token("hash").await.unwrap(),
        );
        assert_eq!(
            store.readers.as_ref().unwrap().answered() - before,
            3,
            "the second reads went through the pool"
        );
        assert_eq!(here, pooled);
        let account = here.0.account.unwrap();
        assert_eq!(account.user, user);
        assert_eq!(account.groups, ["Zeta", "alpha"], "sorted by bytes, as group_names_of sorts");
        assert!(account.sso_required);
        assert_eq!(account.rest_auth.as_deref(), Some("sealed"));
        assert_eq!(here.0.throttles.len(), 1);
        assert_eq!(here.0.throttles[0].key, "account:ivy");
        assert_eq!(here.2, Some((token, true)));
    }

    #[test]
    fn a_prefix_successor_bounds_every_string_with_the_prefix() {
        for (prefix, samples) in [
            ("bob", vec!["bob", "bob_1@x", "bob\u{10FFFF}", "bobz"]),
            ("élo", vec!["élodie", "élo\u{7f}"]),
            ("a\u{D7FF}", vec!["a\u{D7FF}", "a\u{D7FF}\u{10FFFF}"]),
        ] {
            let high = prefix_successor(prefix).unwrap();
            for s in samples {
                assert!(
                    s.as_bytes() >= prefix.as_bytes() && s.as_bytes() < high.as_bytes(),
                    "{s:?} within [{prefix:?}, {high:?})"
                );
            }
            assert!(!high.starts_with(prefix));
        }
        assert_eq!(prefix_successor("a\u{D7FF}").unwrap(), "a\u{E000}", "surrogates skipped");
        assert_eq!(prefix_successor("a\u{10FFFF}").unwrap(), "b");
        assert_eq!(prefix_successor("\u{10FFFF}"), None);
    }

    /// A batch of users answers the same by the embedded writer and by a
    /// `ReadThenWrite` transaction through the pool: the rows written, a
    /// duplicate a conflict, a missing organization not found, a domain
    /// another organization verified refused, a deletion lifted and
    /// counted; and a failed batch leaves nothing behind.
    #[tokio::test]
    async fn a_batch_of_users_answers_alike_on_the_writer_and_through_the_pool() {
        for embedded in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}?mode=rwc", dir.path().join("u.db").display());
            let mut store = crate::Store::open(&url).await.unwrap();
            let writer = store.writer.clone().unwrap();
            if !embedded {
                store.writer = None;
            }
            let now = chrono::DateTime::UNIX_EPOCH;
            let org = store.create_org("A", true, now).await.unwrap();
            let other = store.create_org("B", true, now).await.unwrap();
            store.add_domain(other.id, "owned.test", "challenge", now).await.unwrap();
            store.mark_domain_verified(other.id, "owned.test", "dns", now).await.unwrap();
            let new = |org_id: OrgId, email: &str| super::NewUser {
                active: true,
                org_id,
                email: Some(gatehouse_core::Email::parse(email).unwrap()),
                display_name: "Ivy".into(),
                external_id: Some("ext-1".into()),
                password_hash: None,
                user_name: None,
                scim_resource: Some(format!(r#"{{"emails":[{{"value":"{email}"}}]}}"#)),
                role: gatehouse_core::Role::Member,
                created_via: gatehouse_core::Origin::Scim,
            };
            let row = |new: super::NewUser, lift: bool| {
                let mut row = super::UserRow::new(UserId::new(), new, None, now);
                row.lift_tombstones = lift;
                row
            };
            // A user SCIM deleted leaves a tombstone, which creating it
            // again through SCIM lifts.
            let first = store.create_user(&new(org.id, "ivy@example.com"), now).await.unwrap();
            store.delete_user_tombstoned(first.id, now).await.unwrap();
            let committed = writer.committed();

            let ivy = row(new(org.id, "ivy@example.com"), true);
            let duplicate = row(new(org.id, "IVY@example.com"), false);
            let e = store.write_users(&[&ivy, &duplicate]).await.unwrap_err();
            assert!(
                matches!(e, StoreError::Conflict("a user with this email or userName")),
                "{embedded}: {e}"
            );
            assert!(matches!(store.get_user(ivy.id).await, Err(StoreError::NotFound)), "{embedded}");

            let nowhere = row(new(OrgId::new(), "ivy@example.com"), false);
            let e = store.write_users(&[&nowhere]).await.unwrap_err();
            assert!(matches!(e, StoreError::NotFound), "{embedded}: {e}");

            let owned = row(new(org.id, "ivy@sales.owned.test"), false);
            let e = store.write_users(&[&owned]).await.unwrap_err();
            assert!(matches!(&e, StoreError::DomainOwned(d) if d == "owned.test"), "{embedded}: {e}");

            let lifted = store.write_users(&[&ivy]).await.unwrap();
            assert_eq!(lifted, [1], "{embedded}");
            let stored = store.get_user(ivy.id).await.unwrap();
            assert_eq!(stored.email.as_ref().map(|e| e.as_str()), Some("ivy@example.com"), "{embedded}");
            let indexed: Vec<String> =
                sqlx::query_scalar("SELECT value_normalized FROM user_emails WHERE user_id = $1")
                    .bind(ivy.id.to_string())
                    .fetch_all(&store.pool)
                    .await
                    .unwrap();
            assert_eq!(indexed, ["ivy@example.com"], "{embedded}");
            assert_eq!(writer.committed() - committed, usize::from(embedded), "{embedded}");
        }
    }
}
