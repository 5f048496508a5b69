//! Multi-row inserts into several tables, sent to the database in one round
//! trip and applied all or none.
//!
//! A sign-in writes three rows (its audit event, its session, its refresh
//! token). Written as a transaction of separate statements that is five
//! round trips to the database (begin, three inserts, commit), and on SQLite
//! every round trip is a hand-off to the connection's own thread and back.
//! Under load those hand-offs, made while holding the single write lock, were
//! most of a sign-in's added latency. [`Inserts`] collects the statements
//! and their values, and [`Store::apply`] sends them as one:
//!
//! - SQLite, on a database file: one job of the embedded writer
//!   (`embedded_writer`), which runs each insert's one-row statement once
//!   a row on its own thread ([`Inserts::run`]), with no round trip to
//!   save;
//! - SQLite otherwise: one script, `BEGIN IMMEDIATE; …; COMMIT`, rolled
//!   back if any statement in it fails;
//! - PostgreSQL: one statement, the first inserts as data-modifying CTEs.
//!   A single statement is atomic, and its foreign keys are checked at its
//!   end, so a row may refer to one inserted by an earlier part. Each
//!   insert's rows go as one parameter, a JSON array of rows
//!   (`INSERT … SELECT … FROM json_array_elements($n::json)`), so the
//!   statement's text is the same for one row as for sixty-four.
//!
//! Inside a transaction of its own, a writer sends its statements the same
//! way with [`Inserts::fetch_in`] (a script without the `BEGIN` and
//! `COMMIT`, or the one statement): a batch of SCIM creates sends its
//! users, their email index, their audit events and the deletion of the
//! tombstones they lift (a statement other than an insert, declared with
//! [`Inserts::statement`], whose `RETURNING` rows come back) as one.
//!
//! On PostgreSQL a statement made only of inserts is kept prepared, as
//! sqlx does by default: its text does not vary with the batch, and a
//! statement prepared afresh is a round trip more (sqlx parses and
//! describes it, waits, then binds and executes it), which every sign-in
//! waited for (docs/benchmarks.md, "PostgreSQL's batches kept prepared").
//! One with a statement given whole ([`Inserts::statement`]), whose text
//! may vary with the rows, is not (`.persistent(false)`), nor is any
//! script on SQLite: there the text differs with every row count, sqlx
//! keeps up to a hundred prepared statements per connection, and on
//! SQLite a prepared statement lives in this process; a 64-row insert's
//! program is large, and kept, they were tens of MiB of the peak under
//! load (docs/benchmarks.md, "Prepared statements").

use sqlx::any::AnyArguments;
use sqlx::{AnyConnection, Arguments};

use crate::columns::{ColumnNames, Columns};
use crate::{Backend, Result, Store};

/// Inserts to apply together; values are bound in the order of the rows
/// and columns declared by [`Inserts::insert`].
#[derive(Default)]
pub(crate) struct Inserts {
    statements: Vec<Declared>,
    /// The values bound so far, in order; turned into either driver's
    /// arguments when the statements are sent.
    values: Vec<Value>,
    /// Placeholders declared so far; `bind` must fill exactly these.
    declared: usize,
}

/// A value to insert, in one of the types the schema stores. A null has
/// its column's type too: PostgreSQL types each parameter by the value
/// bound to it, and a text column compared with a null bound as an
/// integer is an error there.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Integer(Option<i64>),
    Text(Option<String>),
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(Some(s))
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(Some(s.to_owned()))
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::Integer(Some(n))
    }
}

impl From<Option<String>> for Value {
    fn from(s: Option<String>) -> Self {
        Value::Text(s)
    }
}

impl From<Option<&str>> for Value {
    fn from(s: Option<&str>) -> Self {
        Value::Text(s.map(str::to_owned))
    }
}

impl From<Option<i64>> for Value {
    fn from(n: Option<i64>) -> Self {
        Value::Integer(n)
    }
}

impl Value {
    /// `query` with this value bound as its next parameter.
    pub(crate) fn bind_to<'q>(
        self,
        query: sqlx::query::Query<'q, sqlx::Any, AnyArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Any, AnyArguments> {
        match self {
            Value::Integer(n) => query.bind(n),
            Value::Text(s) => query.bind(s),
        }
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Integer(None) | Value::Text(None) => ValueRef::Null,
            Value::Integer(Some(n)) => ValueRef::Integer(*n),
            Value::Text(Some(s)) => ValueRef::Text(s.as_bytes()),
        }))
    }
}

/// One declared statement: an `INSERT`, or another statement given whole.
struct Declared {
    /// The statement with an anonymous `?` for each of its values, in the
    /// order they are bound. That is the form SQLite binds fastest: it
    /// files every `$n` under its name and finds each by a linear search,
    /// when the statement is prepared and again (through sqlx) when it is
    /// bound, so a batch of 64 sign-ins, 704 values, cost hundreds of
    /// thousands of string comparisons (docs/benchmarks.md). PostgreSQL
    /// gets a statement given whole numbered (`numbered`), and an insert
    /// in its own form ([`Insert::over_json`]).
    template: String,
    /// Values declared before this statement's.
    after: usize,
    /// How many values it takes.
    values: usize,
    /// What an insert is, for the forms other than `template`.
    insert: Option<Insert>,
}

/// An insert's table and shape.
struct Insert {
    /// The table and its column list, as `INSERT INTO` takes them.
    into: String,
    /// Values in a row.
    width: usize,
    /// The unique key whose existing rows are skipped, if any.
    skip_existing: Option<&'static str>,
    /// The statement for one row: the embedded writer runs it once a row,
    /// prepared once (`Inserts::run`).
    row: String,
}

impl Insert {
    /// The insert on PostgreSQL, its rows read from parameter `param`, a
    /// JSON array of rows, each an array of the row's values
    /// ([`Inserts::json_rows`]). A column is cast to `BIGINT` where
    /// `first` (a row of the batch; every row binds the same types) has an
    /// integer, and otherwise read as the text it is; a JSON `null` is
    /// SQL's `NULL` either way. The text depends on the table and the
    /// types only, never on the number of rows.
    fn over_json(&self, param: usize, first: &[Value]) -> String {
        use std::fmt::Write as _;
        let mut columns = String::new();
        for (i, value) in first.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            let _ = match value {
                Value::Integer(_) => write!(columns, "{sep}(r.v ->> {i})::bigint"),
                Value::Text(_) => write!(columns, "{sep}r.v ->> {i}"),
            };
        }
        let conflict =
            self.skip_existing.map(|key| format!(" ON CONFLICT ({key}) DO NOTHING")).unwrap_or_default();
        format!(
            "INSERT INTO {} SELECT {columns} FROM json_array_elements(${param}::json) AS r(v){conflict}",
            self.into
        )
    }
}

impl Inserts {
    /// Declares `INSERT INTO {into} VALUES …` for `rows` rows of `width`
    /// values, numbered after those already declared. `into` is the table
    /// and its column list. Nothing is declared for zero rows.
    pub(crate) fn insert(&mut self, into: &str, width: usize, rows: usize) -> &mut Self {
        self.declare(into, width, rows, None)
    }

    /// As [`Inserts::insert`], but a row whose `key` (a unique key's
    /// columns, as `ON CONFLICT` names them) is already in the table is
    /// skipped, not refused.
    pub(crate) fn insert_new(
        &mut self,
        into: &str,
        width: usize,
        rows: usize,
        key: &'static str,
    ) -> &mut Self {
        self.declare(into, width, rows, Some(key))
    }

    fn declare(
        &mut self,
        into: &str,
        width: usize,
        rows: usize,
        skip_existing: Option<&'static str>,
    ) -> &mut Self {
        if rows == 0 {
            return self;
        }
        let row = format!("({})", vec!["?"; width].join(", "));
        let values = vec![row.as_str(); rows].join(", ");
        let statement = |values: &str| match skip_existing {
            None => format!("INSERT INTO {into} VALUES {values}"),
            Some(key) => format!("INSERT INTO {into} VALUES {values} ON CONFLICT ({key}) DO NOTHING"),
        };
        let template = statement(&values);
        let insert = Insert { into: into.to_owned(), width, skip_existing, row: statement(&row) };
        self.push(template, rows * width, Some(insert))
    }

    /// Declares a statement other than an insert (a `DELETE … RETURNING`,
    /// say), written with `?` for each of its `values`, in the order they
    /// are bound; nothing else in `template` may be a `?`. Of the
    /// statements run together by [`Inserts::fetch_in`], only the last
    /// may return rows.
    pub(crate) fn statement(&mut self, template: String, values: usize) -> &mut Self {
        debug_assert_eq!(template.matches('?').count(), values, "one ? per value");
        self.push(template, values, None)
    }

    fn push(&mut self, template: String, values: usize, insert: Option<Insert>) -> &mut Self {
        self.statements.push(Declared { template, after: self.declared, values, insert });
        self.declared += values;
        self
    }

    /// Binds the next value.
    pub(crate) fn bind(&mut self, value: impl Into<Value>) -> &mut Self {
        self.values.push(value.into());
        self
    }

    /// A mismatch is a bug in the caller's binding code, never bad input.
    fn assert_complete(&self) {
        assert_eq!(
            self.values.len(),
            self.declared,
            "Inserts: values bound must match the placeholders declared"
        );
    }

    /// The values of `declared`.
    fn values_of(&self, declared: &Declared) -> &[Value] {
        &self.values[declared.after..declared.after + declared.values]
    }

    /// The parameters as `render` numbers them for `backend`, as sqlx's
    /// arguments: every value in order on SQLite; on PostgreSQL an
    /// insert's rows as one JSON text ([`Inserts::json_rows`]).
    fn arguments(&self, backend: Backend) -> Result<AnyArguments, sqlx::Error> {
        let mut args = AnyArguments::default();
        for declared in &self.statements {
            match (backend, &declared.insert) {
                (Backend::Postgres, Some(insert)) => {
                    args.add(self.json_rows(declared, insert.width)).map_err(sqlx::Error::Encode)?;
                }
                _ => {
                    for value in self.values_of(declared) {
                        match value {
                            Value::Integer(n) => args.add(*n),
                            Value::Text(s) => args.add(s.clone()),
                        }
                        .map_err(sqlx::Error::Encode)?;
                    }
                }
            }
        }
        Ok(args)
    }

    /// The rows of the insert `declared` as a JSON array of arrays, each
    /// value a JSON string, integer or `null`. serde_json escapes every
    /// string, so no value can end its string or its row early.
    fn json_rows(&self, declared: &Declared, width: usize) -> String {
        use std::io::Write as _;
        let values = self.values_of(declared);
        let mut out: Vec<u8> = Vec::with_capacity(values.len() * 24);
        out.push(b'[');
        for (i, row) in values.chunks(width).enumerate() {
            out.extend_from_slice(if i == 0 { b"[" } else { b",[" });
            for (j, value) in row.iter().enumerate() {
                if j > 0 {
                    out.push(b',');
                }
                // Writing to a Vec cannot fail.
                let _ = match value {
                    Value::Integer(Some(n)) => write!(out, "{n}"),
                    Value::Text(Some(s)) => serde_json::to_writer(&mut out, s).map_err(std::io::Error::other),
                    Value::Integer(None) | Value::Text(None) => out.write_all(b"null"),
                };
            }
            out.push(b']');
        }
        out.push(b']');
        String::from_utf8(out).expect("JSON of UTF-8 strings and integers is UTF-8")
    }

    /// Whether the statements' text, as `render` gives it for `backend`,
    /// is the same whatever the number of rows, so that keeping it
    /// prepared cannot fill sqlx's cache with one statement a width
    /// (module documentation): PostgreSQL's inserts only.
    fn text_is_fixed(&self, backend: Backend) -> bool {
        backend == Backend::Postgres && self.statements.iter().all(|d| d.insert.is_some())
    }

    /// Runs the declared statements on `conn`, the embedded writer's
    /// connection, inside its transaction. An insert runs once a row, as
    /// the one-row statement, kept prepared in the connection's cache: on
    /// the caller's thread a statement costs no round trip, and one
    /// program per table is all the cache holds, whatever the batch's
    /// size (the multi-row text that the drivers' round trips need is a
    /// new program for every row count). A statement given whole is
    /// prepared for this run only, as its text may vary. Returns the rows
    /// the last statement returned (the only one that may return any, as
    /// for [`Inserts::fetch_in`]), each decoded by `decode`.
    pub(crate) fn run<T>(
        &self,
        conn: &rusqlite::Connection,
        decode: impl Fn(&dyn Columns) -> Result<T>,
    ) -> Result<Vec<T>> {
        self.assert_complete();
        let mut returned = Vec::new();
        for declared in &self.statements {
            let values = self.values_of(declared);
            returned.clear();
            match &declared.insert {
                Some(Insert { row, width, .. }) => {
                    let mut statement = conn.prepare_cached(row)?;
                    for row in values.chunks(*width) {
                        statement.execute(rusqlite::params_from_iter(row))?;
                    }
                }
                None => {
                    let mut statement = conn.prepare(&declared.template)?;
                    let names = ColumnNames::of(&statement);
                    let mut rows = statement.query(rusqlite::params_from_iter(values))?;
                    while let Some(row) = rows.next()? {
                        returned.push(decode(&names.row(row))?);
                    }
                }
            }
        }
        Ok(returned)
    }

    /// The statements' text for `backend`, their parameters numbered in
    /// the order `arguments` binds them.
    fn render(&self, backend: Backend) -> Vec<String> {
        let mut params = 0;
        self.statements
            .iter()
            .map(|d| match (backend, &d.insert) {
                (Backend::Sqlite, _) => d.template.clone(),
                (Backend::Postgres, Some(insert)) => {
                    params += 1;
                    let values = self.values_of(d);
                    let first = &values[..insert.width];
                    debug_assert!(
                        values.chunks(insert.width).all(|row| row
                            .iter()
                            .zip(first)
                            .all(|(a, b)| std::mem::discriminant(a) == std::mem::discriminant(b))),
                        "every row of an insert binds the types its first row does"
                    );
                    insert.over_json(params, first)
                }
                (Backend::Postgres, None) => {
                    let text = numbered(&d.template, params);
                    params += d.values;
                    text
                }
            })
            .collect()
    }

    /// Every declared statement as one: a script on SQLite, and on
    /// PostgreSQL one statement whose first parts are data-modifying CTEs.
    fn combined(&self, backend: Backend) -> Option<String> {
        let statements = self.render(backend);
        let (last, first) = statements.split_last()?;
        Some(match backend {
            Backend::Sqlite => statements.join("; "),
            Backend::Postgres if first.is_empty() => last.clone(),
            Backend::Postgres => {
                let ctes: Vec<String> =
                    first.iter().enumerate().map(|(i, s)| format!("insert_{i} AS ({s})")).collect();
                format!("WITH {} {last}", ctes.join(", "))
            }
        })
    }

    /// The declared statements as [`Store::apply`] sends them through the
    /// pool, with their arguments; only for a declaration that is not
    /// empty.
    fn finish(self, backend: Backend) -> Result<(String, AnyArguments), sqlx::Error> {
        self.assert_complete();
        debug_assert!(!self.statements.is_empty(), "apply returns early for nothing declared");
        let sql = match (backend, self.combined(backend).unwrap_or_default()) {
            (Backend::Sqlite, script) => format!("BEGIN IMMEDIATE; {script}; COMMIT"),
            (Backend::Postgres, statement) => statement,
        };
        Ok((sql, self.arguments(backend)?))
    }

    /// Runs the declared statements on `conn`, inside the caller's
    /// transaction, in one round trip. The database's error is returned as
    /// it is, for the caller to name; on SQLite the statements before the
    /// failing one have run, so the caller's transaction must not commit.
    pub(crate) async fn execute_in(self, conn: &mut AnyConnection) -> std::result::Result<(), sqlx::Error> {
        self.fetch_in(conn).await.map(drop)
    }

    /// As [`Inserts::execute_in`], returning the rows of the last
    /// statement (the only one that may return any).
    pub(crate) async fn fetch_in(
        self,
        conn: &mut AnyConnection,
    ) -> std::result::Result<Vec<sqlx::any::AnyRow>, sqlx::Error> {
        let backend = crate::backend_of(conn);
        self.send(conn, backend, None).await
    }

    /// As [`Inserts::fetch_in`], on SQLite, with `then` (the caller's
    /// `COMMIT`) at the end of the script: one round trip for both
    /// (`read_then_write`). If any statement fails, the caller's
    /// transaction is still open, for it to roll back.
    pub(crate) async fn fetch_then(
        self,
        conn: &mut AnyConnection,
        then: &str,
    ) -> std::result::Result<Vec<sqlx::any::AnyRow>, sqlx::Error> {
        debug_assert_eq!(crate::backend_of(conn), Backend::Sqlite, "a script is SQLite's");
        self.send(conn, Backend::Sqlite, Some(then)).await
    }

    async fn send(
        self,
        conn: &mut AnyConnection,
        backend: Backend,
        then: Option<&str>,
    ) -> std::result::Result<Vec<sqlx::any::AnyRow>, sqlx::Error> {
        self.assert_complete();
        let sql = match (self.combined(backend), then) {
            (None, None) => return Ok(Vec::new()),
            (None, Some(then)) => then.to_owned(),
            (Some(statements), None) => statements,
            (Some(script), Some(then)) => format!("{script}; {then}"),
        };
        let args = self.arguments(backend)?;
        let keep = then.is_none() && self.text_is_fixed(backend);
        sqlx::query_with(sqlx::AssertSqlSafe(sql), args).persistent(keep).fetch_all(conn).await
    }
}

/// `template` with its `?`s numbered `$n`, after the first `after`.
fn numbered(template: &str, after: usize) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(template.len() * 2);
    for (i, part) in template.split('?').enumerate() {
        if i > 0 {
            let _ = write!(out, "${}", after + i);
        }
        out.push_str(part);
    }
    out
}

impl Store {
    /// Applies `inserts`, all or none: on SQLite by the embedded writer
    /// (`embedded_writer`), as one transaction on its thread; otherwise in
    /// one round trip.
    pub(crate) async fn apply(&self, inserts: Inserts) -> Result<()> {
        if inserts.statements.is_empty() {
            return Ok(());
        }
        if let Some(writer) = &self.writer {
            return writer.transaction(move |conn| inserts.run(conn, |_| Ok(())).map(drop)).await;
        }
        let keep = inserts.text_is_fixed(self.backend);
        let (sql, args) = inserts.finish(self.backend)?;
        let query = sqlx::query_with(sqlx::AssertSqlSafe(sql), args).persistent(keep);
        let mut conn = self.lease_to_write().await?;
        if self.backend == Backend::Sqlite {
            // The script is its own transaction: until it has run to its
            // end, only this call can end it (PostgreSQL's one statement is
            // atomic).
            conn.mid_transaction();
        }
        if let Err(e) = query.execute(&mut *conn).await {
            // On SQLite the script stopped at the failing statement with its
            // transaction open. A connection that cannot roll it back is
            // closed.
            if self.backend == Backend::Sqlite {
                match sqlx::raw_sql(sqlx::AssertSqlSafe("ROLLBACK")).execute(&mut *conn).await {
                    Ok(_) => conn.transaction_ended(),
                    Err(_) => conn.close().await,
                }
            }
            return Err(e.into());
        }
        conn.finish();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_backend_gets_its_placeholders_in_the_order_of_the_values() {
        let mut inserts = Inserts::default();
        inserts
            .insert("t (a, b)", 2, 2)
            .insert_new("u (c)", 1, 1, "c")
            .statement("DELETE FROM v WHERE w = ? AND x = ?".into(), 2);
        inserts.bind("a1").bind(1).bind("a2").bind(2).bind(Option::<i64>::None).bind("w").bind(3);
        assert_eq!(
            inserts.render(Backend::Sqlite),
            [
                "INSERT INTO t (a, b) VALUES (?, ?), (?, ?)",
                "INSERT INTO u (c) VALUES (?) ON CONFLICT (c) DO NOTHING",
                "DELETE FROM v WHERE w = ? AND x = ?",
            ]
        );
        // On PostgreSQL each insert's rows are one parameter, and the
        // statements given whole are numbered after them.
        assert_eq!(
            inserts.render(Backend::Postgres),
            [
                "INSERT INTO t (a, b) SELECT r.v ->> 0, (r.v ->> 1)::bigint FROM json_array_elements($1::json) AS r(v)",
                "INSERT INTO u (c) SELECT (r.v ->> 0)::bigint FROM json_array_elements($2::json) AS r(v) \
                 ON CONFLICT (c) DO NOTHING",
                "DELETE FROM v WHERE w = $3 AND x = $4",
            ]
        );
        assert_eq!(inserts.arguments(Backend::Sqlite).unwrap().values.0.len(), 7);
        assert_eq!(inserts.arguments(Backend::Postgres).unwrap().values.0.len(), 4);
        let declared = &inserts.statements;
        assert_eq!(inserts.json_rows(&declared[0], 2), r#"[["a1",1],["a2",2]]"#);
        assert_eq!(inserts.json_rows(&declared[1], 1), "[[null]]");
        assert!(inserts.combined(Backend::Postgres).unwrap().starts_with(
            "WITH insert_0 AS (INSERT INTO t (a, b) SELECT r.v ->> 0, (r.v ->> 1)::bigint FROM \
                 json_array_elements($1::json) AS r(v)), insert_1 AS (INSERT INTO u (c) SELECT"
        ));
        // A statement given whole may vary with the rows: not kept
        // prepared.
        assert!(!inserts.text_is_fixed(Backend::Postgres));
        assert!(!inserts.text_is_fixed(Backend::Sqlite));
    }

    /// On PostgreSQL a batch of inserts has one text whatever its number of
    /// rows, so that it is kept prepared without filling sqlx's cache with
    /// one statement per width; on SQLite the script's text grows with the
    /// rows and is never kept.
    #[test]
    fn a_batch_of_inserts_has_one_text_on_postgres_whatever_its_rows() {
        let batch = |rows: usize| {
            let mut inserts = Inserts::default();
            inserts.insert("t (a, b)", 2, rows).insert("u (c)", 1, rows);
            for i in 0..rows {
                inserts.bind(format!("a{i}")).bind(i as i64);
            }
            for i in 0..rows {
                inserts.bind(Some(format!("c{i}")));
            }
            inserts
        };
        let one = batch(1);
        let many = batch(64);
        assert!(one.text_is_fixed(Backend::Postgres) && many.text_is_fixed(Backend::Postgres));
        assert_eq!(one.combined(Backend::Postgres), many.combined(Backend::Postgres));
        assert!(!one.text_is_fixed(Backend::Sqlite));
        assert_ne!(one.combined(Backend::Sqlite), many.combined(Backend::Sqlite));
    }

    /// PostgreSQL's insert casts each column by its first row's type, so a
    /// batch whose rows bind a column as different types is a bug in its
    /// caller, caught before it reaches the database.
    #[test]
    #[should_panic(expected = "every row of an insert binds the types its first row does")]
    fn rows_that_bind_other_types_are_a_bug() {
        let mut inserts = Inserts::default();
        inserts.insert("t (a)", 1, 2).bind("text").bind(7);
        inserts.render(Backend::Postgres);
    }

    /// Whatever a value holds, its rows' JSON reads back as exactly the
    /// rows bound: a string cannot end early or open a row of its own.
    #[test]
    fn rows_as_json_read_back_exactly() {
        let hostile =
            ["\"],[\"x\"", "\\", "\\\"", "]]", "null", "\u{2028}\u{2029}\u{7f}\u{1b}[0m", "é😀", ""];
        let mut inserts = Inserts::default();
        inserts.insert("t (a, b, c)", 3, hostile.len());
        for (i, text) in hostile.iter().enumerate() {
            let n = [i64::MIN, i64::MAX, 0, -1][i % 4];
            inserts.bind(*text).bind(n).bind(Option::<String>::None);
        }
        let json: serde_json::Value =
            serde_json::from_str(&inserts.json_rows(&inserts.statements[0], 3)).unwrap();
        let rows = json.as_array().unwrap();
        assert_eq!(rows.len(), hostile.len());
        for (i, row) in rows.iter().enumerate() {
            let n = [i64::MIN, i64::MAX, 0, -1][i % 4];
            assert_eq!(row, &serde_json::json!([hostile[i], n, null]));
        }
    }

    /// A script whose caller went away mid-way (a cancelled future) has
    /// begun its transaction and not committed it. Its connection is
    /// closed, which rolls the transaction back and frees SQLite's write
    /// lock; handed back to the pool instead, it held the lock for as long
    /// as it sat there, and every other writer timed out.
    ///
    /// Both ways: by the embedded writer, and through the pool as a store
    /// without one does.
    #[tokio::test]
    async fn a_script_cancelled_midway_leaves_no_transaction_open() {
        a_script_cancelled_midway_leaves_no_transaction_open_on(true).await;
        a_script_cancelled_midway_leaves_no_transaction_open_on(false).await;
    }

    async fn a_script_cancelled_midway_leaves_no_transaction_open_on(embedded: bool) {
        use std::time::{Duration, Instant};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("apply.db");
        let mut store = Store::open(&format!("sqlite://{}?mode=rwc", path.display())).await.unwrap();
        assert!(store.writer.is_some());
        if !embedded {
            store.writer = None;
        }
        sqlx::query("CREATE TABLE t (v INTEGER)").execute(&store.pool).await.unwrap();
        let mut slow = Inserts::default();
        slow.statement(
            "INSERT INTO t WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000) \
             SELECT i FROM n"
                .into(),
            0,
        );
        let running = tokio::spawn({
            let store = store.clone();
            async move { store.apply(slow).await }
        });
        // Cancelled once the script holds the write lock.
        let other = rusqlite::Connection::open(&path).unwrap();
        other.busy_timeout(Duration::ZERO).unwrap();
        let started = Instant::now();
        while other.execute_batch("BEGIN IMMEDIATE; ROLLBACK").is_ok() {
            assert!(started.elapsed() < Duration::from_secs(10), "the script never took the lock");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        running.abort();
        assert!(running.await.unwrap_err().is_cancelled());
        // Free once the statement under way has stopped. The wait runs off
        // the runtime's one thread, which the pool needs to close the
        // connection.
        let rows: i64 = tokio::task::spawn_blocking(move || {
            other.busy_timeout(Duration::from_secs(20)).unwrap();
            other.execute_batch("BEGIN IMMEDIATE; INSERT INTO t (v) VALUES (-1); COMMIT").unwrap();
            other.query_row("SELECT count(*) FROM t", [], |row| row.get(0)).unwrap()
        })
        .await
        .unwrap();
        assert_eq!(rows, 1, "the cancelled script wrote nothing");
    }
}
