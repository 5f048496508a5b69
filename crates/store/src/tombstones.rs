//! Users SCIM deleted, remembered so that a sign-in does not bring them
//! back: where an organization provisions by SCIM, SCIM decides who exists.
//!
//! Deleting through SCIM leaves one tombstone per identity link the user had
//! (or one without a link), holding the address and externalId too. A
//! sign-in whose subject, address or externalId matches one is refused; SCIM
//! creating a user with that address or externalId lifts the tombstones.

use chrono::{DateTime, Utc};
use gatehouse_core::{OrgId, UserId};
use sqlx::Row;

use crate::{Result, Store, from_millis, millis, parse_id};

/// A deleted user's remains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    pub user_id: UserId,
    pub deleted_at: DateTime<Utc>,
}

/// Who is signing in, as far as tombstones can tell.
#[derive(Debug, Clone, Copy)]
pub struct SignInKeys<'a> {
    pub org: OrgId,
    pub connection_id: &'a str,
    pub subject: &'a str,
    pub email: Option<&'a str>,
    pub external_id: Option<&'a str>,
}

impl Store {
    /// Deletes the user as SCIM does: the user, their sessions and links go,
    /// and tombstones stay, in one transaction.
    pub async fn delete_user_tombstoned(&self, id: UserId, now: DateTime<Utc>) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let user = crate::users::fetch_user(&mut tx, id).await?;
        let links: Vec<(String, String)> =
            sqlx::query("SELECT connection_id, subject FROM identity_links WHERE user_id = $1")
                .bind(id.to_string())
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| Ok((r.try_get("connection_id")?, r.try_get("subject")?)))
                .collect::<Result<_>>()?;
        let links: Vec<(Option<String>, Option<String>)> = if links.is_empty() {
            vec![(None, None)]
        } else {
            links.into_iter().map(|(c, s)| (Some(c), Some(s))).collect()
        };
        for (connection, subject) in links {
            sqlx::query(
                "INSERT INTO scim_tombstones (id, org_id, user_id, connection_id, subject, email_normalized, \
                 external_id_normalized, deleted_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(user.org_id.to_string())
            .bind(id.to_string())
            .bind(connection)
            .bind(subject)
            .bind(user.email.as_ref().map(|e| e.normalized().to_owned()))
            .bind(user.external_id.as_ref().map(|e| e.to_lowercase()))
            .bind(millis(now))
            .execute(&mut *tx)
            .await?;
        }
        let done =
            sqlx::query("DELETE FROM users WHERE id = $1").bind(id.to_string()).execute(&mut *tx).await?;
        crate::found(done)?;
        tx.commit().await
    }

    /// The tombstone a sign-in with these keys runs into, if any.
    pub async fn find_tombstone(&self, keys: SignInKeys<'_>) -> Result<Option<Tombstone>> {
        let row = sqlx::query(
            "SELECT user_id, deleted_at FROM scim_tombstones WHERE org_id = $1 AND ( \
               (connection_id = $2 AND subject = $3) \
               OR ($4 <> '' AND email_normalized = $4) \
               OR ($5 <> '' AND external_id_normalized = $5)) \
             ORDER BY deleted_at DESC LIMIT 1",
        )
        .bind(keys.org.to_string())
        .bind(keys.connection_id)
        .bind(keys.subject)
        .bind(keys.email.map_or_else(String::new, str::to_lowercase))
        .bind(keys.external_id.map_or_else(String::new, str::to_lowercase))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(Tombstone {
                user_id: parse_id(&row.try_get::<String, _>("user_id")?)?,
                deleted_at: from_millis(row.try_get("deleted_at")?),
            })
        })
        .transpose()
    }
}

/// What a user that SCIM creates supersedes: the tombstones of its
/// organization with its address or its externalId.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Supersedes<'a> {
    pub(crate) org: OrgId,
    pub(crate) email: Option<&'a str>,
    pub(crate) external_id: Option<&'a str>,
}

/// A key as tombstones hold it: lower-cased; an empty one is no key.
fn key(value: Option<&str>) -> Option<String> {
    value.filter(|v| !v.is_empty()).map(str::to_lowercase)
}

/// A tombstone that the statement `add_lift` declares removed.
#[derive(Debug)]
pub(crate) struct Lifted {
    org: OrgId,
    email: Option<String>,
    external_id: Option<String>,
}

impl Lifted {
    /// Whether `user` is one the deletion condition of `add_lift` matched
    /// this tombstone for.
    fn matches(&self, user: &Supersedes<'_>) -> bool {
        let same = |held: &Option<String>, given: Option<&str>| {
            key(given).is_some_and(|k| held.as_ref() == Some(&k))
        };
        user.org == self.org && (same(&self.email, user.email) || same(&self.external_id, user.external_id))
    }
}

/// Declares in `batch`, as its last statement, the deletion of the
/// tombstones that `users` supersede, returning what it deletes (read
/// with `lifted`). Nothing is declared when no user has a key.
pub(crate) fn add_lift(batch: &mut crate::inserts::Inserts, users: &[Supersedes<'_>]) {
    let users: Vec<_> =
        users.iter().filter(|u| key(u.email).is_some() || key(u.external_id).is_some()).collect();
    if users.is_empty() {
        return;
    }
    // Each value appears once, so that both backends bind the same list;
    // an absent key is NULL, which equals nothing.
    let one = "(org_id = ? AND (email_normalized = ? OR external_id_normalized = ?))";
    batch.statement(
        format!(
            "DELETE FROM scim_tombstones WHERE {} RETURNING org_id, email_normalized, external_id_normalized",
            vec![one; users.len()].join(" OR ")
        ),
        3 * users.len(),
    );
    for user in users {
        batch.bind(user.org.to_string()).bind(key(user.email)).bind(key(user.external_id));
    }
}

/// The tombstones a statement declared by `add_lift` deleted.
pub(crate) fn lifted(rows: &[sqlx::any::AnyRow]) -> Result<Vec<Lifted>> {
    rows.iter().map(|row| lifted_row(row)).collect()
}

/// One row of what a statement declared by `add_lift` deleted.
pub(crate) fn lifted_row(row: &dyn crate::columns::Columns) -> Result<Lifted> {
    Ok(Lifted {
        org: parse_id(&row.text("org_id")?)?,
        email: row.text_opt("email_normalized")?,
        external_id: row.text_opt("external_id_normalized")?,
    })
}

/// How many of `lifted` each of `users` lifted (0 for `None`, a user that
/// lifts nothing): each tombstone counted once, for the first user it
/// matches, as if the users had been created one after another.
pub(crate) fn count_per_user(lifted: Vec<Lifted>, users: &[Option<Supersedes<'_>>]) -> Vec<u64> {
    let mut left: Vec<Lifted> = lifted;
    users
        .iter()
        .map(|user| {
            let Some(user) = user else { return 0 };
            let before = left.len();
            left.retain(|tombstone| !tombstone.matches(user));
            (before - left.len()) as u64
        })
        .collect()
}
