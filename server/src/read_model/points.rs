//! Generic metric points (any key a client logs, issue 12): the keys a run
//! has, grouped as the run page charts them, and one key's history.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

/// Most points one history read returns.
pub const MAX_HISTORY: i64 = 100_000;

/// A key of a run with how many points it has.
#[derive(Debug, Clone, Serialize, FromRow)]
pub struct KeyInfo {
    pub key: String,
    /// The part before the first `/` (`train/loss` -> `train`), or the key.
    pub group: String,
    pub points: i64,
    pub first_step: i64,
    pub last_step: i64,
    pub last_value: f64,
}

/// Every key of `run_id`, by group then key.
pub async fn keys(pool: &PgPool, run_id: Uuid) -> Result<Vec<KeyInfo>, sqlx::Error> {
    sqlx::query_as::<_, KeyInfo>(
        "select key, split_part(key, '/', 1) as \"group\", count(*) as points,
                min(step) as first_step, max(step) as last_step,
                (array_agg(value order by step desc))[1] as last_value
         from metric_point where run_id = $1
         group by key order by 2, 1",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await
}

/// One point of a history.
#[derive(Debug, Clone, Serialize, FromRow)]
pub struct PointRow {
    pub step: i64,
    pub value: f64,
    pub wall_time: Option<DateTime<Utc>>,
}

/// The points of `key` after `after` (exclusive), by step, at most `limit`.
/// One index range scan on the primary key (run, key, step).
pub async fn history(
    pool: &PgPool,
    run_id: Uuid,
    key: &str,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<PointRow>, sqlx::Error> {
    sqlx::query_as::<_, PointRow>(
        "select step, value, wall_time from metric_point
         where run_id = $1 and key = $2 and step > $3
         order by step limit $4",
    )
    .bind(run_id)
    .bind(key)
    .bind(after.unwrap_or(-1))
    .bind(limit.clamp(1, MAX_HISTORY))
    .fetch_all(pool)
    .await
}
