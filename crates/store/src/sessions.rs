use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use gatehouse_core::{AuthMethod, Device, IdpGroups, OrgId, SessionId, User, UserId};
use sqlx::AnyConnection;

use crate::columns::{Columns, aliased, prefixed};
use crate::embedded_writer::{OnWriter, at_once};
use crate::inserts::Inserts;
use crate::read_then_write::{ReadRows, ReadThenWrite};
use crate::{Backend, NewAuditEvent, Result, Store, StoreError, from_millis, millis, parse_id};

#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: SessionId,
    pub user_id: UserId,
    pub org_id: OrgId,
    pub auth_method: AuthMethod,
    pub device: Device,
    /// The absolute end of the session: refreshing never extends it.
    pub expires_at: DateTime<Utc>,
    /// What the identity provider asserted about groups, for single sign-on.
    pub idp_groups: Option<IdpGroups>,
    /// For a browser's session, the hash of the opaque token in its cookie.
    pub browser_token_hash: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: SessionId,
    pub user_id: UserId,
    pub org_id: OrgId,
    pub auth_method: AuthMethod,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub idp_groups: Option<IdpGroups>,
}

impl SessionRecord {
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at > now
    }
}

/// What presenting a refresh token led to.
#[derive(Debug)]
pub enum RefreshOutcome {
    /// The token was current: it is now spent and the new one stored. With
    /// the user, the names of the SCIM groups they belong to, sorted.
    Rotated { session: SessionRecord, user: Box<User>, groups: Vec<String> },
    /// The token had already been rotated. Someone holds a copy, so the whole
    /// session has been revoked.
    Reused { session_id: SessionId },
    /// Unknown token, or a session that is revoked, expired, or whose user is
    /// inactive.
    Invalid,
}

fn session_from_row<R: Columns + ?Sized>(row: &R) -> Result<SessionRecord> {
    let method = row.text("auth_method")?;
    Ok(SessionRecord {
        id: parse_id(&row.text("id")?)?,
        user_id: parse_id(&row.text("user_id")?)?,
        org_id: parse_id(&row.text("org_id")?)?,
        auth_method: AuthMethod::parse(&method)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown auth method {method:?}")))?,
        created_at: from_millis(row.int("created_at")?),
        expires_at: from_millis(row.int("expires_at")?),
        revoked_at: row.int_opt("revoked_at")?.map(from_millis),
        idp_groups: read_idp_groups(row.text_opt("idp_groups")?)?,
    })
}

/// The stored form of [`IdpGroups`]: JSON text.
pub(crate) fn write_idp_groups(groups: Option<&IdpGroups>) -> Option<String> {
    groups.map(|g| serde_json::to_string(g).unwrap_or_default())
}

pub(crate) fn read_idp_groups(text: Option<String>) -> Result<Option<IdpGroups>> {
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(format!("a session's IdP groups: {e}")))
    })
    .transpose()
}

const COLUMNS: &str = "id, user_id, org_id, auth_method, created_at, expires_at, revoked_at, idp_groups";

impl Store {
    /// Stores a new session with its first refresh token and, when given, the
    /// audit event of the sign-in that opened it: one transaction, so neither
    /// exists without the other. (Concurrent calls share transactions; see
    /// `session_writer`.)
    pub async fn create_session(
        &self,
        new: &NewSession,
        refresh_hash: &str,
        audit: Option<&NewAuditEvent>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let row = SessionRow {
            session: new.clone(),
            refresh_hash: refresh_hash.to_owned(),
            audit: audit.cloned(),
            now,
        };
        crate::group_commit::submit(self, self.session_writer.as_ref(), row).await
    }

    /// Writes the sessions, their first refresh tokens and their sign-in
    /// events: three multi-row inserts, all or none, in one round trip.
    async fn write_sessions(&self, rows: &[&SessionRow]) -> Result<()> {
        let mut inserts = Inserts::default();
        let audits: Vec<(&NewAuditEvent, DateTime<Utc>)> =
            rows.iter().filter_map(|r| r.audit.as_ref().map(|a| (a, r.now))).collect();
        crate::audit::add_audit_events(&mut inserts, &audits);
        inserts.insert(
            "sessions (id, user_id, org_id, auth_method, device_os, device_name, device_ip, created_at, expires_at, \
             idp_groups, browser_token_hash)",
            11,
            rows.len(),
        );
        for r in rows {
            let new = &r.session;
            inserts
                .bind(new.id.to_string())
                .bind(new.user_id.to_string())
                .bind(new.org_id.to_string())
                .bind(new.auth_method.as_str())
                .bind(new.device.os.clone())
                .bind(new.device.name.clone())
                .bind(new.device.ip.map(|ip| ip.to_string()))
                .bind(millis(r.now))
                .bind(millis(new.expires_at))
                .bind(write_idp_groups(new.idp_groups.as_ref()))
                .bind(new.browser_token_hash.clone());
        }
        inserts.insert("refresh_tokens (token_hash, session_id, created_at)", 3, rows.len());
        for r in rows {
            inserts.bind(r.refresh_hash.clone()).bind(r.session.id.to_string()).bind(millis(r.now));
        }
        self.apply(inserts).await
    }

    /// The session whose browser token hashes to `hash`, with its user,
    /// live or not (the caller judges).
    pub async fn browser_session(&self, hash: &str) -> Result<Option<(SessionRecord, User)>> {
        let sql = format!("SELECT {COLUMNS} FROM sessions WHERE browser_token_hash = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(hash).fetch_optional(&self.pool).await?;
        let Some(row) = row else { return Ok(None) };
        let session = session_from_row(&row)?;
        let user = match self.get_user(session.user_id).await {
            Ok(user) => user,
            Err(StoreError::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some((session, user)))
    }

    pub async fn get_session(&self, id: SessionId) -> Result<SessionRecord> {
        let sql = format!("SELECT {COLUMNS} FROM sessions WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        session_from_row(&row)
    }

    /// Spends the refresh token `presented_hash` and stores `new_hash` in its
    /// place, in one transaction.
    ///
    /// The spend is a conditional update, so of two concurrent refreshes with
    /// the same token exactly one wins; the other is treated as reuse.
    /// Concurrent rotations share transactions (see `rotation_writer`); the
    /// outcome of each is what it would be had they run one after another.
    pub async fn rotate_refresh_token(
        &self,
        presented_hash: &str,
        new_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<RefreshOutcome> {
        let row = Rotation { presented: presented_hash.to_owned(), new_hash: new_hash.to_owned(), now };
        crate::group_commit::submit(self, self.rotation_writer.as_ref(), row).await
    }

    /// Rotates the refresh tokens of `rows`, in their order: one read for
    /// the whole batch (the tokens joined to their sessions, the sessions'
    /// users and those users' groups), then one conditional update that
    /// spends the winners, one insert of their successors, and the end of
    /// each session that a reuse revokes (rare: it means a stolen token).
    /// On a SQLite file the whole batch is one job of the embedded writer
    /// (`embedded_writer`), read and writes on its thread with no hand-off
    /// between them; on PostgreSQL one statement, or for a batch whose rows
    /// touch each other the read and one statement (`rotate_on_postgres`);
    /// on SQLite otherwise a `ReadThenWrite`
    /// transaction. On SQLite the write lock is held from the read on, so
    /// no other writer can spend a token between them.
    async fn write_rotations(&self, rows: &[&Rotation]) -> Result<Vec<RefreshOutcome>> {
        if let Some(writer) = &self.writer {
            let rows: Vec<Rotation> = rows.iter().map(|row| (*row).clone()).collect();
            return writer.transaction(move |conn| rotate_on(conn, &rows)).await;
        }
        if self.backend == Backend::Postgres {
            return self.rotate_on_postgres(rows).await;
        }
        let mut tx = ReadThenWrite::begin(self, self.lease_to_write().await?).await?;
        let presented = distinct(rows.iter().map(|r| r.presented.clone()));
        let read = read_presented(&mut tx, &presented).await;
        let read = tx.or_roll_back(read).await?;
        let (plan, revoked) = decide(rows, &read);
        let winners = winners(rows, &plan);
        let mut writes = Inserts::default();
        add_rotation_writes(&mut writes, rows, &plan, &revoked);
        // Last, so that its rows are the ones that come back.
        add_spend(&mut writes, &winners);
        let spent_now = tx.commit_with(writes).await?;
        debug_assert_eq!(
            spent_now.len(),
            winners.len(),
            "under the write lock every winner read unspent is spent"
        );
        Ok(outcomes(plan, &read))
    }

    /// A batch of rotations on PostgreSQL. The usual batch, in which no
    /// token is presented twice and no two tokens belong to one session, is
    /// one statement ([`rotate_at_once_sql`]): its rows cannot touch each
    /// other, so deciding each on its own, as the statement does, is
    /// deciding them in order. Any other batch is the read, then all it
    /// decided as one statement ([`ROTATE_ON_POSTGRES`]); the one-statement
    /// form finds a clash of sessions only in what it reads, and then
    /// writes nothing, so its read serves the second step.
    ///
    /// Either way another node may spend a token between the read and the
    /// spend, as it could inside a transaction (each statement of
    /// PostgreSQL's READ COMMITTED reads afresh; within one statement, the
    /// spend's row lock re-checks the row). The spend takes only what is
    /// still unspent, successors are written for exactly what it spent,
    /// and each winner that found its token spent ends its session: that
    /// row lost the race, and is a reuse, as if the rows had run one after
    /// another (`tests/two_nodes.rs`). One statement is atomic, so a
    /// successor is never written without its spend, nor a reuse without
    /// the end of its session.
    async fn rotate_on_postgres(&self, rows: &[&Rotation]) -> Result<Vec<RefreshOutcome>> {
        let mut lease = self.lease().await?;
        let presented = distinct(rows.iter().map(|r| r.presented.clone()));
        let (read, spent) = if presented.len() == rows.len() {
            let batch: Vec<serde_json::Value> = rows
                .iter()
                .map(|row| serde_json::json!([row.presented, millis(row.now), row.new_hash]))
                .collect();
            let batch = serde_json::Value::from(batch).to_string();
            let found = lease.rows(rotate_at_once_sql(), &[batch.as_str(), REUSED], at_once_row).await?;
            let clashed = found.first().is_some_and(|row| row.clashed);
            let spent: HashSet<String> =
                found.iter().filter(|row| row.spent).map(|row| row.hash().to_owned()).collect();
            (
                Presented::from_rows(found.into_iter().map(|row| row.read).collect()),
                (!clashed).then_some(spent),
            )
        } else {
            (read_presented(&mut *lease, &presented).await?, None)
        };
        let (mut plan, revoked) = decide(rows, &read);
        let spent = match spent {
            Some(spent) => spent,
            None => spend_on_postgres(&mut lease, rows, &plan, &revoked).await?,
        };
        lease.finish();
        debug_assert!(
            spent.iter().all(|hash| {
                rows.iter()
                    .zip(&plan)
                    .any(|(row, step)| matches!(step, Step::Rotate(..)) && row.presented == *hash)
            }),
            "a statement spends only what the plan rotates"
        );
        for (row, step) in rows.iter().zip(plan.iter_mut()) {
            if let Step::Rotate(session, _) = step
                && !spent.contains(&row.presented)
            {
                *step = Step::Reused(session.id);
            }
        }
        Ok(outcomes(plan, &read))
    }

    /// Ends the session the refresh token belongs to. Returns whether there
    /// was such a live session.
    ///
    /// One statement, atomic on either backend: the token's session found
    /// and ended in one round trip, where a transaction around a read and
    /// an update took four.
    pub async fn revoke_by_refresh_token(&self, hash: &str, now: DateTime<Utc>) -> Result<bool> {
        let _turn = self.write_turn().await;
        let done = sqlx::query(
            "UPDATE sessions SET revoked_at = $2, revoked_reason = 'logout' \
             WHERE id = (SELECT session_id FROM refresh_tokens WHERE token_hash = $1) AND revoked_at IS NULL",
        )
        .bind(hash)
        .bind(millis(now))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

impl Store {
    /// Ends session `id` (a browser signing out). Returns whether it was
    /// live.
    pub async fn revoke_session(&self, id: SessionId, reason: &str, now: DateTime<Utc>) -> Result<bool> {
        let _turn = self.write_turn().await;
        let mut conn = self.pool.acquire().await?;
        revoke_session(&mut conn, id, reason, now).await
    }
}

/// One presented refresh token to rotate.
#[derive(Debug, Clone)]
pub(crate) struct Rotation {
    presented: String,
    new_hash: String,
    now: DateTime<Utc>,
}

/// What a batch decided for one rotation before writing.
enum Step<'a> {
    Invalid,
    Reused(SessionId),
    Rotate(&'a SessionRecord, &'a User),
}

impl crate::group_commit::BatchRow for Rotation {
    type Outcome = RefreshOutcome;

    fn write<'a>(
        store: &'a Store,
        rows: &'a [&'a Self],
    ) -> crate::group_commit::BatchFuture<'a, RefreshOutcome> {
        Box::pin(store.write_rotations(rows))
    }
}

/// `items` without repeats, in first-seen order.
fn distinct<T: Eq + std::hash::Hash + Clone>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut seen = HashSet::new();
    items.filter(|item| seen.insert(item.clone())).collect()
}

/// What a batch of rotations reads: the presented tokens (their session
/// and whether they were spent), those sessions, their users and the
/// users' group names.
#[derive(Default)]
struct Presented {
    tokens: HashMap<String, (SessionId, bool)>,
    sessions: HashMap<SessionId, SessionRecord>,
    users: HashMap<UserId, User>,
    groups: HashMap<UserId, Vec<String>>,
}

/// Reads [`Presented`] for the tokens hashed `hashes` in one query: each
/// token joined to its session and the session's user. (As four queries,
/// one per table, a batch was four round trips; on SQLite each a hand-off
/// to the connection's thread and back.)
async fn read_presented(tx: &mut impl ReadRows, hashes: &[String]) -> Result<Presented> {
    if hashes.is_empty() {
        return Ok(Presented::default());
    }
    let list = crate::json_strings(hashes);
    let found = tx.rows(&presented_sql(tx.backend()), &[list.as_str()], presented_row).await?;
    Ok(Presented::from_rows(found))
}

/// The query of [`read_presented`]; its one parameter is the hashes as a
/// JSON array.
fn presented_sql(backend: Backend) -> String {
    format!(
        "SELECT {columns} FROM refresh_tokens t {PRESENTED_JOINS} WHERE t.token_hash IN {list}",
        columns = presented_columns(backend),
        list = crate::in_json_strings(backend, 1),
    )
}

/// What [`presented_row`] reads: a token (`t`) with its session (`s`),
/// the session's user (`u`) and their groups, joined by
/// [`PRESENTED_JOINS`].
fn presented_columns(backend: Backend) -> String {
    format!(
        "t.token_hash, t.session_id AS token_session, t.rotated_at, {sessions}, {users}, {groups} AS u_group_names",
        sessions = aliased(COLUMNS, "s", "s_"),
        users = crate::users::columns_aliased("u", "u_"),
        groups = crate::users::group_names_json(backend, "u.id"),
    )
}

/// A token's session and the session's user, for [`presented_columns`].
const PRESENTED_JOINS: &str =
    "LEFT JOIN sessions s ON s.id = t.session_id LEFT JOIN users u ON u.id = s.user_id";

/// One row of [`presented_sql`]: a token (its hash, its session, whether
/// it was spent), with its session if there is one, and the session's user
/// and their groups if there is one.
type PresentedRow = ((String, SessionId, bool), Option<(SessionRecord, Option<(User, Vec<String>)>)>);

fn presented_row(row: &dyn Columns) -> Result<PresentedRow> {
    let session: SessionId = parse_id(&row.text("token_session")?)?;
    let token = (row.text("token_hash")?, session, row.int_opt("rotated_at")?.is_some());
    if row.text_opt("s_id")?.is_none() {
        return Ok((token, None));
    }
    let record = session_from_row(&prefixed(row, "s_"))?;
    if row.text_opt("u_id")?.is_none() {
        return Ok((token, Some((record, None))));
    }
    let user = crate::users::user_from_row(&prefixed(row, "u_"))?;
    let groups: Vec<String> = serde_json::from_str(&row.text("u_group_names")?)
        .map_err(|e| StoreError::Corrupt(format!("group names of a refreshing user: {e}")))?;
    Ok((token, Some((record, Some((user, groups))))))
}

impl Presented {
    fn from_rows(found: Vec<PresentedRow>) -> Self {
        let mut read = Presented::default();
        for ((hash, session, rotated), record) in found {
            read.tokens.insert(hash, (session, rotated));
            let Some((record, user)) = record else { continue };
            read.sessions.insert(session, record);
            let Some((user, groups)) = user else { continue };
            read.groups.insert(user.id, groups);
            read.users.insert(user.id, user);
        }
        read
    }
}

/// A batch of rotations on the embedded writer's connection, inside its
/// transaction: its write lock is held from the read on, so no other
/// writer can spend a token between them, and the spend goes with the
/// other writes.
fn rotate_on(conn: &rusqlite::Connection, rows: &[Rotation]) -> Result<Vec<RefreshOutcome>> {
    let rows: Vec<&Rotation> = rows.iter().collect();
    let presented = distinct(rows.iter().map(|r| r.presented.clone()));
    let read = at_once(read_presented(&mut OnWriter(conn), &presented))?;
    let (plan, revoked) = decide(&rows, &read);
    let winners = winners(&rows, &plan);
    let mut writes = Inserts::default();
    add_rotation_writes(&mut writes, &rows, &plan, &revoked);
    add_spend(&mut writes, &winners);
    let spent = writes.run(conn, |_| Ok(()))?;
    debug_assert_eq!(spent.len(), winners.len(), "under the write lock every winner read unspent is spent");
    Ok(outcomes(plan, &read))
}

/// Decides each row as if the rows ran one after another: a token spent
/// by an earlier row is reused by a later one, and a session that an
/// earlier row revoked is dead for later ones. Returns each row's step and
/// the sessions that reuses revoke, with when.
fn decide<'a>(
    rows: &[&'a Rotation],
    read: &'a Presented,
) -> (Vec<Step<'a>>, HashMap<SessionId, DateTime<Utc>>) {
    let Presented { tokens, sessions, users, .. } = read;
    let mut spent: HashSet<&str> =
        tokens.iter().filter(|(_, (_, rotated))| *rotated).map(|(hash, _)| hash.as_str()).collect();
    let mut revoked: HashMap<SessionId, DateTime<Utc>> = HashMap::new();
    let mut plan = Vec::with_capacity(rows.len());
    for row in rows {
        let step = match tokens.get(&row.presented).and_then(|(id, _)| sessions.get(id)) {
            None => Step::Invalid,
            Some(session) if !session.is_live(row.now) || revoked.contains_key(&session.id) => Step::Invalid,
            Some(session) if spent.contains(row.presented.as_str()) => {
                revoked.insert(session.id, row.now);
                Step::Reused(session.id)
            }
            Some(session) => match users.get(&session.user_id) {
                Some(user) if user.active => {
                    spent.insert(row.presented.as_str());
                    Step::Rotate(session, user)
                }
                _ => Step::Invalid,
            },
        };
        plan.push(step);
    }
    (plan, revoked)
}

/// The rows whose step is to rotate.
fn winners<'a>(rows: &[&'a Rotation], plan: &[Step<'_>]) -> Vec<&'a Rotation> {
    rows.iter().zip(plan).filter(|(_, step)| matches!(step, Step::Rotate(..))).map(|(r, _)| *r).collect()
}

/// Declares the winners' successor tokens and the revocations of the
/// sessions that reuses revoke.
fn add_rotation_writes(
    writes: &mut Inserts,
    rows: &[&Rotation],
    plan: &[Step<'_>],
    revoked: &HashMap<SessionId, DateTime<Utc>>,
) {
    let rotated = plan.iter().filter(|step| matches!(step, Step::Rotate(..))).count();
    writes.insert("refresh_tokens (token_hash, session_id, created_at)", 3, rotated);
    for (row, step) in rows.iter().zip(plan) {
        if let Step::Rotate(session, _) = step {
            writes.bind(row.new_hash.clone()).bind(session.id.to_string()).bind(millis(row.now));
        }
    }
    for (session, at) in revoked {
        add_revoke(writes, *session, REUSED, *at);
    }
}

/// What each row's caller is told.
fn outcomes(plan: Vec<Step<'_>>, read: &Presented) -> Vec<RefreshOutcome> {
    plan.into_iter()
        .map(|step| match step {
            Step::Invalid => RefreshOutcome::Invalid,
            Step::Reused(session_id) => RefreshOutcome::Reused { session_id },
            Step::Rotate(session, user) => RefreshOutcome::Rotated {
                session: session.clone(),
                user: Box::new(user.clone()),
                groups: read.groups.get(&user.id).cloned().unwrap_or_default(),
            },
        })
        .collect()
}

/// Declares the spending of the presented tokens of `rows`, each at its
/// row's time, where no one has yet; the statement returns the hashes it
/// spent.
fn add_spend(writes: &mut Inserts, rows: &[&Rotation]) {
    if rows.is_empty() {
        return;
    }
    // `CASE token_hash WHEN ? THEN ? …` gives each token its own time; the
    // hashes are listed again for the index.
    writes.statement(
        format!(
            "UPDATE refresh_tokens SET rotated_at = CASE token_hash{} END \
             WHERE token_hash IN ({}) AND rotated_at IS NULL RETURNING token_hash",
            " WHEN ? THEN ?".repeat(rows.len()),
            vec!["?"; rows.len()].join(", ")
        ),
        3 * rows.len(),
    );
    for row in rows {
        writes.bind(row.presented.clone()).bind(millis(row.now));
    }
    for row in rows {
        writes.bind(row.presented.clone());
    }
}

/// Writes what a batch of rotations on PostgreSQL decided from its read,
/// as [`ROTATE_ON_POSTGRES`], and returns the hashes it spent.
async fn spend_on_postgres(
    conn: &mut AnyConnection,
    rows: &[&Rotation],
    plan: &[Step<'_>],
    revoked: &HashMap<SessionId, DateTime<Utc>>,
) -> Result<HashSet<String>> {
    let winners: Vec<serde_json::Value> = rows
        .iter()
        .zip(plan)
        .filter_map(|(row, step)| match step {
            Step::Rotate(session, _) => Some(serde_json::json!([
                row.presented,
                millis(row.now),
                row.new_hash,
                session.id.to_string()
            ])),
            _ => None,
        })
        .collect();
    let ended: Vec<serde_json::Value> =
        revoked.iter().map(|(id, at)| serde_json::json!([id.to_string(), millis(*at)])).collect();
    if winners.is_empty() && ended.is_empty() {
        return Ok(HashSet::new());
    }
    sqlx::query(ROTATE_ON_POSTGRES)
        .bind(serde_json::Value::from(winners).to_string())
        .bind(serde_json::Value::from(ended).to_string())
        .bind(REUSED)
        .fetch_all(conn)
        .await?
        .iter()
        .map(|row| row.text("token_hash"))
        .collect()
}

/// [`Store::rotate_on_postgres`]'s statement for a batch that presents no
/// token twice. `$1` is the rows, each `[presented hash, time, successor's
/// hash]`; `$2` the reason a reuse ends a session. It reads each token
/// with its session, the session's user and their groups, as
/// [`presented_sql`] does. If two of the tokens belong to one session
/// (`clashed`), the rows are not independent, and it writes nothing.
/// Otherwise, of the tokens whose session is live at their row's time, it
/// spends each unspent one whose user is active, where it is still
/// unspent, inserts a successor for each token it spent, and ends the
/// session of each token that was spent already (a reuse) and of each it
/// meant to spend and found spent (a race lost to another node). It
/// returns every token it read, whether it spent it (`spent_now`) and
/// `clashed`. As in [`ROTATE_ON_POSTGRES`], its parts see one snapshot.
fn rotate_at_once_sql() -> &'static str {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "WITH batch AS (\
            SELECT b.v ->> 0 AS presented, (b.v ->> 1)::bigint AS at, b.v ->> 2 AS successor \
            FROM json_array_elements($1::json) AS b(v)), \
        found AS (\
            SELECT batch.at, batch.successor, {columns} \
            FROM batch JOIN refresh_tokens t ON t.token_hash = batch.presented {PRESENTED_JOINS}), \
        clash AS (SELECT count(s_id) <> count(DISTINCT s_id) AS clashed FROM found), \
        live AS (\
            SELECT * FROM found \
            WHERE NOT (SELECT clashed FROM clash) AND s_revoked_at IS NULL AND s_expires_at > at), \
        spent AS (\
            UPDATE refresh_tokens AS t SET rotated_at = live.at FROM live \
            WHERE t.token_hash = live.token_hash AND live.rotated_at IS NULL AND live.u_active = 1 \
              AND t.rotated_at IS NULL \
            RETURNING t.token_hash), \
        successors AS (\
            INSERT INTO refresh_tokens (token_hash, session_id, created_at) \
            SELECT successor, s_id, at FROM live WHERE token_hash IN (SELECT token_hash FROM spent)), \
        ended AS (\
            UPDATE sessions AS s SET revoked_at = live.at, revoked_reason = $2 FROM live \
            WHERE s.id = live.s_id AND s.revoked_at IS NULL \
              AND (live.rotated_at IS NOT NULL \
                OR (live.u_active = 1 AND live.token_hash NOT IN (SELECT token_hash FROM spent)))) \
        SELECT found.*, (SELECT clashed FROM clash)::int::bigint AS clashed, \
          (found.token_hash IN (SELECT token_hash FROM spent))::int::bigint AS spent_now \
        FROM found",
            columns = presented_columns(Backend::Postgres),
        )
    });
    &SQL
}

/// One row of [`rotate_at_once_sql`].
struct AtOnceRow {
    read: PresentedRow,
    /// Whether two tokens of the batch belong to one session (so nothing
    /// was written).
    clashed: bool,
    /// Whether the statement spent this token.
    spent: bool,
}

impl AtOnceRow {
    /// The token's hash.
    fn hash(&self) -> &str {
        &self.read.0.0
    }
}

fn at_once_row(row: &dyn Columns) -> Result<AtOnceRow> {
    Ok(AtOnceRow {
        read: presented_row(row)?,
        clashed: row.int("clashed")? != 0,
        spent: row.int("spent_now")? != 0,
    })
}

/// Why a reuse ends a session, in its row.
const REUSED: &str = "refresh token reused";

/// [`Store::rotate_on_postgres`]'s statement after its read, for a batch
/// whose rows touch each other. `$1` is the winners, each
/// `[presented hash, time, successor's hash, session id]`; `$2` the
/// sessions that reuses the read found end, each `[session id, time]`; `$3`
/// the reason a reuse ends a session. It spends each winner's token where
/// it is still unspent, inserts a successor for each token it spent, ends
/// the sessions in `$2` and those of the winners whose token it found
/// spent (each at its earliest time, if still live), and returns the
/// hashes it spent. Its parts see one snapshot, and a part learns what
/// another wrote only from its `RETURNING` (`spent`): the token index is
/// used for the spend and the key of `sessions` for the ends, whatever
/// the batch (the plan is generic once the statement has run a few times).
const ROTATE_ON_POSTGRES: &str = "\
    WITH winners AS (\
        SELECT w.v ->> 0 AS presented, (w.v ->> 1)::bigint AS at, w.v ->> 2 AS successor, w.v ->> 3 AS session_id \
        FROM json_array_elements($1::json) AS w(v)), \
    spent AS (\
        UPDATE refresh_tokens AS t SET rotated_at = winners.at FROM winners \
        WHERE t.token_hash = winners.presented AND t.rotated_at IS NULL RETURNING t.token_hash), \
    successors AS (\
        INSERT INTO refresh_tokens (token_hash, session_id, created_at) \
        SELECT successor, session_id, at FROM winners WHERE presented IN (SELECT token_hash FROM spent)), \
    ended AS (\
        UPDATE sessions AS s SET revoked_at = e.at, revoked_reason = $3 \
        FROM (SELECT id, min(at) AS at FROM (\
                SELECT r.v ->> 0 AS id, (r.v ->> 1)::bigint AS at FROM json_array_elements($2::json) AS r(v) \
                UNION ALL \
                SELECT session_id, at FROM winners WHERE presented NOT IN (SELECT token_hash FROM spent)\
            ) AS u GROUP BY id) AS e \
        WHERE s.id = e.id AND s.revoked_at IS NULL) \
    SELECT token_hash FROM spent";

/// Declares the end of session `id`, if it is still live.
fn add_revoke(writes: &mut Inserts, id: SessionId, reason: &str, now: DateTime<Utc>) {
    writes.statement(
        "UPDATE sessions SET revoked_at = ?, revoked_reason = ? WHERE id = ? AND revoked_at IS NULL".into(),
        3,
    );
    writes.bind(millis(now)).bind(reason.to_owned()).bind(id.to_string());
}

async fn revoke_session(
    conn: &mut AnyConnection,
    id: SessionId,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE sessions SET revoked_at = $2, revoked_reason = $3 WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind(id.to_string())
    .bind(millis(now))
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub(crate) async fn revoke_user_sessions(
    conn: &mut AnyConnection,
    user: UserId,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<u64> {
    let done = sqlx::query(
        "UPDATE sessions SET revoked_at = $2, revoked_reason = $3 WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(user.to_string())
    .bind(millis(now))
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// Ends the live sessions of the organization's users that were signed in
/// by `method`.
pub(crate) async fn revoke_org_sessions_by_method(
    conn: &mut AnyConnection,
    org: OrgId,
    method: AuthMethod,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<u64> {
    let done = sqlx::query(
        "UPDATE sessions SET revoked_at = $3, revoked_reason = $4 \
         WHERE org_id = $1 AND auth_method = $2 AND revoked_at IS NULL",
    )
    .bind(org.to_string())
    .bind(method.as_str())
    .bind(millis(now))
    .bind(reason.to_owned())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// What one new session writes.
#[derive(Debug, Clone)]
pub(crate) struct SessionRow {
    session: NewSession,
    refresh_hash: String,
    audit: Option<NewAuditEvent>,
    now: DateTime<Utc>,
}

impl crate::group_commit::BatchRow for SessionRow {
    type Outcome = ();

    fn write<'a>(store: &'a Store, rows: &'a [&'a Self]) -> crate::group_commit::BatchFuture<'a, ()> {
        Box::pin(async move {
            store.write_sessions(rows).await?;
            Ok(vec![(); rows.len()])
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use gatehouse_core::{Email, Origin, Role};

    use super::*;
    use crate::NewUser;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 4, 12, 0, 0).unwrap()
    }

    /// A member of `org`, signed up by an administrator.
    fn member(org: OrgId, email: &str, active: bool) -> NewUser {
        NewUser {
            active,
            org_id: org,
            email: Some(Email::parse(email).unwrap()),
            display_name: email.into(),
            external_id: None,
            password_hash: None,
            user_name: None,
            scim_resource: None,
            role: Role::Member,
            created_via: Origin::Admin,
        }
    }

    /// An app's session for `user`, ending at `expires_at`.
    fn app_session(user: &User, expires_at: DateTime<Utc>) -> NewSession {
        NewSession {
            id: SessionId::new(),
            user_id: user.id,
            org_id: user.org_id,
            auth_method: AuthMethod::LocalPassword,
            device: Device::default(),
            expires_at,
            idp_groups: None,
            browser_token_hash: None,
        }
    }

    /// A store on `url` (a fresh database), with an organization and one
    /// active user.
    async fn with_a_user(url: &str) -> (Store, gatehouse_core::Organization, User) {
        let store = Store::open(url).await.unwrap();
        let org = store.create_org("A", false, at()).await.unwrap();
        let user = store.create_user(&member(org.id, "ivy@example.com", true), at()).await.unwrap();
        (store, org, user)
    }

    /// A store on a database file, with an organization and one user.
    async fn store_with_a_user() -> (tempfile::TempDir, Store, gatehouse_core::Organization, User) {
        let dir = tempfile::tempdir().unwrap();
        let (store, org, user) =
            with_a_user(&format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display())).await;
        (dir, store, org, user)
    }

    /// One batch handed to the writer directly, so that the rows are sure to
    /// share it (concurrent callers only usually do): its rows are decided in
    /// order, as if each ran after the one before.
    ///
    /// Both ways: by the embedded writer, and as a `ReadThenWrite`
    /// transaction, as a store without one writes it.
    #[tokio::test]
    async fn a_batch_decides_its_rows_in_order() {
        a_batch_decides_its_rows_in_order_on(true).await;
        a_batch_decides_its_rows_in_order_on(false).await;
    }

    async fn a_batch_decides_its_rows_in_order_on(embedded: bool) {
        let (_dir, mut store, _, user) = store_with_a_user().await;
        let writer = store.writer.clone().unwrap();
        if !embedded {
            store.writer = None;
        }
        let now = at();
        let mut sessions = Vec::new();
        for token in ["a-1", "b-1"] {
            let session = app_session(&user, now + chrono::Duration::days(1));
            store.create_session(&session, token, None, now).await.unwrap();
            sessions.push(session.id);
        }
        // Session a: its token twice, then its successor. Session b: its
        // token, then the same token again.
        let rotation = |presented: &str, new_hash: &str| Rotation {
            presented: presented.into(),
            new_hash: new_hash.into(),
            now,
        };
        let rows =
            [rotation("a-1", "a-2"), rotation("a-1", "a-3"), rotation("a-2", "a-4"), rotation("b-1", "b-2")];
        let refs: Vec<&Rotation> = rows.iter().collect();
        let committed = writer.committed();
        let outcomes = store.write_rotations(&refs).await.unwrap();
        assert_eq!(
            writer.committed() - committed,
            usize::from(embedded),
            "written by the embedded writer or not"
        );
        assert!(matches!(&outcomes[0], RefreshOutcome::Rotated { session, .. } if session.id == sessions[0]));
        assert!(matches!(&outcomes[1], RefreshOutcome::Reused { session_id } if *session_id == sessions[0]));
        // A successor cannot come back before its batch answers; had it,
        // it would be refused, as it would be one rotation after another
        // (its session revoked by the reuse before it).
        assert!(matches!(&outcomes[2], RefreshOutcome::Invalid), "{:?}", outcomes[2]);
        assert!(matches!(&outcomes[3], RefreshOutcome::Rotated { session, .. } if session.id == sessions[1]));
        assert!(store.get_session(sessions[0]).await.unwrap().revoked_at.is_some());
        assert!(store.get_session(sessions[1]).await.unwrap().revoked_at.is_none());
        // What the batch wrote: b's successor works once; a's never does.
        assert!(matches!(
            store.rotate_refresh_token("b-2", "b-3", now).await.unwrap(),
            RefreshOutcome::Rotated { .. }
        ));
        assert!(matches!(
            store.rotate_refresh_token("a-2", "a-5", now).await.unwrap(),
            RefreshOutcome::Invalid
        ));
        // The batch spent b's first token: presented again, it is a reuse.
        assert!(matches!(
            store.rotate_refresh_token("b-1", "b-9", now).await.unwrap(),
            RefreshOutcome::Reused { .. }
        ));
    }

    /// On PostgreSQL too a batch decides its rows in order, whichever
    /// statement writes it (`rotate_on_postgres`): a batch whose rows
    /// cannot touch each other is one statement; one that presents a token
    /// twice, or two tokens of one session, is read first. Each batch goes
    /// to the writer directly, so that its rows are sure to share it.
    #[tokio::test]
    async fn a_batch_decides_its_rows_in_order_on_postgres() {
        let Some(db) = gatehouse_testkit::TestDb::postgres().await else { return };
        let (store, org, user) = with_a_user(db.url()).await;
        let idle = store.create_user(&member(org.id, "ida@example.com", false), at()).await.unwrap();
        let now = at();
        let session = |user: &User, token: &'static str, expires_at: DateTime<Utc>| {
            let (store, new) = (&store, app_session(user, expires_at));
            async move {
                store.create_session(&new, token, None, now).await.unwrap();
                new.id
            }
        };
        let live = now + chrono::Duration::days(1);
        let rotation = |presented: &str, new_hash: &str| Rotation {
            presented: presented.into(),
            new_hash: new_hash.into(),
            now,
        };
        let batch = |rows: Vec<Rotation>| {
            let store = &store;
            async move { store.write_rotations(&rows.iter().collect::<Vec<_>>()).await.unwrap() }
        };
        let revoked = |id: SessionId| {
            let store = &store;
            async move { store.get_session(id).await.unwrap().revoked_at.is_some() }
        };

        // Rows that cannot touch each other: a current token, one spent
        // before, one whose session has ended, one whose user is inactive,
        // one unknown.
        let current = session(&user, "p-1", live).await;
        let stolen = session(&user, "q-1", live).await;
        assert!(matches!(batch(vec![rotation("q-1", "q-2")]).await[0], RefreshOutcome::Rotated { .. }));
        let ended = session(&user, "r-1", now).await;
        let inactive = session(&idle, "s-1", live).await;
        let outcomes = batch(vec![
            rotation("p-1", "p-2"),
            rotation("q-1", "q-3"),
            rotation("r-1", "r-2"),
            rotation("s-1", "s-2"),
            rotation("nobody", "n-2"),
            // The rows travel as one JSON value: a value that would end
            // its row early, unescaped, is one unknown token.
            rotation(r#"x", 0, "h-2"], ["p-1\\"#, "h-3"),
        ])
        .await;
        assert!(matches!(&outcomes[0], RefreshOutcome::Rotated { session, .. } if session.id == current));
        assert!(matches!(&outcomes[1], RefreshOutcome::Reused { session_id } if *session_id == stolen));
        assert!(matches!(
            outcomes[2..],
            [
                RefreshOutcome::Invalid,
                RefreshOutcome::Invalid,
                RefreshOutcome::Invalid,
                RefreshOutcome::Invalid
            ]
        ));
        assert!(!revoked(current).await && revoked(stolen).await);
        assert!(!revoked(ended).await && !revoked(inactive).await, "an invalid token ends nothing");
        assert!(matches!(batch(vec![rotation("p-2", "p-3")]).await[0], RefreshOutcome::Rotated { .. }));
        assert!(matches!(batch(vec![rotation("q-2", "q-4")]).await[0], RefreshOutcome::Invalid));
        assert!(matches!(batch(vec![rotation("n-2", "n-3")]).await[0], RefreshOutcome::Invalid));
        // The inactive user's token was not spent: active again, it rotates.
        sqlx::query("UPDATE users SET active = 1 WHERE id = $1")
            .bind(idle.id.to_string())
            .execute(&store.pool)
            .await
            .unwrap();
        assert!(matches!(batch(vec![rotation("s-1", "s-3")]).await[0], RefreshOutcome::Rotated { .. }));

        // Two tokens of one session: the reuse first ends the session for
        // the row after it; the rotation first still rotates.
        let reuse_first = session(&user, "c-1", live).await;
        batch(vec![rotation("c-1", "c-2")]).await;
        let rotate_first = session(&user, "d-1", live).await;
        batch(vec![rotation("d-1", "d-2")]).await;
        let outcomes = batch(vec![
            rotation("c-1", "c-8"),
            rotation("c-2", "c-9"),
            rotation("d-2", "d-8"),
            rotation("d-1", "d-9"),
        ])
        .await;
        assert!(matches!(&outcomes[0], RefreshOutcome::Reused { session_id } if *session_id == reuse_first));
        assert!(matches!(&outcomes[1], RefreshOutcome::Invalid), "{:?}", outcomes[1]);
        assert!(
            matches!(&outcomes[2], RefreshOutcome::Rotated { session, .. } if session.id == rotate_first)
        );
        assert!(matches!(&outcomes[3], RefreshOutcome::Reused { session_id } if *session_id == rotate_first));
        assert!(revoked(reuse_first).await && revoked(rotate_first).await);
        // What was written is what the rows one after another would write:
        // c's current token unspent, and a successor only for d's.
        let stored = |condition: &'static str| {
            let store = &store;
            async move {
                let sql = format!("SELECT token_hash FROM refresh_tokens WHERE {condition}");
                let rows: Vec<(String,)> =
                    sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(&store.pool).await.unwrap();
                rows.into_iter().map(|(hash,)| hash).collect::<Vec<_>>()
            }
        };
        assert_eq!(stored("token_hash IN ('c-2', 'd-2') AND rotated_at IS NOT NULL").await, ["d-2"]);
        assert_eq!(stored("token_hash IN ('c-8', 'c-9', 'd-8', 'd-9')").await, ["d-8"]);
        assert!(stored("token_hash IN ('h-2', 'h-3')").await.is_empty(), "the hostile row wrote nothing");

        // A token twice: the first rotates, the second is a reuse.
        let twice = session(&user, "e-1", live).await;
        let outcomes = batch(vec![rotation("e-1", "e-2"), rotation("e-1", "e-3")]).await;
        assert!(matches!(&outcomes[0], RefreshOutcome::Rotated { session, .. } if session.id == twice));
        assert!(matches!(&outcomes[1], RefreshOutcome::Reused { session_id } if *session_id == twice));
        assert!(revoked(twice).await);
        store.close().await;
    }

    /// On PostgreSQL's read-first path, a token that another node spends
    /// between the read and the statement is not spent again: its row is
    /// a reuse and its session ends, as if the two had run one after the
    /// other. (`tests/two_nodes.rs` races whole rotations, which take the
    /// one-statement path; this puts the other node's spend between the
    /// read-first path's two steps.)
    #[tokio::test]
    async fn a_token_spent_after_the_read_is_a_reuse_on_postgres() {
        let Some(db) = gatehouse_testkit::TestDb::postgres().await else { return };
        let (store, _, user) = with_a_user(db.url()).await;
        let other = Store::open(db.url()).await.unwrap();
        let now = at();
        let session = app_session(&user, now + chrono::Duration::days(1));
        store.create_session(&session, "t-1", None, now).await.unwrap();

        let row = Rotation { presented: "t-1".into(), new_hash: "t-2".into(), now };
        let rows = [&row];
        let mut lease = store.lease().await.unwrap();
        let read = read_presented(&mut *lease, &["t-1".to_owned()]).await.unwrap();
        let (plan, revoked) = decide(&rows, &read);
        assert!(matches!(plan[..], [Step::Rotate(..)]) && revoked.is_empty());
        assert!(matches!(
            other.rotate_refresh_token("t-1", "t-9", now).await.unwrap(),
            RefreshOutcome::Rotated { .. }
        ));
        let spent = spend_on_postgres(&mut lease, &rows, &plan, &revoked).await.unwrap();
        lease.finish();
        assert!(spent.is_empty(), "spent once, by the other node");
        assert!(
            store.get_session(session.id).await.unwrap().revoked_at.is_some(),
            "a reuse ends the session"
        );
        assert!(matches!(
            store.rotate_refresh_token("t-9", "t-10", now).await.unwrap(),
            RefreshOutcome::Invalid
        ));
        assert!(matches!(
            store.rotate_refresh_token("t-2", "t-3", now).await.unwrap(),
            RefreshOutcome::Invalid
        ));
        store.close().await;
        other.close().await;
    }

    /// On a database file, a batch of sessions is one transaction of the
    /// embedded writer's: a row that refers to a user who does not exist
    /// fails the whole batch and leaves nothing behind (the batch writer
    /// then tries each row alone), and the batch without it is written
    /// whole, its refresh token usable.
    #[tokio::test]
    async fn a_batch_of_sessions_is_written_by_the_embedded_writer_all_or_none() {
        let (_dir, store, org, user) = store_with_a_user().await;
        let now = at();
        let row = |user_id: UserId, token: &str| SessionRow {
            session: NewSession {
                id: SessionId::new(),
                user_id,
                org_id: org.id,
                auth_method: AuthMethod::ExternalRest,
                device: Device { os: Some("iOS".into()), name: None, ip: Some("192.0.2.7".parse().unwrap()) },
                expires_at: now + chrono::Duration::days(1),
                idp_groups: None,
                browser_token_hash: None,
            },
            refresh_hash: token.into(),
            audit: None,
            now,
        };
        let good = row(user.id, "good-1");
        let orphan = row(UserId::new(), "orphan-1");
        let writer = store.writer.clone().expect("a database file has an embedded writer");
        let committed = writer.committed();

        let e = store.write_sessions(&[&good, &orphan]).await.unwrap_err();
        assert!(e.to_string().contains("FOREIGN KEY"), "{e}");
        assert!(!e.is_unavailable(), "a row's own fault, for the batch writer to try row by row");
        assert!(matches!(store.get_session(good.session.id).await, Err(StoreError::NotFound)));

        store.write_sessions(&[&good]).await.unwrap();
        assert_eq!(writer.committed(), committed + 1);
        let stored = store.get_session(good.session.id).await.unwrap();
        assert_eq!(
            (stored.user_id, stored.auth_method, stored.created_at, stored.expires_at),
            (user.id, AuthMethod::ExternalRest, now, good.session.expires_at)
        );
        // The device, read back as stored (the session record leaves it out).
        let device: (Option<String>, Option<String>, Option<String>) =
            sqlx::query_as("SELECT device_os, device_name, device_ip FROM sessions WHERE id = $1")
                .bind(good.session.id.to_string())
                .fetch_one(&store.pool)
                .await
                .unwrap();
        assert_eq!(device, (Some("iOS".into()), None, Some("192.0.2.7".into())));
        assert!(matches!(
            store.rotate_refresh_token("good-1", "good-2", now).await.unwrap(),
            RefreshOutcome::Rotated { .. }
        ));
    }
}
