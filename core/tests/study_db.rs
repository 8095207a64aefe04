//! Study writes against the real PostgreSQL, a fresh database per test:
//! submit in one transaction, the finetune queued only when its pretrain
//! succeeded (from its last checkpoint), calibration sizing and queueing an
//! arm, cancel reaching running jobs, retry of a study and of one chain.

use std::time::Duration;

use maelab_core::db::artifacts::NewArtifact;
use maelab_core::db::metrics::{self, EpochRecord};
use maelab_core::db::queue::{self, ClaimedJob};
use maelab_core::db::studies::{self, CalibrationDevice, Measured, StudyError};
use maelab_core::db::testing::TestDb;
use maelab_core::db::workers::{self, WorkerInfo};
use maelab_core::study::StudySpec;
use sqlx::PgPool;
use uuid::Uuid;

const LEASE: Duration = Duration::from_secs(30);

async fn worker(pool: &PgPool) -> Uuid {
    workers::register(
        pool,
        &WorkerInfo {
            name: "w".into(),
            host: "test".into(),
            device: "cpu".into(),
            gpu_name: None,
            torch_version: "none".into(),
            pid: None,
        },
    )
    .await
    .expect("register")
}

fn study(text: &str) -> maelab_core::study::ExpandedStudy {
    StudySpec::from_toml_str(text)
        .expect("parses")
        .expand(200)
        .expect("valid")
}

const EPOCHS: &str = r#"
name = "s"
seeds = 2
[budget]
pretrain_epochs = 2
finetune_epochs = 1
[arms.mae]
model = "mae"
[arms.wave]
model = "wave_mae"
wave_in = "decoder"
"#;

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql)
}

fn epoch(e: i32) -> EpochRecord {
    EpochRecord {
        epoch: e,
        train_lr: 1e-4,
        train_loss: 1.0,
        test_loss: None,
        test_acc1: None,
        test_acc5: None,
        n_parameters: Some(1000),
        psnr: Some(20.0),
        hf_ratio: Some(0.2),
        epoch_seconds: 1.0,
        images_per_second: Some(100.0),
        extra: serde_json::json!({}),
    }
}

/// Train a claimed pretrain job to its end: every epoch, the last with its
/// checkpoint (what a finetune starts from), then complete.
async fn finish_pretrain(pool: &PgPool, job: &ClaimedJob, epochs: i32) {
    for e in 0..epochs - 1 {
        metrics::record_epoch(pool, &job.lease, &epoch(e))
            .await
            .expect("epoch");
    }
    let last = epochs - 1;
    metrics::record_epoch_with_checkpoint(
        pool,
        &job.lease,
        &epoch(last),
        epochs,
        &[NewArtifact {
            kind: "checkpoint",
            epoch: Some(last),
            name: &format!("checkpoint-{last}.safetensors"),
            media_type: "application/octet-stream",
            bytes: b"weights",
        }],
    )
    .await
    .expect("checkpoint");
    queue::complete(pool, &job.lease).await.expect("complete");
}

async fn claim(pool: &PgPool, w: Uuid) -> ClaimedJob {
    queue::claim_next(pool, w, LEASE)
        .await
        .expect("claim")
        .expect("a job")
}

#[tokio::test]
async fn submit_queues_the_pretrains_and_each_finetune_follows_its_own_pretrain() {
    let db = TestDb::new().await.expect("db");
    let s = study(EPOCHS);
    let created = studies::create_study(&db.pool, &s, Some("ci"))
        .await
        .expect("create");
    assert_eq!((created.runs_queued, created.calibrations_queued), (4, 0));
    assert_eq!(
        count(&db.pool, "select count(*) from run where kind = 'pretrain'").await,
        4
    );
    assert_eq!(
        count(&db.pool, "select count(*) from run where kind = 'finetune'").await,
        0
    );
    assert_eq!(count(&db.pool, "select count(*) from study_chain").await, 4);

    let w = worker(&db.pool).await;
    let job = claim(&db.pool, w).await;
    let pretrain_run = job.lease.run_id.expect("run");
    finish_pretrain(&db.pool, &job, 2).await;

    // Exactly one finetune, of the same chain, from that run's last checkpoint.
    let rows: Vec<(Uuid, String, i64, Option<Uuid>, serde_json::Value)> = sqlx::query_as(
        "select run_id, study_arm, study_seed, parent_run_id, config from run where kind = 'finetune'",
    )
    .fetch_all(&db.pool)
    .await
    .expect("finetunes");
    assert_eq!(rows.len(), 1);
    let (_, arm, seed, parent, config) = &rows[0];
    let (p_arm, p_seed): (String, i64) =
        sqlx::query_as("select study_arm, study_seed from run where run_id = $1")
            .bind(pretrain_run)
            .fetch_one(&db.pool)
            .await
            .expect("pretrain");
    assert_eq!((arm, seed), (&p_arm, &p_seed));
    assert_eq!(*parent, Some(pretrain_run));
    assert_eq!(config["parent_run"], serde_json::json!(pretrain_run));
    assert_eq!(
        config["parent_epoch"],
        serde_json::Value::Null,
        "the last checkpoint"
    );
    assert_eq!(config["epochs"], 1);
    // Queued, with a job a worker can claim.
    assert_eq!(
        count(&db.pool, "select count(*) from job j join run r using (run_id) where r.kind = 'finetune' and j.state = 'queued'").await,
        1
    );
}

#[tokio::test]
async fn a_failed_pretrain_fails_its_chain_and_queues_no_finetune() {
    let db = TestDb::new().await.expect("db");
    studies::create_study(&db.pool, &study(EPOCHS), None)
        .await
        .expect("create");
    let w = worker(&db.pool).await;
    let job = claim(&db.pool, w).await;
    queue::fail(&db.pool, &job.lease, "non-finite loss")
        .await
        .expect("fail");
    assert_eq!(
        count(&db.pool, "select count(*) from run where kind = 'finetune'").await,
        0
    );
    // The other chains go on.
    assert_eq!(
        count(&db.pool, "select count(*) from job where state = 'queued'").await,
        3
    );
}

#[tokio::test]
async fn cancel_reaches_queued_and_running_jobs_and_stops_the_chains() {
    let db = TestDb::new().await.expect("db");
    let created = studies::create_study(&db.pool, &study(EPOCHS), None)
        .await
        .expect("create");
    let w = worker(&db.pool).await;
    let running = claim(&db.pool, w).await;
    let done = studies::cancel_study(&db.pool, created.study_id)
        .await
        .expect("cancel");
    assert_eq!((done.cancelled, done.requested), (3, 1));
    // The running job's worker hears it at its next heartbeat.
    let hb = queue::heartbeat(&db.pool, &running.lease, LEASE)
        .await
        .expect("heartbeat");
    assert!(hb.cancel_requested);
    assert_eq!(
        count(
            &db.pool,
            "select count(*) from run where status = 'cancelled'"
        )
        .await,
        3
    );
    // A pretrain that still succeeds after the cancel queues no finetune.
    finish_pretrain(&db.pool, &running, 2).await;
    assert_eq!(
        count(&db.pool, "select count(*) from run where kind = 'finetune'").await,
        0
    );

    // Retry one chain: only its cancelled pretrain goes back.
    let (arm, seed): (String, i64) = sqlx::query_as(
        "select study_arm, study_seed from run where status = 'cancelled' order by study_arm, study_seed limit 1",
    )
    .fetch_one(&db.pool)
    .await
    .expect("chain");
    let r = studies::retry_study(&db.pool, created.study_id, Some((&arm, seed as u64)))
        .await
        .expect("retry chain");
    assert_eq!((r.runs, r.finetunes), (1, 0));
    assert_eq!(
        count(
            &db.pool,
            "select count(*) from run where status = 'cancelled'"
        )
        .await,
        2
    );
    // Retry the study: the other cancelled runs, and the finetune the cancel held back.
    let r = studies::retry_study(&db.pool, created.study_id, None)
        .await
        .expect("retry");
    assert_eq!((r.runs, r.finetunes), (2, 1));
    assert_eq!(
        count(
            &db.pool,
            "select count(*) from run where kind = 'finetune' and status = 'queued'"
        )
        .await,
        1
    );
    // Nothing left to retry is a conflict.
    assert!(matches!(
        studies::retry_study(&db.pool, created.study_id, None).await,
        Err(StudyError::Conflict(_))
    ));
    assert!(matches!(
        studies::retry_study(&db.pool, created.study_id, Some(("nope", 0))).await,
        Err(StudyError::Invalid(_))
    ));
}

#[tokio::test]
async fn calibration_sizes_every_seed_of_its_arm_and_queues_them() {
    let db = TestDb::new().await.expect("db");
    let s = study(
        r#"
name = "eq"
seeds = 3
[base]
train_subset = 1000
[budget]
pretrain_seconds = 60
finetune_seconds = 30
[arms.mae]
model = "mae"
[arms.scratch]
scratch = true
"#,
    );
    let created = studies::create_study(&db.pool, &s, None)
        .await
        .expect("create");
    assert_eq!((created.runs_queued, created.calibrations_queued), (0, 1));
    assert_eq!(
        count(&db.pool, "select count(*) from run").await,
        0,
        "sized only after calibration"
    );

    let w = worker(&db.pool).await;
    let job = claim(&db.pool, w).await;
    assert_eq!(job.job_type, "calibrate");
    let target = studies::calibration_target(&db.pool, &job.payload)
        .await
        .expect("target");
    let arms: Vec<&str> = target.arms.iter().map(|a| a.arm.name.as_str()).collect();
    assert_eq!(arms, ["mae", "scratch"], "every arm, in order");
    let stages: Vec<usize> = target.arms.iter().map(|a| a.configs.len()).collect();
    assert_eq!(stages, [2, 1], "the scratch arm has one stage");
    let measured: Vec<Measured> = target
        .arms
        .iter()
        .flat_map(|a| a.configs.iter().map(move |c| (a.arm.name.clone(), c.kind)))
        .map(|(arm, stage)| Measured {
            arm,
            stage,
            // 60 s x 50/s = 3,000 images = 3 epochs of 1,000; 30 s x 100/s = 3 epochs.
            images_per_second: if stage.as_str() == "pretrain" {
                50.0
            } else {
                100.0
            },
            train_images: 1000,
        })
        .collect();
    let device = CalibrationDevice {
        device: "cpu".into(),
        gpu_name: None,
    };
    studies::finish_calibration(&db.pool, &job.lease, &target, &device, &measured)
        .await
        .expect("calibrated");
    let state: String = sqlx::query_scalar("select state::text from job where job_id = $1")
        .bind(job.lease.job_id)
        .fetch_one(&db.pool)
        .await
        .expect("job");
    assert_eq!(state, "succeeded");
    let runs = |arm: &'static str| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_as::<_, (String, i32, Option<i64>)>(
                "select kind::text, epochs_total, (config->>'epoch_images')::bigint
                 from run where study_arm = $1 order by study_seed",
            )
            .bind(arm)
            .fetch_all(&pool)
            .await
            .expect("runs")
        }
    };
    let mae = runs("mae").await;
    assert_eq!(mae.len(), 3, "every seed of the arm queued");
    assert!(
        mae.iter().all(|r| *r == ("pretrain".to_string(), 3, None)),
        "whole epochs: {mae:?}"
    );
    let ft: serde_json::Value = sqlx::query_scalar(
        "select finetune_config from study_chain where arm = 'mae' and seed = 0",
    )
    .fetch_one(&db.pool)
    .await
    .expect("chain");
    assert_eq!(ft["epochs"], 3, "the finetune stage is sized too");
    // Scratch: 90 s (both stages) at 100/s = 9 epochs of 1,000.
    let scratch = runs("scratch").await;
    assert_eq!(scratch.len(), 3);
    assert!(
        scratch
            .iter()
            .all(|r| *r == ("finetune".to_string(), 9, None)),
        "{scratch:?}"
    );
    assert_eq!(
        count(&db.pool, "select count(*) from study_calibration").await,
        3
    );
    // Nothing is left to calibrate.
    let again = studies::calibration_target(&db.pool, &job.payload)
        .await
        .expect("target");
    assert!(again.arms.is_empty());
}

#[tokio::test]
async fn a_budget_between_epochs_is_sampled_not_rounded_away() {
    let db = TestDb::new().await.expect("db");
    let s = study(
        "name = 'eq'\nseeds = 1\nstages = 'pretrain'\n[base]\ntrain_subset = 1000\nbatch_size = 32\n[budget]\npretrain_seconds = 14\n[arms.mae]\nmodel = 'mae'\n",
    );
    studies::create_study(&db.pool, &s, None)
        .await
        .expect("create");
    let w = worker(&db.pool).await;
    let job = claim(&db.pool, w).await;
    let target = studies::calibration_target(&db.pool, &job.payload)
        .await
        .expect("target");
    // 14 s x 100/s = 1,400 images: two epochs of 700 sampled images.
    let measured = [Measured {
        arm: "mae".into(),
        stage: maelab_core::config::RunKind::Pretrain,
        images_per_second: 100.0,
        train_images: 1000,
    }];
    let device = CalibrationDevice {
        device: "cpu".into(),
        gpu_name: None,
    };
    studies::finish_calibration(&db.pool, &job.lease, &target, &device, &measured)
        .await
        .expect("calibrated");
    let (epochs, sampled): (i32, Option<i64>) =
        sqlx::query_as("select epochs_total, (config->>'epoch_images')::bigint from run")
            .fetch_one(&db.pool)
            .await
            .expect("run");
    assert_eq!((epochs, sampled), (2, Some(700)));
    let (epoch_images, seen): (i64, i64) =
        sqlx::query_as("select epoch_images, epochs * epoch_images from study_calibration")
            .fetch_one(&db.pool)
            .await
            .expect("calibration");
    assert_eq!((epoch_images, seen), (700, 1400));
}

#[tokio::test]
async fn cancelling_a_study_cancels_its_calibrations() {
    let db = TestDb::new().await.expect("db");
    let s = study(
        "name = 'eq'\nseeds = 1\n[budget]\npretrain_seconds = 60\nfinetune_seconds = 30\n[arms.mae]\nmodel = 'mae'\n",
    );
    let created = studies::create_study(&db.pool, &s, None)
        .await
        .expect("create");
    let done = studies::cancel_study(&db.pool, created.study_id)
        .await
        .expect("cancel");
    assert_eq!(done.cancelled, 1);
    assert_eq!(
        count(&db.pool, "select count(*) from job where state = 'queued'").await,
        0
    );
    let r = studies::retry_study(&db.pool, created.study_id, None)
        .await
        .expect("retry");
    assert_eq!(r.calibrations, 1);
    assert_eq!(
        count(
            &db.pool,
            "select count(*) from job where state = 'queued' and job_type = 'calibrate'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn chains_are_queued_seed_by_seed_so_every_arm_reaches_the_same_n() {
    let db = TestDb::new().await.expect("db");
    studies::create_study(&db.pool, &study(EPOCHS), None)
        .await
        .expect("create");
    let w = worker(&db.pool).await;
    // Seed 0 of both arms first.
    let first = claim(&db.pool, w).await;
    let order = |pool: PgPool| async move {
        sqlx::query_as::<_, (String, i64, String)>(
            "select r.study_arm, r.study_seed, r.kind::text from job j join run r using (run_id)
             where j.state = 'queued' order by j.priority desc, j.enqueued_at, j.job_id",
        )
        .fetch_all(&pool)
        .await
        .expect("queue")
    };
    assert_eq!(
        order(db.pool.clone()).await,
        [
            ("wave", 0, "pretrain"),
            ("mae", 1, "pretrain"),
            ("wave", 1, "pretrain")
        ]
        .map(|(a, s, k)| (a.to_string(), s, k.to_string()))
    );
    // The finetune of seed 0 goes before the pretrains of seed 1.
    finish_pretrain(&db.pool, &first, 2).await;
    assert_eq!(
        order(db.pool.clone()).await,
        [
            ("wave", 0, "pretrain"),
            ("mae", 0, "finetune"),
            ("mae", 1, "pretrain"),
            ("wave", 1, "pretrain")
        ]
        .map(|(a, s, k)| (a.to_string(), s, k.to_string()))
    );
}
