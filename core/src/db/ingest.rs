//! External runs (issue 12, docs/ingest.md): runs that no worker trains,
//! created and written by a client over HTTP.
//!
//! The rules:
//! - creation is idempotent per (token, `client_run_id`): a retried create
//!   finds the run the first one made;
//! - a batch of points is stored whole or not at all: upserts on (run, key,
//!   step) into `metric_point` (a retry never duplicates, steps may come in
//!   any order, a new value for a point replaces the old: last write wins),
//!   the MAE keys projected into the epoch rows of the steps it touched (a
//!   key the batch lacks keeps its stored value, so keys sent in different
//!   batches meet in one row) and the run summary extended or refreshed;
//!   batches that arrive together share one transaction and commit
//!   ([`record_group`]); the notification goes out after the commit, merged
//!   with other batches' ([`notify_batches`]);
//! - every batch and heartbeat is a sign of life; a running external run
//!   silent for longer than its `lost_after_seconds` becomes `lost`
//!   ([`mark_lost`]), and comes back to `running` when its client does;
//! - this is the only write path for clients; workers keep their fenced one
//!   (`metrics`), and both end in the same `epoch_metric` rows.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::config::RunKind;

/// Most points in one batch (MLflow's documented limit, studies.md).
pub const MAX_POINTS: usize = 1000;
/// Longest metric key.
pub const MAX_KEY_CHARS: usize = 250;
/// Largest step: integers above 2^53 do not survive a JSON double.
pub const MAX_STEP: u64 = 1 << 53;
/// Silence after which a run is lost, unless its client says otherwise.
pub const DEFAULT_LOST_AFTER_SECONDS: i32 = 600;

/// The keys of the official MAE `log.txt` (and maelab's own epoch columns)
/// that land in the epoch rows, with the range each column accepts.
pub const EPOCH_KEYS: &[(&str, f64, f64)] = &[
    ("train_lr", f64::MIN, f64::MAX),
    ("train_loss", f64::MIN, f64::MAX),
    ("test_loss", f64::MIN, f64::MAX),
    ("test_acc1", 0.0, 100.0),
    ("test_acc5", 0.0, 100.0),
    ("n_parameters", 1.0, 9.0e15),
    ("psnr", f64::MIN, f64::MAX),
    ("hf_ratio", 0.0, f64::MAX),
    ("epoch_seconds", 0.0, f64::MAX),
    ("images_per_second", 0.0, f64::MAX),
];

/// Why an ingest write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A field breaks a rule (names it: `points[3].value`); 422.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("run {0} not found")]
    NotFound(Uuid),
    /// The run cannot take this write (finished, or a worker's); 409.
    #[error("{0}")]
    Conflict(String),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

impl IngestError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// A write to a run a worker trains; `hint` says what to do instead.
    fn worker_run(run_id: Uuid, hint: &str) -> Self {
        Self::Conflict(format!(
            "run {run_id} is trained by a maelab worker; {hint}"
        ))
    }

    /// A write to a run that has ended (`status`).
    fn finished(run_id: Uuid, status: &str) -> Self {
        Self::Conflict(format!(
            "run {run_id} is {status}; a finished run takes no more writes"
        ))
    }
}

/// What a client is told to do instead of writing a worker's run.
const ONLY_EXTERNAL: &str = "only external runs take metrics over HTTP";

/// A run to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewExternalRun {
    pub name: String,
    pub kind: RunKind,
    pub model: String,
    pub tags: Vec<String>,
    /// Free-form, stored as given.
    pub config: serde_json::Value,
    pub client_run_id: Option<String>,
    pub parent_run: Option<Uuid>,
    pub lost_after_seconds: i32,
}

/// The outcome of a create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Created {
    pub run_id: Uuid,
    /// False when `client_run_id` found the run an earlier create made.
    pub new: bool,
}

/// The run `created_by` created with `client_run_id`, if any.
pub async fn find(
    pool: &PgPool,
    created_by: Option<&str>,
    client_run_id: &str,
) -> Result<Option<Uuid>, IngestError> {
    Ok(sqlx::query_scalar::<_, Uuid>(
        "select run_id from run where coalesce(created_by, '') = coalesce($1, '')
         and client_run_id = $2",
    )
    .bind(created_by)
    .bind(client_run_id)
    .fetch_optional(pool)
    .await?)
}

/// Create an external run (status `running`), or find the one this token
/// created with the same `client_run_id`.
pub async fn create(
    pool: &PgPool,
    run: &NewExternalRun,
    created_by: Option<&str>,
) -> Result<Created, IngestError> {
    if let Some(id) = &run.client_run_id
        && let Some(run_id) = find(pool, created_by, id).await?
    {
        return Ok(Created { run_id, new: false });
    }
    if let Some(parent) = run.parent_run {
        let exists: bool =
            sqlx::query_scalar("select exists (select 1 from run where run_id = $1)")
                .bind(parent)
                .fetch_one(pool)
                .await?;
        if !exists {
            return Err(IngestError::invalid(
                "parent_run",
                format!("run {parent} does not exist"),
            ));
        }
        if run.kind != RunKind::Finetune {
            return Err(IngestError::invalid(
                "parent_run",
                "is only for finetune runs (kind = \"finetune\")",
            ));
        }
    }
    let epochs_total = run
        .config
        .get("epochs")
        .and_then(serde_json::Value::as_u64)
        .and_then(|e| i32::try_from(e).ok())
        .filter(|e| *e > 0)
        .unwrap_or(1);
    let inserted = sqlx::query_scalar::<_, Uuid>(
        "insert into run (name, kind, model, preset, config, tags, parent_run_id, epochs_total,
                          created_by, source, client_run_id, status, started_at, last_seen_at,
                          lost_after_seconds)
         values ($1, $2::run_kind, $3, '', $4, $5, $6, $7, $8, 'external', $9, 'running', now(),
                 now(), $10)
         on conflict (coalesce(created_by, ''), client_run_id) where client_run_id is not null
         do nothing
         returning run_id",
    )
    .bind(&run.name)
    .bind(run.kind.as_str())
    .bind(&run.model)
    .bind(&run.config)
    .bind(&run.tags)
    .bind(run.parent_run)
    .bind(epochs_total)
    .bind(created_by)
    .bind(&run.client_run_id)
    .bind(run.lost_after_seconds)
    .fetch_optional(pool)
    .await?;
    match inserted {
        Some(run_id) => {
            tracing::info!(%run_id, name = %run.name, "external run created");
            Ok(Created { run_id, new: true })
        }
        // A concurrent create with the same id won the race.
        None => match &run.client_run_id {
            Some(id) => find(pool, created_by, id).await?,
            None => None,
        }
        .map(|run_id| Created { run_id, new: false })
        .ok_or_else(|| IngestError::Conflict("the run was created and removed meanwhile".into())),
    }
}

/// One point as a client sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub key: String,
    pub step: u64,
    pub value: f64,
    pub wall_time: Option<DateTime<Utc>>,
}

/// Check every point, naming the first bad one by its index.
pub fn check_points(points: &[Point]) -> Result<(), IngestError> {
    if points.is_empty() {
        return Err(IngestError::invalid(
            "points",
            "must hold at least one point",
        ));
    }
    for (i, p) in points.iter().enumerate() {
        let at = |f: &str| format!("points[{i}].{f}");
        let chars = p.key.chars().count();
        if chars == 0 || chars > MAX_KEY_CHARS {
            return Err(IngestError::invalid(
                at("key"),
                format!("is {chars} characters; 1 to {MAX_KEY_CHARS}"),
            ));
        }
        if p.key.chars().any(char::is_control) {
            return Err(IngestError::invalid(
                at("key"),
                "must not contain control characters",
            ));
        }
        if p.step > MAX_STEP {
            return Err(IngestError::invalid(
                at("step"),
                format!("{} is above 2^53", p.step),
            ));
        }
        if !p.value.is_finite() {
            return Err(IngestError::invalid(at("value"), "must be a finite number"));
        }
        if let Some((_, lo, hi)) = EPOCH_KEYS.iter().find(|(k, _, _)| *k == p.key) {
            if p.value < *lo || p.value > *hi {
                return Err(IngestError::invalid(
                    at("value"),
                    format!(
                        "{} is out of range for {}; expected {lo} to {hi}",
                        p.value, p.key
                    ),
                ));
            }
            if p.key == "n_parameters" && p.value.fract() != 0.0 {
                return Err(IngestError::invalid(
                    at("value"),
                    "n_parameters must be a whole number",
                ));
            }
            if p.step > i32::MAX as u64 {
                return Err(IngestError::invalid(
                    at("step"),
                    format!(
                        "{} is too large for an epoch ({} keys are per epoch)",
                        p.step, p.key
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Lock an external run's row and return its status; a worker's run is a
/// conflict whose reason ends with `worker_hint`.
async fn lock_external(
    tx: &mut sqlx::PgConnection,
    run_id: Uuid,
    worker_hint: &str,
) -> Result<String, IngestError> {
    let row = sqlx::query(
        "select source, status::text as status from run where run_id = $1 for no key update",
    )
    .bind(run_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(IngestError::NotFound(run_id))?;
    let source: String = row.try_get("source")?;
    if source != "external" {
        return Err(IngestError::worker_run(run_id, worker_hint));
    }
    Ok(row.try_get("status")?)
}

/// Lock an external run that can take writes; revive it if it was lost.
async fn writable(tx: &mut sqlx::PgConnection, run_id: Uuid) -> Result<(), IngestError> {
    let status = lock_external(tx, run_id, ONLY_EXTERNAL).await?;
    match status.as_str() {
        "running" => {
            sqlx::query("update run set last_seen_at = now() where run_id = $1")
                .bind(run_id)
                .execute(&mut *tx)
                .await?;
            Ok(())
        }
        "lost" => {
            // Its client is back: the run goes on.
            sqlx::query(
                "update run set status = 'running', finished_at = null, error = null,
                                last_seen_at = now() where run_id = $1",
            )
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
            Ok(())
        }
        other => Err(IngestError::finished(run_id, other)),
    }
}

/// A checked batch, one entry per (key, step): the last point wins, as it
/// would across batches (PostgreSQL refuses to upsert one row twice per
/// statement).
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedBatch {
    points: Vec<Point>,
    /// Whether each point is one of the [`EPOCH_KEYS`] (lands in an epoch row).
    epoch: Vec<bool>,
}

impl PreparedBatch {
    /// Check the points ([`check_points`]) and keep the last of each (key, step).
    pub fn new(points: &[Point]) -> Result<Self, IngestError> {
        check_points(points)?;
        let mut seen = std::collections::HashSet::with_capacity(points.len());
        let mut kept: Vec<Point> = points
            .iter()
            .rev()
            .filter(|p| seen.insert((p.key.as_str(), p.step)))
            .cloned()
            .collect();
        kept.reverse();
        let epoch = kept
            .iter()
            .map(|p| EPOCH_KEYS.iter().any(|(k, _, _)| *k == p.key))
            .collect();
        Ok(Self {
            points: kept,
            epoch,
        })
    }

    /// Distinct (key, step) points.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
}

/// Store batches that arrived together with one statement, one transaction
/// and one commit (one disk flush) for all of them, instead of one each
/// (the schema's `ingest_group`); returns each batch's outcome in the order
/// given. A batch is still stored whole or not at all: a refused one
/// (unknown, a worker's or a finished run) writes nothing and the others go
/// on. A run's batches apply in the order given (the later value of a point
/// wins). Should the shared statement fail (a deadlock with the lost sweep,
/// a lost connection), each batch is retried alone.
pub async fn record_group(
    pool: &PgPool,
    batches: &[(Uuid, &PreparedBatch)],
) -> Vec<Result<Recorded, IngestError>> {
    match apply(pool, batches).await {
        Ok(outcomes) => outcomes,
        Err(e) if batches.len() > 1 => {
            tracing::warn!(error = %e, batches = batches.len(),
                "shared ingest statement failed; storing its batches one by one");
            let mut outcomes = Vec::with_capacity(batches.len());
            for one in batches {
                outcomes.push(match apply(pool, std::slice::from_ref(one)).await {
                    Ok(mut o) => o.pop().unwrap_or(Err(IngestError::NotFound(one.0))),
                    Err(e) => Err(e.into()),
                });
            }
            outcomes
        }
        Err(e) => batches.first().map(|_| Err(e.into())).into_iter().collect(),
    }
}

/// One call of `ingest_group` for these batches.
async fn apply(
    pool: &PgPool,
    batches: &[(Uuid, &PreparedBatch)],
) -> Result<Vec<Result<Recorded, IngestError>>, sqlx::Error> {
    let total: usize = batches.iter().map(|(_, b)| b.len()).sum();
    let (mut runs, mut keys, mut steps, mut values, mut times, mut epoch) = (
        Vec::with_capacity(total),
        Vec::with_capacity(total),
        Vec::with_capacity(total),
        Vec::with_capacity(total),
        Vec::with_capacity(total),
        Vec::with_capacity(total),
    );
    let mut seen = std::collections::HashSet::new();
    let repeated_run = batches.iter().any(|(run, _)| !seen.insert(*run));
    // A run with several batches: each (key, step) once, the latest batch's.
    let mut taken = std::collections::HashSet::new();
    for (run_id, batch) in batches.iter().rev() {
        for (p, is_epoch) in batch.points.iter().zip(&batch.epoch) {
            if repeated_run && !taken.insert((*run_id, p.key.as_str(), p.step)) {
                continue;
            }
            runs.push(*run_id);
            keys.push(p.key.as_str());
            steps.push(i64::try_from(p.step).unwrap_or(i64::MAX));
            values.push(p.value);
            times.push(p.wall_time);
            epoch.push(*is_epoch);
        }
    }
    let rows = sqlx::query(
        "select run_id, outcome, first_epoch, last_epoch
         from ingest_group($1, $2::text[], $3, $4, $5, $6)",
    )
    .bind(&runs)
    .bind(&keys)
    .bind(&steps)
    .bind(&values)
    .bind(&times)
    .bind(&epoch)
    .fetch_all(pool)
    .await?;
    let mut by_run = std::collections::HashMap::with_capacity(rows.len());
    for row in &rows {
        let run_id: Uuid = row.try_get("run_id")?;
        let outcome: String = row.try_get("outcome")?;
        let first: Option<i32> = row.try_get("first_epoch")?;
        let last: Option<i32> = row.try_get("last_epoch")?;
        by_run.insert(run_id, (outcome, first.zip(last)));
    }
    Ok(batches
        .iter()
        .map(|(run_id, batch)| {
            let run_id = *run_id;
            match by_run.get(&run_id).map(|(o, e)| (o.as_str(), *e)) {
                Some(("ok", epochs)) => Ok(Recorded {
                    points: batch.len(),
                    epochs,
                }),
                None | Some(("not_found", _)) => Err(IngestError::NotFound(run_id)),
                Some(("worker", _)) => Err(IngestError::worker_run(run_id, ONLY_EXTERNAL)),
                Some((status, _)) => Err(IngestError::finished(run_id, status)),
            }
        })
        .collect())
}

/// What [`record_group`] stored for a batch: the distinct points, and the range of
/// epochs whose rows it wrote (for the notification).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    pub points: usize,
    pub epochs: Option<(i32, i32)>,
}

/// Tell listeners (the server's live hub) what ingest batches wrote: one
/// `metric_point` notification per run with the range of epochs, all in one
/// statement outside the batches' transactions. Notifying inside a batch's
/// transaction made PostgreSQL commit batches one at a time (it holds the
/// notify queue's lock through each commit's disk flush): 560-650 commits/s
/// against 4,300-4,500 without, measured with pgbench here. Sent after the
/// commit, a notification can be lost if the process dies in between; pages
/// then catch up at their next event or reconnect (architecture.md: NOTIFY
/// only wakes, it never carries the data).
pub async fn notify_batches(
    pool: &PgPool,
    batches: &[(Uuid, Option<(i32, i32)>)],
) -> Result<(), sqlx::Error> {
    if batches.is_empty() {
        return Ok(());
    }
    let payloads: Vec<String> = batches
        .iter()
        .map(|(run_id, epochs)| {
            serde_json::json!({
                "run_id": run_id,
                "table": "metric_point",
                "epoch": epochs.map(|e| e.0),
                "last_epoch": epochs.map(|e| e.1),
            })
            .to_string()
        })
        .collect();
    sqlx::query("select pg_notify('maelab_events', p) from unnest($1::text[]) p")
        .bind(&payloads)
        .execute(pool)
        .await?;
    Ok(())
}

/// A heartbeat: the run is alive (a lost one runs again). Returns its status.
pub async fn heartbeat(pool: &PgPool, run_id: Uuid) -> Result<String, IngestError> {
    let mut tx = pool.begin().await?;
    writable(&mut tx, run_id).await?;
    tx.commit().await?;
    Ok("running".into())
}

/// How a client ends its run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishStatus {
    Succeeded,
    Failed,
}

impl FinishStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
}

/// Finish an external run. The same finish again is harmless (a retried
/// request); another end for a finished run is a conflict.
pub async fn finish(
    pool: &PgPool,
    run_id: Uuid,
    status: FinishStatus,
    reason: Option<&str>,
) -> Result<(), IngestError> {
    let mut tx = pool.begin().await?;
    let now = lock_external(&mut tx, run_id, "cancel it instead").await?;
    if now == status.as_str() {
        return Ok(());
    }
    if !matches!(now.as_str(), "running" | "lost") {
        return Err(IngestError::Conflict(format!(
            "run {run_id} is already {now}"
        )));
    }
    sqlx::query(
        "update run set status = $2::text::run_status, finished_at = now(), error = $3,
                        last_seen_at = now()
         where run_id = $1",
    )
    .bind(run_id)
    .bind(status.as_str())
    .bind(reason)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Mark running external runs whose client has been silent past their
/// timeout as `lost`; returns how many. Run by the server every few seconds.
pub async fn mark_lost(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "update run set status = 'lost', finished_at = now(),
                        error = format('no heartbeat for %s s (lost_after_seconds)', lost_after_seconds)
         where source = 'external' and status = 'running'
           and last_seen_at < now() - make_interval(secs => lost_after_seconds)",
    )
    .execute(pool)
    .await?;
    if done.rows_affected() > 0 {
        tracing::info!(lost = done.rows_affected(), "external runs marked lost");
    }
    Ok(done.rows_affected())
}

/// Store an artifact a client uploaded (its sha256 already checked against
/// the bytes), replacing one of the same name. Returns its id.
pub async fn put_artifact(
    pool: &PgPool,
    run_id: Uuid,
    artifact: &impl super::artifacts::ArtifactRow,
) -> Result<i64, IngestError> {
    let mut tx = pool.begin().await?;
    writable(&mut tx, run_id).await?;
    let id = super::artifacts::upsert(&mut tx, run_id, artifact)
        .await
        .map_err(|e| match e {
            super::queue::QueueError::Db(e) => IngestError::Db(e),
            other => IngestError::Conflict(other.to_string()),
        })?;
    tx.commit().await?;
    Ok(id)
}
