//! Counters for rate limits and lockouts, shared by every node.
//!
//! A key counts hits within a window; the hit that reaches the limit blocks
//! the key for one window from then on and starts the count afresh. Each hit
//! is one atomic upsert, so concurrent hits on any number of nodes never
//! lose a count. What a key is, and what counts as a hit, is the caller's.

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::{Result, Store, from_millis, millis};

/// At most `limit` hits per `window`; the hit that reaches it blocks the key
/// for a `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleRule {
    pub limit: u32,
    pub window: chrono::Duration,
}

/// What one hit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HitOutcome {
    /// Counted; the key has this many hits in its window.
    Counted { hits: u32 },
    /// This hit reached the limit: the key is blocked until then.
    Tripped { until: DateTime<Utc> },
}

/// A key as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleState {
    pub key: String,
    pub hits: u32,
    /// In the future while the key is blocked.
    pub blocked_until: DateTime<Utc>,
}

impl Store {
    /// The keys among `keys` that have a row, blocked or counting.
    pub async fn throttle_states(&self, keys: &[&str]) -> Result<Vec<ThrottleState>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT key, hits, blocked_until FROM throttles WHERE key IN {}",
            crate::in_json_strings(self.backend, 1)
        );
        let query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(crate::json_strings(keys));
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(ThrottleState {
                    key: r.try_get("key")?,
                    hits: u32::try_from(r.try_get::<i64, _>("hits")?).unwrap_or(u32::MAX),
                    blocked_until: from_millis(r.try_get("blocked_until")?),
                })
            })
            .collect()
    }

    /// Counts one hit on `key` under `rule`.
    pub async fn throttle_hit(
        &self,
        key: &str,
        rule: ThrottleRule,
        now: DateTime<Utc>,
    ) -> Result<HitOutcome> {
        // Every SET expression sees the row as it was; `fresh` is the count
        // this hit makes in the current window (a lapsed window starts at 1).
        const FRESH: &str = "(CASE WHEN throttles.window_ends <= $3 THEN 1 ELSE throttles.hits + 1 END)";
        let sql = format!(
            "INSERT INTO throttles (key, hits, window_ends, blocked_until) \
             VALUES ($1, CASE WHEN 1 >= $2 THEN 0 ELSE 1 END, $3 + $4, CASE WHEN 1 >= $2 THEN $3 + $4 ELSE 0 END) \
             ON CONFLICT (key) DO UPDATE SET \
               hits = CASE WHEN {FRESH} >= $2 THEN 0 ELSE {FRESH} END, \
               window_ends = CASE WHEN {FRESH} >= $2 OR throttles.window_ends <= $3 THEN $3 + $4 \
                             ELSE throttles.window_ends END, \
               blocked_until = CASE WHEN {FRESH} >= $2 THEN $3 + $4 ELSE throttles.blocked_until END \
             RETURNING hits, blocked_until"
        );
        let now_ms = millis(now);
        let _turn = self.write_turn().await;
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(key.to_owned())
            .bind(i64::from(rule.limit.max(1)))
            .bind(now_ms)
            .bind(rule.window.num_milliseconds().max(1))
            .fetch_one(&self.pool)
            .await?;
        let blocked_until: i64 = row.try_get("blocked_until")?;
        let hits = u32::try_from(row.try_get::<i64, _>("hits")?).unwrap_or(u32::MAX);
        // Only the tripping hit leaves the count at zero and the block
        // starting now (a later hit in the same millisecond counts 1).
        Ok(if hits == 0 && blocked_until == now_ms + rule.window.num_milliseconds().max(1) {
            HitOutcome::Tripped { until: from_millis(blocked_until) }
        } else {
            HitOutcome::Counted { hits }
        })
    }

    /// Forgets `key`'s count (a successful sign-in ends a run of failures).
    /// A block in force stays.
    pub async fn throttle_reset(&self, key: &str) -> Result<()> {
        let _turn = self.write_turn().await;
        sqlx::query("UPDATE throttles SET hits = 0 WHERE key = $1")
            .bind(key.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes the keys that neither count nor block any more; returns how
    /// many.
    pub async fn prune_throttles(&self, now: DateTime<Utc>) -> Result<u64> {
        let _turn = self.write_turn().await;
        let done = sqlx::query("DELETE FROM throttles WHERE window_ends <= $1 AND blocked_until <= $1")
            .bind(millis(now))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
