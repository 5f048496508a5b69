//! Narrowing a filter through SQLite's trigram indexes (migration 0018).
//!
//! `co` and `ew` on userName or on an email's value cannot use a B-tree, so
//! without help they read every user of the organization: about 10 ms at
//! 100k users, twice per request (the count, then the page). The FTS5
//! trigram tables list the users whose text contains a substring in well
//! under a millisecond when few do, and slower than the scan when most do,
//! and SQLite keeps no statistics on them with which to choose. So the
//! choice is made here, per request: ask each index for at most [`FEW`]
//! entries plus one; when it has no more than `FEW`, those are the only
//! users that can match, and the whole condition is then checked on just
//! them. When it has more, the substring is common and the scan is the
//! cheaper plan.
//!
//! What an index answers is only ever a superset of the matches: the
//! condition is always evaluated in full on the candidates, so the indexes
//! decide how fast a filter is, never what it returns. PostgreSQL has
//! `pg_trgm` indexes and a planner with statistics instead, and never comes
//! here.

use std::collections::BTreeSet;

use sqlx::Row;

use crate::users::{EmailCondition, EmailField, TextOp, UserColumn, UserCondition};
use crate::{Result, Store, StoreError};

/// The most candidates worth checking one at a time: each is a lookup by
/// rowid (about a microsecond), so `FEW` of them cost a small part of a scan
/// of 100k users, whatever the organization's size.
pub(crate) const FEW: usize = 2000;

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
/// nothing shorter than three characters.
fn searchable(value: &str) -> Option<String> {
    (value.chars().count() >= 3).then(|| value.chars().take(LONGEST).collect())
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
    /// indexes can list them and they are at most [`FEW`]; `None` when the
    /// condition must be evaluated on every user of the organization.
    pub(crate) async fn trigram_candidates(
        &self,
        condition: &UserCondition,
    ) -> Result<Option<BTreeSet<i64>>> {
        let Some(source) = condition.source() else {
            return Ok(None);
        };
        let mut leaves = Vec::new();
        source.leaves(&mut leaves);
        let mut answers = Vec::with_capacity(leaves.len());
        for leaf in leaves {
            answers.push(self.listed(leaf).await?);
        }
        Ok(source.combine(&mut answers.into_iter()))
    }

    /// One index's answer for a leaf: the users' `seq`, or `None` when more
    /// than `FEW` entries hold the substring (across every organization:
    /// the index is one for all of them).
    async fn listed(&self, leaf: &Source) -> Result<Option<BTreeSet<i64>>> {
        // The hits are bounded before anything else is read; the users
        // are then found by key. One row comes back: the number of hits and
        // the users as a JSON array.
        let (needle, users) = match leaf {
            Source::UserName(needle) => (
                needle,
                format!(
                    "WITH hits AS MATERIALIZED (SELECT rowid AS seq FROM user_name_trigrams \
                       WHERE user_name_trigrams MATCH $1 LIMIT {limit}) \
                     SELECT (SELECT COUNT(*) FROM hits) AS n, \
                            (SELECT json_group_array(seq) FROM hits) AS users",
                    limit = FEW + 1
                ),
            ),
            Source::EmailValue(needle) => (
                needle,
                format!(
                    "WITH hits AS MATERIALIZED (SELECT rowid AS seq FROM user_email_trigrams \
                       WHERE user_email_trigrams MATCH $1 LIMIT {limit}) \
                     SELECT (SELECT COUNT(*) FROM hits) AS n, \
                            (SELECT json_group_array(u.seq) FROM hits \
                               CROSS JOIN user_emails e ON e.seq = hits.seq \
                               CROSS JOIN users u ON u.id = e.user_id) AS users",
                    limit = FEW + 1
                ),
            ),
            Source::Both(..) | Source::Either(..) => unreachable!("leaves are lookups"),
        };
        let row = sqlx::query(sqlx::AssertSqlSafe(users)).bind(phrase(needle)).fetch_one(&self.pool).await?;
        let hits: i64 = row.try_get("n")?;
        if hits > FEW as i64 {
            return Ok(None);
        }
        let users: String = row.try_get("users")?;
        let users: BTreeSet<i64> = serde_json::from_str(&users)
            .map_err(|e| StoreError::Corrupt(format!("trigram index answer: {e}")))?;
        Ok(Some(users))
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
