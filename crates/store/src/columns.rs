//! One way to read a result row's columns by name, whichever connection
//! read it: sqlx's (either backend) or an embedded SQLite reader's
//! (`embedded`). The functions that turn rows into records are written
//! once, against [`Columns`], so the two paths cannot decode a row
//! differently.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Result, StoreError};

pub(crate) trait Columns {
    fn text(&self, name: &str) -> Result<String>;
    fn text_opt(&self, name: &str) -> Result<Option<String>>;
    fn int(&self, name: &str) -> Result<i64>;
    fn int_opt(&self, name: &str) -> Result<Option<i64>>;
}

impl Columns for AnyRow {
    fn text(&self, name: &str) -> Result<String> {
        Ok(self.try_get(name)?)
    }
    fn text_opt(&self, name: &str) -> Result<Option<String>> {
        Ok(self.try_get(name)?)
    }
    fn int(&self, name: &str) -> Result<i64> {
        Ok(self.try_get(name)?)
    }
    fn int_opt(&self, name: &str) -> Result<Option<i64>> {
        Ok(self.try_get(name)?)
    }
}

/// The column names of a statement, read once per query. Looked up by
/// name on a plain `rusqlite::Row`, every value asks SQLite for the names
/// before it, one call and one `strlen` each: for a rotation batch's row of
/// about 45 columns that was about a thousand calls a row, 1.5-2.5% of a
/// rotation's CPU (docs/benchmarks.md, "Column names read once"). They are
/// copied into one string, two allocations a query rather than one per
/// column (a sign-in's read was 17 of its 443 calls to `malloc`).
pub(crate) struct ColumnNames {
    /// Every name, one after the other.
    text: String,
    /// Where each name ends in `text`.
    ends: Vec<usize>,
}

impl ColumnNames {
    pub(crate) fn of(statement: &rusqlite::Statement<'_>) -> Self {
        let count = statement.column_count();
        let mut names = Self { text: String::with_capacity(count * 16), ends: Vec::with_capacity(count) };
        for i in 0..count {
            // Every index below the count names a column; were one not to,
            // an empty name keeps the others at their places.
            names.text.push_str(statement.column_name(i).unwrap_or_default());
            names.ends.push(names.text.len());
        }
        names
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(self.ends.iter().copied()).map(|(start, end)| &self.text[start..end])
    }

    /// `row` read through these names.
    pub(crate) fn row<'a>(&'a self, row: &'a rusqlite::Row<'a>) -> NamedRow<'a> {
        NamedRow { row, names: self }
    }

    /// Where `name` is, compared as SQLite compares column names (ASCII
    /// case-insensitively), first match first, as `rusqlite` finds it.
    fn index(&self, name: &str) -> Option<usize> {
        self.names().position(|n| n.eq_ignore_ascii_case(name))
    }
}

/// A row of an embedded reader's query, with its statement's names.
pub(crate) struct NamedRow<'a> {
    row: &'a rusqlite::Row<'a>,
    names: &'a ColumnNames,
}

impl NamedRow<'_> {
    fn get<T: rusqlite::types::FromSql>(&self, name: &str) -> Result<T> {
        let index = self
            .names
            .index(name)
            .ok_or_else(|| unreadable(name, rusqlite::Error::InvalidColumnName(name.into())))?;
        self.row.get(index).map_err(|e| unreadable(name, e))
    }
}

impl Columns for NamedRow<'_> {
    fn text(&self, name: &str) -> Result<String> {
        self.get(name)
    }
    fn text_opt(&self, name: &str) -> Result<Option<String>> {
        self.get(name)
    }
    fn int(&self, name: &str) -> Result<i64> {
        self.get(name)
    }
    fn int_opt(&self, name: &str) -> Result<Option<i64>> {
        self.get(name)
    }
}

/// See [`prefixed`].
pub(crate) struct Prefixed<'r, R: ?Sized> {
    row: &'r R,
    prefix: &'static str,
    /// `{prefix}{name}` for the column being read: one string for the
    /// whole record, not one per column (a rotation batch's read has about
    /// 45 columns a row).
    name: std::cell::RefCell<String>,
}

impl<R: Columns + ?Sized> Prefixed<'_, R> {
    fn read<T>(&self, name: &str, read: impl FnOnce(&R, &str) -> Result<T>) -> Result<T> {
        let mut full = self.name.borrow_mut();
        full.clear();
        full.push_str(self.prefix);
        full.push_str(name);
        read(self.row, &full)
    }
}

impl<R: Columns + ?Sized> Columns for Prefixed<'_, R> {
    fn text(&self, name: &str) -> Result<String> {
        self.read(name, |row, name| row.text(name))
    }
    fn text_opt(&self, name: &str) -> Result<Option<String>> {
        self.read(name, |row, name| row.text_opt(name))
    }
    fn int(&self, name: &str) -> Result<i64> {
        self.read(name, |row, name| row.int(name))
    }
    fn int_opt(&self, name: &str) -> Result<Option<i64>> {
        self.read(name, |row, name| row.int_opt(name))
    }
}

/// The columns of `row` named `{prefix}{name}`, read as `name`: one
/// record of several that a join returns side by side.
pub(crate) fn prefixed<'r>(row: &'r dyn Columns, prefix: &'static str) -> Prefixed<'r, dyn Columns + 'r> {
    Prefixed { row, prefix, name: std::cell::RefCell::new(String::with_capacity(prefix.len() + 32)) }
}

/// `{alias}.{column} AS {prefix}{column}` for each of `columns` (a list
/// as a table's `COLUMNS` constant spells it), for reading with
/// [`prefixed`].
pub(crate) fn aliased(columns: &str, alias: &str, prefix: &str) -> String {
    columns
        .split(',')
        .map(str::trim)
        .map(|c| format!("{alias}.{c} AS {prefix}{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A column that is missing or of the wrong type: the query and the
/// schema disagree, or the stored value is not what was written.
fn unreadable(name: &str, e: rusqlite::Error) -> StoreError {
    StoreError::Corrupt(format!("column {name}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_column_of_the_wrong_type_or_name_is_corrupt_data() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let mut stmt = conn.prepare("SELECT 'x' AS t, 7 AS n, NULL AS z, 8 AS N").unwrap();
        let names = ColumnNames::of(&stmt);
        let mut rows = stmt.query([]).unwrap();
        let row = names.row(rows.next().unwrap().unwrap());
        assert_eq!(row.text("t").unwrap(), "x");
        // Names compare as SQLite's do, and the first of a name wins.
        assert_eq!(row.text("T").unwrap(), "x");
        assert_eq!(row.int("n").unwrap(), 7);
        assert_eq!(row.int("N").unwrap(), 7);
        assert_eq!(row.int_opt("z").unwrap(), None);
        assert_eq!(row.text_opt("z").unwrap(), None);
        assert!(matches!(row.int("t"), Err(StoreError::Corrupt(_))));
        assert!(matches!(row.text("absent"), Err(StoreError::Corrupt(_))));
        assert!(matches!(row.text("z"), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn each_name_finds_its_own_column_whatever_the_names_lengths() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let mut stmt =
            conn.prepare("SELECT 1 AS a, 2 AS bb, 3 AS \"\", 4 AS \"ünïcode\", 5 AS ab, 6 AS b").unwrap();
        let names = ColumnNames::of(&stmt);
        let mut rows = stmt.query([]).unwrap();
        let row = names.row(rows.next().unwrap().unwrap());
        for (name, value) in [("a", 1), ("bb", 2), ("", 3), ("ünïcode", 4), ("AB", 5), ("b", 6)] {
            assert_eq!(row.int(name).unwrap(), value, "{name:?}");
        }
        assert!(matches!(row.int("abb"), Err(StoreError::Corrupt(_))), "names do not run together");
    }

    #[test]
    fn prefixed_columns_read_one_record_of_a_join() {
        assert_eq!(aliased("id, org_id", "u", "u_"), "u.id AS u_id, u.org_id AS u_org_id");
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let mut stmt = conn.prepare("SELECT 1 AS id, 2 AS u_id").unwrap();
        let names = ColumnNames::of(&stmt);
        let mut rows = stmt.query([]).unwrap();
        let row = names.row(rows.next().unwrap().unwrap());
        assert_eq!(row.int("id").unwrap(), 1);
        assert_eq!(prefixed(&row, "u_").int("id").unwrap(), 2);
        assert!(matches!(prefixed(&row, "s_").int("id"), Err(StoreError::Corrupt(_))));
        // One record's columns read one after another, through one name
        // buffer, each find their own.
        let u = prefixed(&row, "u_");
        assert!(matches!(u.text("i"), Err(StoreError::Corrupt(_))), "u_i is not u_id");
        assert_eq!(u.int("id").unwrap(), 2);
        assert_eq!(u.int("ID").unwrap(), 2);
    }
}
