//! Study writes: submit (one transaction: the study, its arms, its chains and
//! their first runs or the arms' calibration jobs), the chain's next stage
//! (queued by the completion path in the transaction that finishes its
//! pretrain run), calibration, cancel and retry.
//!
//! The rules (studies.md):
//! - nothing is queued from a study that fails a check: [`create_study`] takes
//!   an [`ExpandedStudy`], whose every config was resolved and validated;
//! - a chain's finetune exists only once its pretrain run succeeded: the
//!   queue's `complete` calls [`advance_chain`] before it commits, and the
//!   unique index on (study, arm, seed, kind) makes a repeat a no-op;
//! - a cancelled study queues nothing new: every path that creates a run
//!   checks `cancelled_at` under the study row's lock, which cancel takes too;
//! - a seconds budget is turned into images once per arm and stage by the
//!   worker that claims the study's calibration job (all arms measured side
//!   by side); every seed reuses it.

use serde_json::Value;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::queue::{self, JobType, Lease, NewJob, QueueError};
use super::runs::{self, JobOptions, RunError, StudyLink};
use crate::config::{ConfigErrors, RunConfig, RunKind};
use crate::study::spec::{self, Arm, ExpandedStudy, Stages, StudySpec};
use crate::study::{Budget, StageSize};

/// Why a study write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum StudyError {
    /// A field breaks a rule; 422.
    #[error(transparent)]
    Invalid(#[from] ConfigErrors),
    #[error("study {0} not found")]
    NotFound(Uuid),
    /// 409: e.g. retrying a chain that is still running.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

impl From<RunError> for StudyError {
    fn from(e: RunError) -> Self {
        match e {
            RunError::Invalid(errors) => Self::Invalid(errors),
            RunError::NotFound(id) => Self::Conflict(format!("run {id} vanished")),
            RunError::Conflict(m) => Self::Conflict(m),
            RunError::Db(e) => Self::Db(e),
        }
    }
}

/// What [`create_study`] queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedStudy {
    pub study_id: Uuid,
    /// Runs queued now (with a seconds budget: none until calibration).
    pub runs_queued: usize,
    /// Calibration jobs queued (one per arm with a seconds budget).
    pub calibrations_queued: usize,
}

/// Store an expanded study and queue its work, all in one transaction.
pub async fn create_study(
    pool: &PgPool,
    study: &ExpandedStudy,
    created_by: Option<&str>,
) -> Result<CreatedStudy, StudyError> {
    let spec_json = serde_json::to_value(&study.spec)
        .map_err(|e| ConfigErrors::one("", format!("cannot serialise the study: {e}")))?;
    let budget_json = serde_json::to_value(study.budget)
        .map_err(|e| ConfigErrors::one("budget", format!("cannot serialise: {e}")))?;
    let mut tx = pool.begin().await?;
    let study_id: Uuid = sqlx::query_scalar(
        "insert into study (name, spec, stages, baseline_arm, budget, created_by)
         values ($1, $2, $3, $4, $5, $6) returning study_id",
    )
    .bind(&study.spec.name)
    .bind(&spec_json)
    .bind(study.stages.as_str())
    .bind(&study.baseline)
    .bind(&budget_json)
    .bind(created_by)
    .fetch_one(&mut *tx)
    .await?;
    for (position, arm) in study.arms.iter().enumerate() {
        sqlx::query(
            "insert into study_arm (study_id, arm, position, overrides, scratch)
             values ($1, $2, $3, $4, $5)",
        )
        .bind(study_id)
        .bind(&arm.name)
        .bind(i32::try_from(position).unwrap_or(i32::MAX))
        .bind(Value::Object(arm.overrides.clone()))
        .bind(arm.scratch)
        .execute(&mut *tx)
        .await?;
    }
    let mut runs_queued = 0;
    for chain in &study.chains {
        insert_chain(&mut tx, study_id, chain).await?;
        if !study.budget.is_seconds() {
            runs_queued += queue_first_run(&mut tx, study_id, chain, created_by).await?;
        }
    }
    let mut calibrations_queued = 0;
    if study.budget.is_seconds() {
        queue::enqueue(&mut *tx, &calibrate_job(study_id)).await?;
        calibrations_queued = 1;
    }
    tx.commit().await?;
    tracing::info!(%study_id, name = %study.spec.name, runs_queued, calibrations_queued, "study submitted");
    Ok(CreatedStudy {
        study_id,
        runs_queued,
        calibrations_queued,
    })
}

/// One job calibrates every arm of a study that has no calibration yet, on
/// one worker, interleaved (see the worker's `calibrate_job`): arms measured
/// side by side share whatever else the machine is doing, so their ratios
/// hold on a busy machine where one-after-another measurements do not.
fn calibrate_job(study_id: Uuid) -> NewJob {
    NewJob {
        run_id: None,
        job_type: JobType::Calibrate,
        // Ahead of training jobs: every chain of the study waits on it.
        priority: 10,
        max_attempts: 3,
        payload: serde_json::json!({"study_id": study_id}),
        enqueued_at: None,
    }
}

async fn insert_chain(
    tx: &mut sqlx::PgConnection,
    study_id: Uuid,
    chain: &spec::Chain,
) -> Result<(), StudyError> {
    let to_json = |c: &Option<RunConfig>| -> Result<Option<Value>, StudyError> {
        c.as_ref()
            .map(serde_json::to_value)
            .transpose()
            .map_err(|e| {
                StudyError::Invalid(ConfigErrors::one("", format!("cannot serialise: {e}")))
            })
    };
    sqlx::query(
        "insert into study_chain (study_id, arm, seed, pretrain_config, finetune_config)
         values ($1, $2, $3, $4, $5)
         on conflict (study_id, arm, seed) do update
             set pretrain_config = excluded.pretrain_config,
                 finetune_config = excluded.finetune_config, error = null",
    )
    .bind(study_id)
    .bind(&chain.arm)
    .bind(seed_i64(chain.seed)?)
    .bind(to_json(&chain.pretrain)?)
    .bind(to_json(&chain.finetune)?)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

fn seed_i64(seed: u64) -> Result<i64, StudyError> {
    i64::try_from(seed)
        .map_err(|_| StudyError::Invalid(ConfigErrors::one("seeds", "a seed is too large")))
}

/// Queue a chain's first run: its pretrain, or its only (finetune) run.
async fn queue_first_run(
    tx: &mut sqlx::PgConnection,
    study_id: Uuid,
    chain: &spec::Chain,
    created_by: Option<&str>,
) -> Result<usize, StudyError> {
    let Some(config) = chain.pretrain.as_ref().or(chain.finetune.as_ref()) else {
        return Ok(0);
    };
    let link = StudyLink {
        study_id,
        arm: &chain.arm,
        seed: chain.seed,
    };
    let job = chain_job(tx, study_id, &chain.arm, seed_i64(chain.seed)?, config.kind).await?;
    runs::insert_run(&mut *tx, config, created_by, &job, Some(link)).await?;
    Ok(1)
}

/// A chain's job takes its place in the study's queue order: seed by seed
/// (every arm's first seed, its pretrain then its finetune, then the next
/// seed), so a study stopped early, or still running, has every arm at the
/// same n instead of some arms done and others not begun. The place is an
/// `enqueued_at` in the study's past (its creation plus the seed's rank in
/// seconds, half a second more for a finetune); other runs queued meanwhile
/// keep their order among themselves.
async fn chain_job(
    tx: &mut sqlx::PgConnection,
    study_id: Uuid,
    arm: &str,
    seed: i64,
    kind: RunKind,
) -> Result<JobOptions, StudyError> {
    let at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "select s.created_at + make_interval(secs => (
                    select count(*) from study_chain c
                    where c.study_id = s.study_id and c.arm = $2 and c.seed < $3) + $4)
         from study s where s.study_id = $1",
    )
    .bind(study_id)
    .bind(arm)
    .bind(seed)
    .bind(if kind == RunKind::Finetune { 0.5 } else { 0.0 })
    .fetch_one(&mut *tx)
    .await?;
    Ok(JobOptions {
        enqueued_at: Some(at),
        ..JobOptions::default()
    })
}

/// The completion path's hook: `run_id` just succeeded inside `tx`. When it
/// is the pretrain run of a study chain with a finetune stage, and the study
/// was not cancelled, queue the finetune from its last checkpoint. A finetune
/// that cannot be queued (its parent check fails) is recorded on the chain,
/// not allowed to undo the pretrain's success.
pub async fn advance_chain(tx: &mut sqlx::PgConnection, run_id: Uuid) -> Result<(), StudyError> {
    let row = sqlx::query(
        "select c.study_id, c.arm, c.seed, c.finetune_config, s.cancelled_at is not null as cancelled,
                s.created_by
         from run r
         join study_chain c on c.study_id = r.study_id and c.arm = r.study_arm and c.seed = r.study_seed
         join study s on s.study_id = c.study_id
         where r.run_id = $1 and r.kind = 'pretrain'
         for update of s",
    )
    .bind(run_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else { return Ok(()) };
    let cancelled: bool = row.try_get("cancelled")?;
    let Some(config) = row.try_get::<Option<Value>, _>("finetune_config")? else {
        return Ok(());
    };
    if cancelled {
        return Ok(());
    }
    let study_id: Uuid = row.try_get("study_id")?;
    let arm: String = row.try_get("arm")?;
    let seed: i64 = row.try_get("seed")?;
    let created_by: Option<String> = row.try_get("created_by")?;
    queue_finetune(
        tx,
        study_id,
        &arm,
        seed,
        config,
        run_id,
        created_by.as_deref(),
    )
    .await
}

async fn queue_finetune(
    tx: &mut sqlx::PgConnection,
    study_id: Uuid,
    arm: &str,
    seed: i64,
    config: Value,
    parent: Uuid,
    created_by: Option<&str>,
) -> Result<(), StudyError> {
    let exists: bool = sqlx::query_scalar(
        "select exists (select 1 from run where study_id = $1 and study_arm = $2
                        and study_seed = $3 and kind = 'finetune')",
    )
    .bind(study_id)
    .bind(arm)
    .bind(seed)
    .fetch_one(&mut *tx)
    .await?;
    if exists {
        return Ok(());
    }
    let mut config: RunConfig = serde_json::from_value(config).map_err(|e| {
        ConfigErrors::one(
            "finetune_config",
            format!("stored chain config cannot be read: {e}"),
        )
    })?;
    config.parent_run = Some(parent);
    config.parent_epoch = None;
    let link = StudyLink {
        study_id,
        arm,
        seed: u64::try_from(seed).unwrap_or(0),
    };
    let job = chain_job(tx, study_id, arm, seed, RunKind::Finetune).await?;
    // A savepoint: a refused finetune rolls back alone, the completion stays.
    sqlx::query("savepoint advance_chain")
        .execute(&mut *tx)
        .await?;
    match runs::insert_run(&mut *tx, &config, created_by, &job, Some(link)).await {
        Ok(created) => {
            sqlx::query("release savepoint advance_chain")
                .execute(&mut *tx)
                .await?;
            tracing::info!(%study_id, arm, seed, run_id = %created.run_id, %parent, "chain finetune queued");
            Ok(())
        }
        Err(RunError::Invalid(errors)) => {
            sqlx::query("rollback to savepoint advance_chain")
                .execute(&mut *tx)
                .await?;
            let reason = format!("finetune not queued: {errors}");
            tracing::warn!(%study_id, arm, seed, %reason, "chain stopped");
            sqlx::query(
                "update study_chain set error = $4 where study_id = $1 and arm = $2 and seed = $3",
            )
            .bind(study_id)
            .bind(arm)
            .bind(seed)
            .bind(reason)
            .execute(&mut *tx)
            .await?;
            Ok(())
        }
        Err(other) => Err(other.into()),
    }
}

/// One arm to calibrate: its configs (seed 0's; only the seed differs
/// between chains), one per stage to measure.
#[derive(Debug, Clone)]
pub struct ArmTarget {
    pub arm: Arm,
    pub configs: Vec<RunConfig>,
}

/// What a calibrating worker needs: the study's document and the arms that
/// have no calibration yet.
#[derive(Debug, Clone)]
pub struct CalibrationTarget {
    pub study_id: Uuid,
    pub spec: StudySpec,
    pub stages: Stages,
    pub budget: Budget,
    pub arms: Vec<ArmTarget>,
}

/// Read the study a calibration job names (its payload) and its arms still
/// to calibrate, in their order.
pub async fn calibration_target(
    pool: &PgPool,
    payload: &Value,
) -> Result<CalibrationTarget, StudyError> {
    let bad = |reason: &str| {
        StudyError::Invalid(ConfigErrors::one(
            "payload",
            format!("calibration job: {reason}"),
        ))
    };
    let study_id = payload
        .get("study_id")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<Uuid>().ok())
        .ok_or_else(|| bad("no study_id"))?;
    let row = sqlx::query("select spec, budget from study where study_id = $1")
        .bind(study_id)
        .fetch_optional(pool)
        .await?
        .ok_or(StudyError::NotFound(study_id))?;
    let spec = StudySpec::from_json_value(row.try_get("spec")?)?;
    let budget: Budget = serde_json::from_value(row.try_get("budget")?)
        .map_err(|e| bad(&format!("stored budget cannot be read: {e}")))?;
    let stages = spec.stages.unwrap_or(Stages::PretrainFinetune);
    let rows = sqlx::query(
        "select a.arm, a.overrides, a.scratch from study_arm a
         where a.study_id = $1
           and not exists (select 1 from study_calibration k
                           where k.study_id = a.study_id and k.arm = a.arm)
         order by a.position",
    )
    .bind(study_id)
    .fetch_all(pool)
    .await?;
    let mut arms = Vec::with_capacity(rows.len());
    for row in rows {
        let overrides = match row.try_get::<Value, _>("overrides")? {
            Value::Object(m) => m,
            _ => return Err(bad("stored arm overrides are not a table")),
        };
        let arm = Arm {
            name: row.try_get("arm")?,
            overrides,
            scratch: row.try_get("scratch")?,
        };
        let chain = spec.chain(stages, budget, &arm, 0, None)?;
        let configs = chain.pretrain.into_iter().chain(chain.finetune).collect();
        arms.push(ArmTarget { arm, configs });
    }
    Ok(CalibrationTarget {
        study_id,
        spec,
        stages,
        budget,
        arms,
    })
}

/// One arm and stage's measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    pub arm: String,
    pub stage: RunKind,
    pub images_per_second: f64,
    /// Images in the run's training split (after its subset).
    pub train_images: u64,
}

/// Where the calibrating worker ran.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrationDevice {
    pub device: String,
    pub gpu_name: Option<String>,
}

/// What a seconds budget buys one arm's stage.
struct Sized<'a> {
    kind: RunKind,
    seconds: f64,
    measured: &'a Measured,
    size: StageSize,
}

/// Every stage of `arm` with a seconds budget, sized from its measurement.
fn size_arm<'a>(
    target: &CalibrationTarget,
    arm: &ArmTarget,
    measured: &'a [Measured],
) -> Result<Vec<Sized<'a>>, StudyError> {
    let scratch = arm.arm.scratch && target.stages == Stages::PretrainFinetune;
    let mut out = Vec::new();
    for config in &arm.configs {
        let kind = config.kind;
        let Some(seconds) = target.budget.seconds(kind, scratch) else {
            continue;
        };
        let m = measured
            .iter()
            .find(|m| m.arm == arm.arm.name && m.stage == kind)
            .ok_or_else(|| {
                StudyError::Invalid(ConfigErrors::one(
                    "calibration",
                    format!("no {} measurement for arm {}", kind.as_str(), arm.arm.name),
                ))
            })?;
        let (_, size) = spec::seconds_to_size(
            seconds,
            m.images_per_second,
            m.train_images,
            config.batch_size,
        );
        out.push(Sized {
            kind,
            seconds,
            measured: m,
            size,
        });
    }
    Ok(out)
}

/// Record the arms' measurements, turn their seconds into images (epochs of
/// sampled images, [`spec::seconds_to_size`]), resize every chain of those
/// arms, queue their first runs (unless the study was cancelled) and complete
/// the calibration job: one transaction, fenced by the lease.
pub async fn finish_calibration(
    pool: &PgPool,
    lease: &Lease,
    target: &CalibrationTarget,
    device: &CalibrationDevice,
    measured: &[Measured],
) -> Result<(), StudyError> {
    let mut sized = Vec::with_capacity(target.arms.len());
    for arm in &target.arms {
        sized.push(size_arm(target, arm, measured)?);
    }
    let mut tx = pool.begin().await?;
    queue::fence(&mut tx, lease).await?;
    let row = sqlx::query(
        "select cancelled_at is not null as cancelled, created_by from study
         where study_id = $1 for update",
    )
    .bind(target.study_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(StudyError::NotFound(target.study_id))?;
    let cancelled: bool = row.try_get("cancelled")?;
    let created_by: Option<String> = row.try_get("created_by")?;
    for (arm, stages) in target.arms.iter().zip(&sized) {
        for s in stages {
            let epoch_images = s
                .size
                .epoch_images
                .map_or(s.measured.train_images, u64::from);
            sqlx::query(
                "insert into study_calibration (study_id, arm, stage, device, gpu_name, worker_id,
                     images_per_second, budget_seconds, train_images, epochs, epoch_images)
                 values ($1, $2, $3::run_kind, $4, $5, $6, $7, $8, $9, $10, $11)
                 on conflict (study_id, arm, stage) do update set
                     device = excluded.device, gpu_name = excluded.gpu_name,
                     worker_id = excluded.worker_id, images_per_second = excluded.images_per_second,
                     budget_seconds = excluded.budget_seconds, train_images = excluded.train_images,
                     epochs = excluded.epochs, epoch_images = excluded.epoch_images,
                     measured_at = now()",
            )
            .bind(target.study_id)
            .bind(&arm.arm.name)
            .bind(s.kind.as_str())
            .bind(&device.device)
            .bind(&device.gpu_name)
            .bind(lease.worker_id)
            .bind(s.measured.images_per_second)
            .bind(s.seconds)
            .bind(i64::try_from(s.measured.train_images).unwrap_or(i64::MAX))
            .bind(i32::try_from(s.size.epochs).unwrap_or(i32::MAX))
            .bind(i64::try_from(epoch_images).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
        }
        let of = |kind: RunKind| stages.iter().find(|s| s.kind == kind).map(|s| s.size);
        let calibrated = Some((of(RunKind::Pretrain), of(RunKind::Finetune)));
        let seeds: Vec<i64> = sqlx::query_scalar(
            "select seed from study_chain where study_id = $1 and arm = $2 order by seed",
        )
        .bind(target.study_id)
        .bind(&arm.arm.name)
        .fetch_all(&mut *tx)
        .await?;
        for seed in seeds {
            let seed = u64::try_from(seed).unwrap_or(0);
            let chain =
                target
                    .spec
                    .chain(target.stages, target.budget, &arm.arm, seed, calibrated)?;
            insert_chain(&mut tx, target.study_id, &chain).await?;
            let started: bool = sqlx::query_scalar(
                "select exists (select 1 from run where study_id = $1 and study_arm = $2 and study_seed = $3)",
            )
            .bind(target.study_id)
            .bind(&arm.arm.name)
            .bind(seed_i64(seed)?)
            .fetch_one(&mut *tx)
            .await?;
            if !cancelled && !started {
                queue_first_run(&mut tx, target.study_id, &chain, created_by.as_deref()).await?;
            }
        }
        tracing::info!(study_id = %target.study_id, arm = %arm.arm.name, ?calibrated, "arm calibrated");
    }
    queue::finish_in(&mut tx, lease, queue::Finish::Succeeded, None).await?;
    tx.commit().await?;
    Ok(())
}

/// What a study cancel did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StudyCancelled {
    /// Queued jobs (runs and calibrations) cancelled at once.
    pub cancelled: u64,
    /// Running jobs whose worker will stop at its next heartbeat.
    pub requested: u64,
}

/// Cancel a study: no chain queues anything new, queued jobs are cancelled at
/// once, running ones get their cancel flag (their worker stops within a
/// heartbeat). Cancelling a cancelled study changes nothing.
pub async fn cancel_study(pool: &PgPool, study_id: Uuid) -> Result<StudyCancelled, StudyError> {
    let mut tx = pool.begin().await?;
    lock_study(&mut tx, study_id).await?;
    sqlx::query(
        "update study set cancelled_at = coalesce(cancelled_at, now()) where study_id = $1",
    )
    .bind(study_id)
    .execute(&mut *tx)
    .await?;
    let row = sqlx::query(
        "with jobs as (
             select j.job_id, j.state from job j
             left join run r using (run_id)
             where (r.study_id = $1 or (j.job_type = 'calibrate' and j.payload->>'study_id' = $1::text))
               and j.state in ('queued', 'running')
             for update of j
         ), queued as (
             update job j set state = 'cancelled', finished_at = now(), error = 'study cancelled'
             from jobs where j.job_id = jobs.job_id and jobs.state = 'queued'
             returning j.run_id
         ), queued_run as (
             update run r set status = 'cancelled', finished_at = now(), error = 'study cancelled'
             from queued where r.run_id = queued.run_id
         ), running as (
             update job j set cancel_requested = true
             from jobs where j.job_id = jobs.job_id and jobs.state = 'running'
             returning j.job_id
         )
         select (select count(*) from queued) as cancelled, (select count(*) from running) as requested",
    )
    .bind(study_id)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    let n = |k: &str| -> Result<u64, sqlx::Error> {
        Ok(u64::try_from(row.try_get::<i64, _>(k)?).unwrap_or(0))
    };
    Ok(StudyCancelled {
        cancelled: n("cancelled")?,
        requested: n("requested")?,
    })
}

async fn lock_study(tx: &mut sqlx::PgConnection, study_id: Uuid) -> Result<(), StudyError> {
    sqlx::query("select 1 as one from study where study_id = $1 for update")
        .bind(study_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StudyError::NotFound(study_id))?;
    Ok(())
}

/// What a study retry did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StudyRetried {
    /// Failed or cancelled runs put back on the queue (they resume from
    /// their last checkpoint).
    pub runs: u64,
    /// Finetunes queued for chains whose pretrain succeeded meanwhile.
    pub finetunes: u64,
    /// Calibration jobs put back.
    pub calibrations: u64,
}

/// Retry a study, or one chain of it (`arm`, `seed`): lift the cancel, put
/// every failed or cancelled job back, and queue what a cancel kept from
/// being queued. Nothing to retry answers [`StudyError::Conflict`].
pub async fn retry_study(
    pool: &PgPool,
    study_id: Uuid,
    chain: Option<(&str, u64)>,
) -> Result<StudyRetried, StudyError> {
    let mut tx = pool.begin().await?;
    lock_study(&mut tx, study_id).await?;
    if let Some((arm, seed)) = chain {
        let found: bool = sqlx::query_scalar(
            "select exists (select 1 from study_chain where study_id = $1 and arm = $2 and seed = $3)",
        )
        .bind(study_id)
        .bind(arm)
        .bind(seed_i64(seed)?)
        .fetch_one(&mut *tx)
        .await?;
        if !found {
            return Err(StudyError::Invalid(ConfigErrors::one(
                "chain",
                format!("study {study_id} has no chain of arm `{arm}` and seed {seed}"),
            )));
        }
    }
    sqlx::query("update study set cancelled_at = null where study_id = $1")
        .bind(study_id)
        .execute(&mut *tx)
        .await?;
    let arm = chain.map(|c| c.0.to_string());
    let seed = chain.map(|c| seed_i64(c.1)).transpose()?;
    // Runs: failed or cancelled ones of the study (or chain) back on the queue.
    let runs = sqlx::query(
        "with again as (
             update job j set state = 'queued', attempt = 0, cancel_requested = false,
                              error = null, finished_at = null, worker_id = null,
                              lease_expires_at = null, run_after = now(), enqueued_at = now()
             from run r
             where r.run_id = j.run_id and r.study_id = $1
               and ($2::text is null or r.study_arm = $2) and ($3::bigint is null or r.study_seed = $3)
               and j.state in ('failed', 'cancelled')
             returning j.run_id
         ), run_again as (
             update run r set status = 'queued', finished_at = null, error = null
             from again where r.run_id = again.run_id
         )
         select count(*) as n from again",
    )
    .bind(study_id)
    .bind(&arm)
    .bind(seed)
    .fetch_one(&mut *tx)
    .await?
    .try_get::<i64, _>("n")?;
    // The calibration, cancelled or failed (for one chain: if its arm still
    // has none; the job calibrates every arm that has none).
    let calibrations = sqlx::query(
        "update job set state = 'queued', attempt = 0, cancel_requested = false, error = null,
                        finished_at = null, worker_id = null, lease_expires_at = null,
                        run_after = now(), enqueued_at = now()
         where job_type = 'calibrate' and payload->>'study_id' = $1::text
           and ($2::text is null or not exists (select 1 from study_calibration k
                                                where k.study_id = $1 and k.arm = $2))
           and state in ('failed', 'cancelled')",
    )
    .bind(study_id)
    .bind(&arm)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    // Chains a cancel left behind: calibrated (or epoch-budget) chains with
    // no run yet, and succeeded pretrains without their finetune.
    let pending = sqlx::query(
        "select c.arm, c.seed, c.pretrain_config, c.finetune_config,
                (select r.run_id from run r where r.study_id = c.study_id and r.study_arm = c.arm
                   and r.study_seed = c.seed and r.kind = 'pretrain' and r.status = 'succeeded') as pretrain_done,
                exists (select 1 from run r where r.study_id = c.study_id and r.study_arm = c.arm
                          and r.study_seed = c.seed) as started,
                exists (select 1 from run r where r.study_id = c.study_id and r.study_arm = c.arm
                          and r.study_seed = c.seed and r.kind = 'finetune') as finetune_started,
                (s.budget->>'type' <> 'seconds' or exists (select 1 from study_calibration k
                   where k.study_id = c.study_id and k.arm = c.arm)) as sized,
                s.created_by
         from study_chain c join study s using (study_id)
         where c.study_id = $1 and ($2::text is null or c.arm = $2) and ($3::bigint is null or c.seed = $3)",
    )
    .bind(study_id)
    .bind(&arm)
    .bind(seed)
    .fetch_all(&mut *tx)
    .await?;
    let mut out = StudyRetried {
        runs: u64::try_from(runs).unwrap_or(0),
        finetunes: 0,
        calibrations,
    };
    for row in pending {
        let arm: String = row.try_get("arm")?;
        let seed: i64 = row.try_get("seed")?;
        let created_by: Option<String> = row.try_get("created_by")?;
        let started: bool = row.try_get("started")?;
        let sized: bool = row.try_get("sized")?;
        if !started && sized {
            let read = |k: &str| -> Result<Option<RunConfig>, StudyError> {
                row.try_get::<Option<Value>, _>(k)?
                    .map(serde_json::from_value)
                    .transpose()
                    .map_err(|e| {
                        StudyError::Invalid(ConfigErrors::one(k, format!("cannot be read: {e}")))
                    })
            };
            let chain = spec::Chain {
                arm: arm.clone(),
                seed: u64::try_from(seed).unwrap_or(0),
                pretrain: read("pretrain_config")?,
                finetune: read("finetune_config")?,
            };
            out.runs +=
                queue_first_run(&mut tx, study_id, &chain, created_by.as_deref()).await? as u64;
            continue;
        }
        let finetune_started: bool = row.try_get("finetune_started")?;
        let pretrain_done: Option<Uuid> = row.try_get("pretrain_done")?;
        if let (Some(parent), false, Some(config)) = (
            pretrain_done,
            finetune_started,
            row.try_get::<Option<Value>, _>("finetune_config")?,
        ) {
            sqlx::query("update study_chain set error = null where study_id = $1 and arm = $2 and seed = $3")
                .bind(study_id)
                .bind(&arm)
                .bind(seed)
                .execute(&mut *tx)
                .await?;
            queue_finetune(
                &mut tx,
                study_id,
                &arm,
                seed,
                config,
                parent,
                created_by.as_deref(),
            )
            .await?;
            out.finetunes += 1;
        }
    }
    if out.runs + out.finetunes + out.calibrations == 0 {
        return Err(StudyError::Conflict(match chain {
            Some((arm, seed)) => {
                format!("chain {arm} / seed {seed} has nothing failed or cancelled to retry")
            }
            None => format!("study {study_id} has nothing failed or cancelled to retry"),
        }));
    }
    tx.commit().await?;
    Ok(out)
}
