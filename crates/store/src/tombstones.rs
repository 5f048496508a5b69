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

use crate::{Result, Store, StoreError, from_millis, millis, parse_id};

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

    /// Lifts the tombstones SCIM creating a user with this address or
    /// externalId supersedes; returns how many.
    pub async fn lift_tombstones(
        &self,
        org: OrgId,
        email: Option<&str>,
        external_id: Option<&str>,
    ) -> Result<u64> {
        if email.is_none() && external_id.is_none() {
            return Ok(0);
        }
        let _turn = self.write_turn().await;
        let done = sqlx::query(
            "DELETE FROM scim_tombstones WHERE org_id = $1 \
             AND (($2 <> '' AND email_normalized = $2) OR ($3 <> '' AND external_id_normalized = $3))",
        )
        .bind(org.to_string())
        .bind(email.map_or_else(String::new, str::to_lowercase))
        .bind(external_id.map_or_else(String::new, str::to_lowercase))
        .execute(&self.pool)
        .await
        .map_err(StoreError::from)?;
        Ok(done.rows_affected())
    }
}
