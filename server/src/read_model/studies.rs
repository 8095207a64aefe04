//! Studies as the API, the CLI and the pages show them: the study row with
//! the progress of its chains, each chain's runs and the per-chain values of
//! every study metric ([`METRICS`]), the calibration of a seconds budget, and
//! the per-arm curves (mean and band over seeds). The statistics over these
//! values are in [`super::study_results`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

/// One study metric: how each chain's value is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MetricDef {
    pub key: &'static str,
    pub label: &'static str,
    /// Higher is better (for the verdict's wording and `>` claims).
    pub higher_is_better: bool,
    /// Digits shown on the pages.
    pub digits: usize,
}

/// Every metric a study aggregates, in the order the results table shows
/// them. `test_acc1`/`test_acc5` are the best epoch's, like `--fail-under`.
pub const METRICS: &[MetricDef] = &[
    MetricDef {
        key: "test_acc1",
        label: "best top-1 (%)",
        higher_is_better: true,
        digits: 2,
    },
    MetricDef {
        key: "final_test_acc1",
        label: "final top-1 (%)",
        higher_is_better: true,
        digits: 2,
    },
    MetricDef {
        key: "test_acc5",
        label: "best top-5 (%)",
        higher_is_better: true,
        digits: 2,
    },
    MetricDef {
        key: "final_test_acc5",
        label: "final top-5 (%)",
        higher_is_better: true,
        digits: 2,
    },
    MetricDef {
        key: "psnr",
        label: "PSNR, masked patches (dB)",
        higher_is_better: true,
        digits: 2,
    },
    MetricDef {
        key: "hf_ratio",
        label: "HF energy ratio",
        higher_is_better: true,
        digits: 3,
    },
    MetricDef {
        key: "pretrain_images_per_second",
        label: "pretrain images/s",
        higher_is_better: true,
        digits: 1,
    },
    MetricDef {
        key: "finetune_images_per_second",
        label: "finetune images/s",
        higher_is_better: true,
        digits: 1,
    },
    MetricDef {
        key: "wall_seconds",
        label: "training time (s)",
        higher_is_better: false,
        digits: 0,
    },
];

/// The metric called `key`, if there is one.
pub fn metric(key: &str) -> Option<&'static MetricDef> {
    METRICS.iter().find(|m| m.key == key)
}

/// A study in a list.
#[derive(Debug, Clone, Serialize, FromRow)]
pub struct StudySummary {
    pub study_id: Uuid,
    pub name: String,
    pub stages: String,
    pub baseline_arm: String,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub arms: i64,
    /// Chains of the study (arms x seeds); a detail's `chains` lists them.
    pub chains_total: i64,
    /// Chains whose every stage succeeded.
    pub chains_succeeded: i64,
    /// Chains with a failed or cancelled run (or a stage that could not be queued).
    pub chains_failed: i64,
    /// Runs queued or running, and calibrations not done.
    pub active: i64,
    /// `calibrating`, `running`, `cancelled`, `succeeded`, or `finished`
    /// (done, some chains failed).
    pub status: String,
}

const SUMMARY_SQL: &str = "
    with chain_state as (
        select c.study_id, c.arm, c.seed, c.error,
               (c.pretrain_config is not null)::int + (c.finetune_config is not null)::int as stages,
               count(r.run_id) filter (where r.status = 'succeeded') as ok,
               count(r.run_id) filter (where r.status in ('failed', 'cancelled')) as bad,
               count(r.run_id) filter (where r.status in ('queued', 'running')) as live
        from study_chain c
        left join run r on r.study_id = c.study_id and r.study_arm = c.arm and r.study_seed = c.seed
        group by c.study_id, c.arm, c.seed
    ), per_study as (
        select study_id,
               count(*) as chains,
               count(*) filter (where ok = stages) as chains_succeeded,
               count(*) filter (where bad > 0 or error is not null) as chains_failed,
               sum(live) as live_runs
        from chain_state group by study_id
    ), calib as (
        select payload->>'study_id' as study_id, count(*) as pending
        from job where job_type = 'calibrate' and state in ('queued', 'running')
        group by 1
    )
    select s.study_id, s.name, s.stages, s.baseline_arm, s.created_by, s.created_at, s.cancelled_at,
           (select count(*) from study_arm a where a.study_id = s.study_id) as arms,
           coalesce(p.chains, 0) as chains_total,
           coalesce(p.chains_succeeded, 0) as chains_succeeded,
           coalesce(p.chains_failed, 0) as chains_failed,
           (coalesce(p.live_runs, 0) + coalesce(k.pending, 0))::bigint as active,
           case when coalesce(k.pending, 0) > 0 and s.cancelled_at is null then 'calibrating'
                when coalesce(p.live_runs, 0) > 0 then 'running'
                when s.cancelled_at is not null then 'cancelled'
                when coalesce(p.chains_succeeded, 0) = coalesce(p.chains, 0) then 'succeeded'
                when coalesce(p.chains_succeeded, 0) + coalesce(p.chains_failed, 0) = coalesce(p.chains, 0)
                    then 'finished'
                else 'running' end as status
    from study s
    left join per_study p using (study_id)
    left join calib k on k.study_id = s.study_id::text";

/// Studies, newest first.
pub async fn list(
    pool: &PgPool,
    limit: i64,
    offset: i64,
) -> Result<Vec<StudySummary>, sqlx::Error> {
    sqlx::query_as::<_, StudySummary>(&format!(
        "{SUMMARY_SQL} order by s.created_at desc, s.study_id limit $1 offset $2"
    ))
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await
}

/// One study's row, or None.
pub async fn summary(pool: &PgPool, study_id: Uuid) -> Result<Option<StudySummary>, sqlx::Error> {
    sqlx::query_as::<_, StudySummary>(&format!("{SUMMARY_SQL} where s.study_id = $1"))
        .bind(study_id)
        .fetch_optional(pool)
        .await
}

/// An arm as stored.
#[derive(Debug, Clone, Serialize, FromRow)]
pub struct ArmRow {
    pub arm: String,
    pub position: i32,
    pub overrides: Value,
    pub scratch: bool,
}

/// A calibration of a seconds budget.
#[derive(Debug, Clone, Serialize, FromRow)]
pub struct CalibrationRow {
    pub arm: String,
    pub stage: String,
    pub device: String,
    pub gpu_name: Option<String>,
    pub images_per_second: f64,
    pub budget_seconds: f64,
    pub train_images: i64,
    /// Training images sampled per epoch (the split when it is all of it).
    pub epoch_images: i64,
    pub epochs: i32,
    /// What the budget buys: seconds x images/s.
    pub budget_images: i64,
    /// What the runs see: epochs x train images.
    pub images_seen: i64,
    pub measured_at: DateTime<Utc>,
}

/// One run of a chain with what the study reads of it.
#[derive(Debug, Clone, Serialize, Deserialize, FromRow)]
pub struct ChainRun {
    pub run_id: Uuid,
    #[serde(skip)]
    pub arm: String,
    #[serde(skip)]
    pub seed: i64,
    pub kind: String,
    pub status: String,
    pub error: Option<String>,
    pub epochs_done: i32,
    pub epochs_total: i32,
    pub best_acc1: Option<f64>,
    pub best_acc5: Option<f64>,
    pub final_acc1: Option<f64>,
    pub final_acc5: Option<f64>,
    pub final_psnr: Option<f64>,
    pub final_hf_ratio: Option<f64>,
    pub train_seconds: Option<f64>,
    pub mean_images_per_second: Option<f64>,
    /// Training images of one epoch (the run's train_subset, or the dataset's).
    pub train_subset: Option<i64>,
}

/// One chain: its runs, its state and its metric values.
#[derive(Debug, Clone, Serialize)]
pub struct ChainRow {
    pub arm: String,
    pub seed: i64,
    /// `waiting` (calibration), `queued`, `pretraining`, `finetuning`,
    /// `succeeded`, `failed`, `cancelled`.
    pub status: String,
    pub error: Option<String>,
    pub pretrain: Option<ChainRun>,
    pub finetune: Option<ChainRun>,
    /// Every metric of [`METRICS`] this chain has a value for (only once it
    /// succeeded, so the statistics never mix finished and unfinished chains).
    pub values: BTreeMap<&'static str, f64>,
}

impl ChainRow {
    /// The run that classifies (its top-1 is the chain's).
    pub fn classifier(&self) -> Option<&ChainRun> {
        self.finetune.as_ref()
    }
}

#[derive(FromRow)]
struct ChainBase {
    arm: String,
    seed: i64,
    error: Option<String>,
    has_pretrain: bool,
    has_finetune: bool,
}

/// Every chain of the study, arms in their order, then seeds.
pub async fn chains(pool: &PgPool, study_id: Uuid) -> Result<Vec<ChainRow>, sqlx::Error> {
    let bases = sqlx::query_as::<_, ChainBase>(
        "select c.arm, c.seed, c.error, c.pretrain_config is not null as has_pretrain,
                c.finetune_config is not null as has_finetune
         from study_chain c join study_arm a using (study_id, arm)
         where c.study_id = $1 order by a.position, c.seed",
    )
    .bind(study_id)
    .fetch_all(pool)
    .await?;
    let runs = sqlx::query_as::<_, ChainRun>(
        "select r.run_id, r.study_arm as arm, r.study_seed as seed, r.kind::text as kind,
                r.status::text as status, r.error, r.epochs_done, r.epochs_total,
                r.best_acc1, r.best_acc5, l.test_acc1 as final_acc1, l.test_acc5 as final_acc5,
                l.psnr as final_psnr, l.hf_ratio as final_hf_ratio, r.train_seconds,
                r.mean_images_per_second, (r.config->>'train_subset')::bigint as train_subset
         from run r
         left join lateral (
             select e.test_acc1, e.test_acc5, e.psnr, e.hf_ratio from epoch_metric e
             where e.run_id = r.run_id order by e.epoch desc limit 1
         ) l on true
         where r.study_id = $1",
    )
    .bind(study_id)
    .fetch_all(pool)
    .await?;
    let waiting: bool = sqlx::query_scalar(
        "select exists (select 1 from job where job_type = 'calibrate'
                        and payload->>'study_id' = $1::text and state in ('queued', 'running'))",
    )
    .bind(study_id)
    .fetch_one(pool)
    .await?;
    Ok(bases
        .into_iter()
        .map(|b| {
            let find = |kind: &str| {
                runs.iter()
                    .find(|r| r.arm == b.arm && r.seed == b.seed && r.kind == kind)
                    .cloned()
            };
            let pretrain = find("pretrain");
            let finetune = find("finetune");
            let status = chain_status(&b, pretrain.as_ref(), finetune.as_ref(), waiting);
            let mut row = ChainRow {
                arm: b.arm,
                seed: b.seed,
                status,
                error: b.error,
                pretrain,
                finetune,
                values: BTreeMap::new(),
            };
            if row.status == "succeeded" {
                row.values = chain_values(&row);
            }
            row
        })
        .collect())
}

fn chain_status(
    b: &ChainBase,
    pretrain: Option<&ChainRun>,
    finetune: Option<&ChainRun>,
    calibrating: bool,
) -> String {
    let bad = |r: Option<&ChainRun>| {
        r.filter(|r| r.status == "failed" || r.status == "cancelled")
            .map(|r| r.status.clone())
    };
    if let Some(s) = bad(pretrain).or_else(|| bad(finetune)) {
        return s;
    }
    if b.error.is_some() {
        return "failed".into();
    }
    let ok = |r: Option<&ChainRun>| r.is_some_and(|r| r.status == "succeeded");
    let done_pre = !b.has_pretrain || ok(pretrain);
    let done_ft = !b.has_finetune || ok(finetune);
    if done_pre && done_ft {
        return "succeeded".into();
    }
    match (pretrain, finetune) {
        (None, None) if calibrating => "waiting".into(),
        (None, None) => "queued".into(),
        (_, Some(f)) if f.status == "running" => "finetuning".into(),
        (Some(p), _) if p.status == "running" => "pretraining".into(),
        _ => "queued".into(),
    }
}

fn chain_values(chain: &ChainRow) -> BTreeMap<&'static str, f64> {
    let mut v = BTreeMap::new();
    let mut put = |k: &'static str, x: Option<f64>| {
        if let Some(x) = x.filter(|x| x.is_finite()) {
            v.insert(k, x);
        }
    };
    if let Some(c) = chain.classifier() {
        put("test_acc1", c.best_acc1);
        put("final_test_acc1", c.final_acc1);
        put("test_acc5", c.best_acc5);
        put("final_test_acc5", c.final_acc5);
        put("finetune_images_per_second", c.mean_images_per_second);
    }
    if let Some(p) = &chain.pretrain {
        put("psnr", p.final_psnr);
        put("hf_ratio", p.final_hf_ratio);
        put("pretrain_images_per_second", p.mean_images_per_second);
    }
    let wall: Vec<f64> = [&chain.pretrain, &chain.finetune]
        .into_iter()
        .flatten()
        .filter_map(|r| r.train_seconds)
        .collect();
    if !wall.is_empty() {
        put("wall_seconds", Some(wall.iter().sum()));
    }
    v
}

/// The study's arms in order.
pub async fn arms(pool: &PgPool, study_id: Uuid) -> Result<Vec<ArmRow>, sqlx::Error> {
    sqlx::query_as::<_, ArmRow>(
        "select arm, position, overrides, scratch from study_arm where study_id = $1 order by position",
    )
    .bind(study_id)
    .fetch_all(pool)
    .await
}

/// The calibrations of a seconds budget, arms in order.
pub async fn calibrations(
    pool: &PgPool,
    study_id: Uuid,
) -> Result<Vec<CalibrationRow>, sqlx::Error> {
    sqlx::query_as::<_, CalibrationRow>(
        "select k.arm, k.stage::text as stage, k.device, k.gpu_name, k.images_per_second,
                k.budget_seconds, k.train_images, k.epochs, k.epoch_images,
                floor(k.budget_seconds * k.images_per_second)::bigint as budget_images,
                (k.epochs::bigint * k.epoch_images) as images_seen, k.measured_at
         from study_calibration k join study_arm a using (study_id, arm)
         where k.study_id = $1 order by a.position, k.stage",
    )
    .bind(study_id)
    .fetch_all(pool)
    .await
}

/// The stored document and budget.
#[derive(Debug, Clone, Serialize, FromRow)]
pub struct StudyDoc {
    pub spec: Value,
    pub budget: Value,
}

pub async fn doc(pool: &PgPool, study_id: Uuid) -> Result<Option<StudyDoc>, sqlx::Error> {
    sqlx::query_as::<_, StudyDoc>("select spec, budget from study where study_id = $1")
        .bind(study_id)
        .fetch_optional(pool)
        .await
}

/// One point of an arm's curve: the mean over the seeds that reached this
/// epoch, and the band (lowest and highest seed).
#[derive(Debug, Clone, Serialize, FromRow)]
pub struct CurvePoint {
    pub arm: String,
    pub kind: String,
    pub epoch: i32,
    pub metric: String,
    pub n: i64,
    pub mean: f64,
    pub low: f64,
    pub high: f64,
}

/// Per arm, stage and epoch: mean and min-max band over seeds of the
/// training loss, test top-1 and PSNR (the study page's grouped curves).
pub async fn curves(pool: &PgPool, study_id: Uuid) -> Result<Vec<CurvePoint>, sqlx::Error> {
    sqlx::query_as::<_, CurvePoint>(
        "select r.study_arm as arm, r.kind::text as kind, e.epoch, m.metric,
                count(m.value) as n, avg(m.value) as mean, min(m.value) as low, max(m.value) as high
         from run r
         join epoch_metric e using (run_id)
         cross join lateral (values ('train_loss', e.train_loss), ('test_acc1', e.test_acc1),
                                    ('psnr', e.psnr)) as m(metric, value)
         join study_arm a on a.study_id = r.study_id and a.arm = r.study_arm
         where r.study_id = $1 and m.value is not null
         group by a.position, r.study_arm, r.kind, e.epoch, m.metric
         order by a.position, r.kind, m.metric, e.epoch",
    )
    .bind(study_id)
    .fetch_all(pool)
    .await
}

/// The study a run belongs to, if any (the live stream follows new runs).
pub async fn study_of_run(pool: &PgPool, run_id: Uuid) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar::<_, Option<Uuid>>("select study_id from run where run_id = $1")
        .bind(run_id)
        .fetch_optional(pool)
        .await
        .map(Option::flatten)
}
