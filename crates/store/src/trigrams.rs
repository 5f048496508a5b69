//! Narrowing a filter through SQLite's trigram index (migrations 0018 and
//! 0019).
//!
//! `co` and `ew` on userName or on an email's value cannot use a B-tree, so
//! without help they read every user of the organization: about 10 ms at
//! 100k users, twice per request (the count, then the page). An FTS5
//! trigram table lists the users whose text contains a substring in well
//! under a millisecond when few do, and slower than the scan when most do,
//! and SQLite keeps no statistics on it with which to choose. So the
//! choice is made here, per request: ask the index for at most [`FEW`]
//! entries plus one; when it has no more than `FEW`, those are the only
//! users that can match, and the whole condition is then checked on just
//! them. When it has more, the substring is common and the scan is the
//! cheaper plan.
//!
//! The index is written after the commit, not in it: a write notes the
//! user in `user_trigrams_pending`, and [`Store::index_pending_trigrams`]
//! (the store's background task, every half second) indexes the noted
//! users many at a time. A noted user is a candidate for every substring
//! until then, and an entry left from a user's old name or emails only adds
//! a candidate that the check turns away.
//!
//! So what the index answers is only ever a superset of the matches: the
//! condition is always evaluated in full on the candidates, and the index
//! decides how fast a filter is, never what it returns. PostgreSQL has
//! `pg_trgm` indexes and a planner with statistics instead, and never
//! comes here.

use std::collections::BTreeSet;

use sqlx::Row;

use crate::users::{EmailCondition, EmailField, TextOp, UserColumn, UserCondition};
use crate::{Backend, Result, Store, StoreError};

/// The most candidates worth checking one at a time: each is a lookup by
/// rowid (about a microsecond), so `FEW` of them cost a small part of a scan
/// of 100k users, whatever the organization's size.
pub(crate) const FEW: usize = 2000;

/// Users indexed per transaction when the index catches up. Each such
/// transaction holds the write turn, so writers wait for it; a smaller
/// batch holds them up for less time, in more commits.
const BATCH: u64 = 500;

/// How much of a substring is looked up. The index's work grows with the
/// phrase's length; the text before it is already as selective as a
/// substring gets, and the full condition is checked afterwards anyway.
const LONGEST: usize = 64;

/// Where the users that can meet a condition are listed.
#[derive(Debug, PartialEq, Eq)]
enum Source {
    /// Users whose userName contains this.
    UserName(String),
    /// Users with an email whose value contains this.
    EmailValue(String),
    /// Users listed by both.
    Both(Box<Source>, Box<Source>),
    /// Users listed by either.
    Either(Box<Source>, Box<Source>),
}

impl UserCondition {
    /// A source that lists every user meeting this condition, if there is one.
    fn source(&self) -> Option<Source> {
        match self {
            Self::Text { column: UserColumn::UserName, op: TextOp::Co | TextOp::Ew, value } => {
                searchable(value).map(Source::UserName)
            }
            Self::AnyEmail(condition) => condition.needle().map(Source::EmailValue),
            Self::And(a, b) => match (a.source(), b.source()) {
                (Some(a), Some(b)) => Some(Source::Both(Box::new(a), Box::new(b))),
                (one, None) | (None, one) => one,
            },
            Self::Or(a, b) => Some(Source::Either(Box::new(a.source()?), Box::new(b.source()?))),
            _ => None,
        }
    }
}

impl EmailCondition {
    /// A substring of the value of every email entry meeting this condition.
    fn needle(&self) -> Option<String> {
        match self {
            Self::Text { field: EmailField::Value, op: TextOp::Co | TextOp::Ew, value } => searchable(value),
            Self::And(a, b) => a.needle().or_else(|| b.needle()),
            _ => None,
        }
    }
}

/// The part of `value` to look up, if an index can: a trigram index finds
/// nothing shorter than three characters, and FTS5's query syntax ends a
/// phrase at a NUL.
fn searchable(value: &str) -> Option<String> {
    (value.chars().count() >= 3 && !value.contains('\0')).then(|| value.chars().take(LONGEST).collect())
}

/// `value` as an FTS5 phrase: in double quotes, which make every other
/// character literal, with its own quotes doubled.
fn phrase(value: &str) -> String {
    format!("\"{}\"", value.replace('"', "\"\""))
}

impl Source {
    /// The lookups this source needs, in the order `combine` consumes them.
    fn leaves<'a>(&'a self, out: &mut Vec<&'a Source>) {
        match self {
            Self::UserName(_) | Self::EmailValue(_) => out.push(self),
            Self::Both(a, b) | Self::Either(a, b) => {
                a.leaves(out);
                b.leaves(out);
            }
        }
    }

    /// The users this source lists, from its leaves' answers (`None`: too
    /// many to list).
    fn combine(&self, answers: &mut impl Iterator<Item = Option<BTreeSet<i64>>>) -> Option<BTreeSet<i64>> {
        match self {
            Self::UserName(_) | Self::EmailValue(_) => answers.next().flatten(),
            Self::Both(a, b) => match (a.combine(answers), b.combine(answers)) {
                (Some(a), Some(b)) => Some(a.intersection(&b).copied().collect()),
                (one, None) | (None, one) => one,
            },
            Self::Either(a, b) => {
                let (a, b) = (a.combine(answers), b.combine(answers));
                let both: BTreeSet<i64> = a?.union(&b?).copied().collect();
                (both.len() <= FEW).then_some(both)
            }
        }
    }
}

impl Store {
    /// The `seq` of every user that can meet `condition`, when the trigram
    /// index can list them and they are at most [`FEW`]; `None` when the
    /// condition must be evaluated on every user of the organization.
    pub(crate) async fn trigram_candidates(
        &self,
        condition: &UserCondition,
    ) -> Result<Option<BTreeSet<i64>>> {
        let Some(source) = condition.source() else {
            return Ok(None);
        };
        // Users written since the index last caught up may match anything.
        let sql = format!("SELECT seq FROM user_trigrams_pending LIMIT {}", FEW + 1);
        let pending: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_all(&self.pool).await?;
        if pending.len() > FEW {
            return Ok(None);
        }
        let mut leaves = Vec::new();
        source.leaves(&mut leaves);
        let mut answers = Vec::with_capacity(leaves.len());
        for leaf in leaves {
            let listed = self.listed(leaf).await?;
            answers.push(listed.map(|mut users| {
                users.extend(&pending);
                users
            }));
        }
        Ok(source.combine(&mut answers.into_iter()).filter(|users| users.len() <= FEW))
    }

    /// The index's answer for a leaf: the users' `seq`, or `None` when more
    /// than `FEW` entries hold the substring (across every organization:
    /// the index is one for all of them).
    async fn listed(&self, leaf: &Source) -> Result<Option<BTreeSet<i64>>> {
        let (column, needle) = match leaf {
            Source::UserName(needle) => ("user_name", needle),
            Source::EmailValue(needle) => ("emails", needle),
            Source::Both(..) | Source::Either(..) => unreachable!("leaves are lookups"),
        };
        // One row: the number of hits, bounded, and the hits as a JSON array.
        let sql = format!(
            "WITH hits AS MATERIALIZED (SELECT rowid AS seq FROM user_trigrams \
               WHERE user_trigrams MATCH $1 LIMIT {}) \
             SELECT COUNT(*) AS n, json_group_array(seq) AS users FROM hits",
            FEW + 1
        );
        let query = format!("{{{column}}} : {}", phrase(needle));
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(query).fetch_one(&self.pool).await?;
        let hits: i64 = row.try_get("n")?;
        if hits > FEW as i64 {
            return Ok(None);
        }
        let users: String = row.try_get("users")?;
        let users: BTreeSet<i64> = serde_json::from_str(&users)
            .map_err(|e| StoreError::Corrupt(format!("trigram index answer: {e}")))?;
        Ok(Some(users))
    }

    /// Brings the trigram index up to date with the users noted since it
    /// last was (migration 0019), [`BATCH`] users per transaction; returns
    /// how many it indexed. The store's background task calls it before
    /// each checkpoint (`checkpoint.rs`). No-op on PostgreSQL.
    pub async fn index_pending_trigrams(&self) -> Result<u64> {
        if self.backend != Backend::Sqlite {
            return Ok(0);
        }
        let mut indexed = 0;
        loop {
            // Under the write turn nothing else writes, so the batch is the
            // same set in each statement.
            let mut tx = self.begin_write().await?;
            let batch = format!("SELECT seq FROM user_trigrams_pending ORDER BY seq LIMIT {BATCH}");
            // A user's entry is replaced whole: removed, then written from
            // the user's current row (none if the user is gone).
            sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM user_trigrams WHERE rowid IN ({batch})")))
                .execute(&mut *tx)
                .await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO user_trigrams (rowid, user_name, emails) \
                 SELECT u.seq, u.user_name_normalized, \
                   (SELECT group_concat(e.value_normalized, char(10)) FROM user_emails e WHERE e.user_id = u.id) \
                 FROM users u WHERE u.seq IN ({batch})"
            )))
            .execute(&mut *tx)
            .await?;
            let noted = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM user_trigrams_pending WHERE seq IN ({batch})"
            )))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            indexed += noted;
            if noted < BATCH {
                return Ok(indexed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(column: UserColumn, op: TextOp, value: &str) -> UserCondition {
        UserCondition::Text { column, op, value: value.to_owned() }
    }

    fn email_value(op: TextOp, value: &str) -> EmailCondition {
        EmailCondition::Text { field: EmailField::Value, op, value: value.to_owned() }
    }

    #[test]
    fn only_substrings_an_index_holds_are_looked_up() {
        let name = |s: &str| Some(Source::UserName(s.to_owned()));
        assert_eq!(text(UserColumn::UserName, TextOp::Co, "abc").source(), name("abc"));
        assert_eq!(text(UserColumn::UserName, TextOp::Ew, "@acme.com").source(), name("@acme.com"));
        // Two characters make no trigram; other operators have a B-tree.
        assert_eq!(text(UserColumn::UserName, TextOp::Co, "ab").source(), None);
        assert_eq!(text(UserColumn::UserName, TextOp::Co, "éü").source(), None);
        assert_eq!(text(UserColumn::UserName, TextOp::Co, "ab\0cd").source(), None);
        assert_eq!(text(UserColumn::UserName, TextOp::Sw, "abc").source(), None);
        assert_eq!(text(UserColumn::ExternalId, TextOp::Co, "abc").source(), None);
        // A long needle is looked up by its first characters.
        let long = "x".repeat(1000);
        assert_eq!(text(UserColumn::UserName, TextOp::Co, &long).source(), name(&"x".repeat(LONGEST)));
    }

    #[test]
    fn a_source_must_list_every_match_of_the_whole_condition() {
        let co = text(UserColumn::UserName, TextOp::Co, "abc");
        let active = UserCondition::Active(true);
        let and = |a: &UserCondition, b: &UserCondition| {
            UserCondition::And(Box::new(a.clone()), Box::new(b.clone()))
        };
        let or = |a: &UserCondition, b: &UserCondition| {
            UserCondition::Or(Box::new(a.clone()), Box::new(b.clone()))
        };
        // `and` needs one side listed; `or` needs both.
        assert_eq!(and(&co, &active).source(), Some(Source::UserName("abc".into())));
        assert_eq!(or(&co, &active).source(), None);
        // A negation matches what the index does not list.
        assert_eq!(UserCondition::Not(Box::new(co.clone())).source(), None);
        assert_eq!(UserCondition::NoEmail(email_value(TextOp::Co, "abc")).source(), None);
        // Within an email entry: `and` needs a value substring on one side.
        let typed = EmailCondition::Text { field: EmailField::Type, op: TextOp::Eq, value: "work".into() };
        let entry = EmailCondition::And(Box::new(typed.clone()), Box::new(email_value(TextOp::Co, "@acme")));
        assert_eq!(UserCondition::AnyEmail(entry).source(), Some(Source::EmailValue("@acme".into())));
        assert_eq!(UserCondition::AnyEmail(typed).source(), None);
        let either = EmailCondition::Or(
            Box::new(email_value(TextOp::Co, "abc")),
            Box::new(email_value(TextOp::Eq, "x")),
        );
        assert_eq!(UserCondition::AnyEmail(either).source(), None);
    }

    #[test]
    fn answers_combine_as_the_condition_does() {
        let set = |v: &[i64]| Some(v.iter().copied().collect::<BTreeSet<_>>());
        let leaf = || Box::new(Source::UserName("abc".into()));
        let both = Source::Both(leaf(), leaf());
        assert_eq!(both.combine(&mut vec![set(&[1, 2, 3]), set(&[2, 3, 4])].into_iter()), set(&[2, 3]));
        // One side too common: the other still bounds an `and`...
        assert_eq!(both.combine(&mut vec![None, set(&[7])].into_iter()), set(&[7]));
        // ...but not an `or`.
        let either = Source::Either(leaf(), leaf());
        assert_eq!(either.combine(&mut vec![None, set(&[7])].into_iter()), None);
        assert_eq!(either.combine(&mut vec![set(&[1]), set(&[7])].into_iter()), set(&[1, 7]));
    }

    #[test]
    fn a_phrase_keeps_every_character_literal() {
        assert_eq!(phrase("abc"), "\"abc\"");
        assert_eq!(phrase("a\"b OR c*"), "\"a\"\"b OR c*\"");
    }
}
