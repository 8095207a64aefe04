//! Runs as the lists and detail views show them: the run row (which carries
//! the summary of its epoch rows: epochs done, best top-1 and top-5, last
//! training loss, kept by a trigger) joined with its job and its worker, with
//! filters, text search, sorting by any shown column and pagination.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{FromRow, PgPool, Row};
use uuid::Uuid;

use super::{MODELS, RUN_KINDS, RUN_STATUSES, ReadError};

/// Rows per page when none is asked for, and the most one page may hold.
pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;

/// Columns a run list can be sorted by (every column the runs page shows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunSort {
    #[default]
    CreatedAt,
    Name,
    Status,
    Model,
    Kind,
    Preset,
    EpochsDone,
    EpochsTotal,
    BestAcc1,
    BestAcc5,
    LastLoss,
    Duration,
    Worker,
    StartedAt,
    FinishedAt,
}

impl RunSort {
    /// Every sort key, as the API spells it (for the OpenAPI enum).
    pub const ALL: &'static [&'static str] = &[
        "created_at",
        "name",
        "status",
        "model",
        "kind",
        "preset",
        "epochs_done",
        "epochs_total",
        "best_acc1",
        "best_acc5",
        "last_loss",
        "duration",
        "worker",
        "started_at",
        "finished_at",
    ];

    /// The same key as an expression over the `run` table alone, when it is
    /// one (the epoch summaries are columns of `run`, kept by a trigger on
    /// `epoch_metric`, migration 0002): such lists pick their page from `run`
    /// first and join only those rows with their job and worker.
    fn run_column(self) -> Option<&'static str> {
        Some(match self {
            Self::CreatedAt => "r.created_at",
            Self::Name => "lower(r.name)",
            Self::Status => "r.status::text",
            Self::Model => "r.model",
            Self::Kind => "r.kind::text",
            Self::Preset => "r.preset",
            Self::EpochsDone => "r.epochs_done",
            Self::EpochsTotal => "r.epochs_total",
            Self::BestAcc1 => "r.best_acc1",
            Self::BestAcc5 => "r.best_acc5",
            Self::LastLoss => "r.last_train_loss",
            Self::Duration => "extract(epoch from (coalesce(r.finished_at, now()) - r.started_at))",
            Self::StartedAt => "r.started_at",
            Self::FinishedAt => "r.finished_at",
            Self::Worker => return None,
        })
    }

    /// The SQL expression over the list query's columns. A closed set of
    /// literals: nothing the caller typed reaches the SQL text.
    fn sql(self) -> &'static str {
        match self {
            Self::CreatedAt => "created_at",
            Self::Name => "lower(name)",
            Self::Status => "status",
            Self::Model => "model",
            Self::Kind => "kind",
            Self::Preset => "preset",
            Self::EpochsDone => "epochs_done",
            Self::EpochsTotal => "epochs_total",
            Self::BestAcc1 => "best_acc1",
            Self::BestAcc5 => "best_acc5",
            Self::LastLoss => "last_loss",
            Self::Duration => "extract(epoch from (coalesce(finished_at, now()) - started_at))",
            Self::Worker => "worker",
            Self::StartedAt => "started_at",
            Self::FinishedAt => "finished_at",
        }
    }
}

/// Ascending or descending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortOrder {
    Asc,
    #[default]
    Desc,
}

/// What a run list shows: every field optional; the query string of
/// `GET /api/v1/runs` and of the runs page deserialises into it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunFilter {
    /// One of [`RUN_STATUSES`].
    pub status: Option<String>,
    /// `mae` or `wave_mae`.
    pub model: Option<String>,
    /// `pretrain` or `finetune`.
    pub kind: Option<String>,
    /// Runs carrying this tag.
    pub tag: Option<String>,
    /// Case-insensitive text search over name, preset, tags and id.
    pub q: Option<String>,
    pub sort: Option<RunSort>,
    pub order: Option<SortOrder>,
    /// Rows per page, 1..=[`MAX_LIMIT`] (default [`DEFAULT_LIMIT`]).
    pub limit: Option<i64>,
    /// Rows skipped, >= 0.
    pub offset: Option<i64>,
}

/// One row of a run list; also the row the live streams send when a run
/// appears or changes status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, FromRow)]
pub struct RunSummary {
    pub run_id: Uuid,
    pub name: String,
    pub kind: String,
    pub model: String,
    pub preset: String,
    pub status: String,
    pub tags: Vec<String>,
    pub epochs_done: i64,
    pub epochs_total: i32,
    /// Highest test top-1 over the run's epochs (finetunes), percent.
    pub best_acc1: Option<f64>,
    pub best_acc5: Option<f64>,
    /// Training loss of the newest epoch row.
    pub last_loss: Option<f64>,
    /// Sum of the epochs' `epoch_seconds` (time spent training, without
    /// start-up and evaluation gaps).
    pub train_seconds: Option<f64>,
    /// Mean of the epochs' `images_per_second`.
    pub mean_images_per_second: Option<f64>,
    /// Trainable parameters: as configured, else as the epochs reported.
    pub n_parameters: Option<i64>,
    /// Seconds from start to finish (to now while running); None until started.
    #[sqlx(skip)]
    pub duration_seconds: Option<f64>,
    /// Name of the worker holding (or that last held) the run's job.
    pub worker: Option<String>,
    pub error: Option<String>,
    pub created_by: Option<String>,
    pub parent_run_id: Option<Uuid>,
    pub parent_epoch: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// One page of runs and how many match in all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunPage {
    pub runs: Vec<RunSummary>,
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

/// A run with everything its page shows above the charts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, FromRow)]
pub struct RunDetail {
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub summary: RunSummary,
    /// The resolved, validated config the worker trains.
    pub config: serde_json::Value,
    pub job_id: Option<i64>,
    pub job_state: Option<String>,
    pub attempt: Option<i32>,
    pub max_attempts: Option<i32>,
    pub cancel_requested: Option<bool>,
    pub worker_id: Option<Uuid>,
    pub heartbeat_at: Option<DateTime<Utc>>,
    /// The epoch a requeued attempt resumes after.
    pub checkpoint_epoch: Option<i32>,
    /// 1-based place on the queue while queued.
    pub queue_position: Option<i64>,
}

/// The columns of a run list row; `r`, `j` and `w` are joined below.
const SUMMARY_SELECT: &str = "
    select r.run_id, r.name, r.kind::text as kind, r.model, r.preset, r.status::text as status,
           r.tags, r.epochs_total, coalesce(r.n_parameters, r.epoch_n_parameters) as n_parameters,
           r.error, r.created_by, r.parent_run_id, r.parent_epoch, r.created_at, r.started_at,
           r.finished_at, r.epochs_done::bigint as epochs_done, r.best_acc1, r.best_acc5,
           r.last_train_loss as last_loss, r.train_seconds, r.mean_images_per_second,
           w.name as worker,
           j.job_id, j.state::text as job_state, j.attempt, j.max_attempts, j.cancel_requested,
           j.worker_id, j.heartbeat_at, j.checkpoint_epoch, j.priority, j.enqueued_at
    from run r
    left join job j on j.run_id = r.run_id
    left join worker w on w.worker_id = j.worker_id";

impl RunSummary {
    /// Sets `duration_seconds` from the start and finish times, up to now for a
    /// run still going (so a cached row still shows the right running time).
    fn with_duration(mut self) -> Self {
        self.set_duration();
        self
    }

    fn set_duration(&mut self) {
        self.duration_seconds = self.started_at.map(|start| {
            let end = self.finished_at.unwrap_or_else(Utc::now);
            ((end - start).num_milliseconds() as f64 / 1000.0).max(0.0)
        });
    }
}

impl RunPage {
    /// Brings the running time of runs still going up to now.
    pub fn refresh_durations(&mut self) {
        for run in &mut self.runs {
            if run.finished_at.is_none() {
                run.set_duration();
            }
        }
    }
}

/// Check the filter against the closed sets the schema allows, so a bad value
/// is a 400 naming the parameter rather than a database cast error.
fn checked(filter: &RunFilter) -> Result<(i64, i64), ReadError> {
    let one_of = |field: &'static str, value: &Option<String>, allowed: &[&str]| match value {
        Some(v) if !allowed.contains(&v.as_str()) => Err(ReadError::invalid(
            field,
            format!("`{v}` is not one of {}", allowed.join(", ")),
        )),
        _ => Ok(()),
    };
    one_of("status", &filter.status, RUN_STATUSES)?;
    one_of("model", &filter.model, MODELS)?;
    one_of("kind", &filter.kind, RUN_KINDS)?;
    let limit = filter.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ReadError::invalid(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let offset = filter.offset.unwrap_or(0);
    if offset < 0 {
        return Err(ReadError::invalid("offset", "must not be negative"));
    }
    for (field, text) in [("tag", &filter.tag), ("q", &filter.q)] {
        if text.as_deref().is_some_and(|t| t.contains('\0')) {
            return Err(ReadError::invalid(field, "must not contain NUL characters"));
        }
    }
    Ok((limit, offset))
}

/// The filter's WHERE clause over `run r` (parameters $1-$5).
const RUN_WHERE: &str = "
    ($1::text is null or r.status::text = $1)
    and ($2::text is null or r.model = $2)
    and ($3::text is null or r.kind::text = $3)
    and ($4::text is null or $4 = any(r.tags))
    and ($5::text is null
         or strpos(lower(r.name), lower($5)) > 0
         or strpos(lower(r.preset), lower($5)) > 0
         or strpos(r.run_id::text, lower($5)) > 0
         or exists (select 1 from unnest(r.tags) t where strpos(lower(t), lower($5)) > 0))";

fn bind_filter<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    f: &'q RunFilter,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    q.bind(&f.status)
        .bind(&f.model)
        .bind(&f.kind)
        .bind(&f.tag)
        .bind(&f.q)
}

/// One page of runs matching `filter`, sorted as asked (ties broken by
/// newest first, then id, so pages never overlap).
///
/// Sorted by a column of the run itself (the epoch summaries included), the
/// page is chosen from `run` alone and only its rows are joined with their
/// job and worker; sorted by worker, every matching run is joined first.
pub async fn list_runs(pool: &PgPool, filter: &RunFilter) -> Result<RunPage, ReadError> {
    let (limit, offset) = checked(filter)?;
    let sort = filter.sort.unwrap_or_default();
    let order = match filter.order.unwrap_or_default() {
        SortOrder::Asc => "asc nulls first",
        SortOrder::Desc => "desc nulls last",
    };
    let sql = match sort.run_column() {
        Some(column) => format!(
            "with page as (
                 select r.run_id, count(*) over () as total,
                        row_number() over (order by {column} {order}, r.created_at desc, r.run_id)
                            as place
                 from run r where {RUN_WHERE}
                 order by place limit $6 offset $7
             )
             select s.*, page.total from ({SUMMARY_SELECT} where r.run_id in (select run_id from page)) s
             join page using (run_id) order by page.place"
        ),
        None => format!(
            "select s.*, count(*) over () as total from ({SUMMARY_SELECT} where {RUN_WHERE}) s
             order by {} {order}, created_at desc, run_id
             limit $6 offset $7",
            sort.sql()
        ),
    };
    let rows = bind_filter(sqlx::query(&sql), filter)
        .bind(limit)
        .bind(offset)
        .fetch_all(pool)
        .await?;
    let total = match rows.first() {
        Some(row) => row.try_get("total")?,
        None if offset > 0 => count_runs(pool, filter).await?,
        None => 0,
    };
    let runs = rows
        .iter()
        .map(|row| RunSummary::from_row(row).map(RunSummary::with_duration))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RunPage {
        runs,
        total,
        limit,
        offset,
    })
}

/// How many runs match `filter` (for a page past the end, where the window
/// count has no row to ride on).
async fn count_runs(pool: &PgPool, filter: &RunFilter) -> Result<i64, ReadError> {
    let sql = format!("select count(*) from run r where {RUN_WHERE}");
    let row = bind_filter(sqlx::query(&sql), filter)
        .fetch_one(pool)
        .await?;
    Ok(row.try_get(0)?)
}

/// One run with its job, worker and queue position, or None.
pub async fn get_run(pool: &PgPool, run_id: Uuid) -> Result<Option<RunDetail>, ReadError> {
    let sql = format!(
        "select s.*, r2.config,
                case when s.job_state = 'queued' then (
                    select count(*) from job q
                    where q.state = 'queued'
                      and (q.priority, -extract(epoch from q.enqueued_at), -q.job_id)
                          >= (s.priority, -extract(epoch from s.enqueued_at), -s.job_id)
                ) end as queue_position
         from ({SUMMARY_SELECT} where r.run_id = $1) s join run r2 using (run_id)"
    );
    let detail = sqlx::query_as::<_, RunDetail>(&sql)
        .bind(run_id)
        .fetch_optional(pool)
        .await?;
    Ok(detail.map(|mut d| {
        d.summary.set_duration();
        d
    }))
}

/// One run's list row, or None (what the live hub sends when a run changes).
pub async fn summary(pool: &PgPool, run_id: Uuid) -> Result<Option<RunSummary>, sqlx::Error> {
    let row = sqlx::query_as::<_, RunSummary>(&format!("{SUMMARY_SELECT} where r.run_id = $1"))
        .bind(run_id)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(RunSummary::with_duration))
}

/// Whether a run with this id exists (metric and artifact reads answer 404
/// for a missing run rather than an empty list).
pub async fn run_exists(pool: &PgPool, run_id: Uuid) -> Result<bool, ReadError> {
    Ok(
        sqlx::query_scalar("select exists (select 1 from run where run_id = $1)")
            .bind(run_id)
            .fetch_one(pool)
            .await?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(started: Option<DateTime<Utc>>, finished: Option<DateTime<Utc>>) -> RunSummary {
        RunSummary {
            run_id: Uuid::nil(),
            name: "r".into(),
            kind: "pretrain".into(),
            model: "mae".into(),
            preset: "vit-micro/4".into(),
            status: "running".into(),
            tags: vec![],
            epochs_done: 0,
            epochs_total: 1,
            best_acc1: None,
            best_acc5: None,
            last_loss: None,
            train_seconds: None,
            mean_images_per_second: None,
            n_parameters: None,
            duration_seconds: None,
            worker: None,
            error: None,
            created_by: None,
            parent_run_id: None,
            parent_epoch: None,
            created_at: Utc::now(),
            started_at: started,
            finished_at: finished,
        }
        .with_duration()
    }

    #[test]
    fn durations_run_to_now_while_going_and_stop_at_the_finish() {
        let start = Utc::now() - chrono::Duration::seconds(90);
        let finished = summary(Some(start), Some(start + chrono::Duration::seconds(30)));
        assert_eq!(finished.duration_seconds, Some(30.0));
        assert_eq!(summary(None, None).duration_seconds, None);

        let mut page = RunPage {
            runs: vec![summary(Some(start), None), finished],
            total: 2,
            limit: 50,
            offset: 0,
        };
        // As a cached page would hold it: a minute old.
        page.runs[0].duration_seconds = Some(30.0);
        page.refresh_durations();
        let going = page.runs[0].duration_seconds.expect("started");
        assert!((90.0..100.0).contains(&going), "{going}");
        assert_eq!(page.runs[1].duration_seconds, Some(30.0));
    }
}
