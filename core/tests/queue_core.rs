//! The queue's SQL against the real PostgreSQL, a fresh database per test.

use std::collections::HashSet;
use std::time::Duration;

use maelab_core::RunConfig;
use maelab_core::db::artifacts::{self, NewArtifact};
use maelab_core::db::metrics::{self, EpochRecord, StepRecord};
use maelab_core::db::queue::{self, CancelOutcome, JobType, NewJob, QueueError};
use maelab_core::db::runs::{self, JobOptions, RunError};
use maelab_core::db::testing::TestDb;
use maelab_core::db::workers::{self, WorkerInfo};
use sqlx::PgPool;
use uuid::Uuid;

const LEASE: Duration = Duration::from_secs(30);

async fn worker(pool: &PgPool, name: &str) -> Uuid {
    workers::register(
        pool,
        &WorkerInfo {
            name: name.into(),
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

fn pretrain(epochs: u32) -> RunConfig {
    RunConfig::from_toml_str(&format!(
        "kind = 'pretrain'\nepochs = {epochs}\nwarmup_epochs = 0"
    ))
    .expect("valid config")
}

fn epoch_row(epoch: i32) -> EpochRecord {
    EpochRecord {
        epoch,
        train_lr: 1e-4,
        train_loss: 1.0 / f64::from(epoch + 1),
        test_loss: None,
        test_acc1: None,
        test_acc5: None,
        n_parameters: Some(1000),
        psnr: None,
        hf_ratio: None,
        epoch_seconds: 0.5,
        images_per_second: Some(100.0),
        extra: serde_json::json!({}),
    }
}

async fn scalar_i64(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql)
}

async fn expire_all(pool: &PgPool) {
    sqlx::query(
        "update job set lease_expires_at = now() - interval '1 second' where state = 'running'",
    )
    .execute(pool)
    .await
    .expect("expire");
}

#[tokio::test]
async fn concurrent_claimers_take_each_job_exactly_once() {
    let db = TestDb::new().await.expect("db");
    let jobs = 300;
    for _ in 0..jobs {
        queue::enqueue(&db.pool, &NewJob::load_test(serde_json::json!({})))
            .await
            .expect("enqueue");
    }
    let mut tasks = Vec::new();
    for i in 0..8 {
        let pool = db.pool.clone();
        let wid = worker(&pool, &format!("w{i}")).await;
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(job) = queue::claim_next(&pool, wid, LEASE).await.expect("claim") {
                queue::complete(&pool, &job.lease).await.expect("complete");
                mine.push(job.lease.job_id);
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let unique: HashSet<_> = all.iter().copied().collect();
    assert_eq!(all.len(), jobs, "every job claimed once, none twice");
    assert_eq!(unique.len(), jobs);
    assert_eq!(
        scalar_i64(
            &db.pool,
            "select count(*) from job where state = 'succeeded' and attempt = 1"
        )
        .await,
        jobs as i64
    );
}

#[tokio::test]
async fn claims_by_priority_then_age_and_bumps_the_token() {
    let db = TestDb::new().await.expect("db");
    let wid = worker(&db.pool, "w").await;
    let low = queue::enqueue(&db.pool, &NewJob::load_test(serde_json::json!({})))
        .await
        .expect("q");
    let mut high = NewJob::load_test(serde_json::json!({}));
    high.priority = 5;
    let high = queue::enqueue(&db.pool, &high).await.expect("q");
    let first = queue::claim_next(&db.pool, wid, LEASE)
        .await
        .expect("claim")
        .expect("a job");
    assert_eq!(first.lease.job_id, high);
    assert_eq!((first.attempt, first.lease.lease_token), (1, 1));
    let second = queue::claim_next(&db.pool, wid, LEASE)
        .await
        .expect("claim")
        .expect("a job");
    assert_eq!(second.lease.job_id, low);
    assert!(
        queue::claim_next(&db.pool, wid, LEASE)
            .await
            .expect("claim")
            .is_none()
    );
}

#[tokio::test]
async fn a_stale_workers_late_writes_are_rejected() {
    let db = TestDb::new().await.expect("db");
    let created = runs::create_run_with(
        &db.pool,
        &pretrain(3),
        None,
        &JobOptions {
            job_type: JobType::LoadTest,
            ..JobOptions::default()
        },
    )
    .await
    .expect("create");
    let (a, b) = (worker(&db.pool, "a").await, worker(&db.pool, "b").await);
    let stale = queue::claim_next(&db.pool, a, LEASE)
        .await
        .expect("claim")
        .expect("job");
    metrics::record_epoch(&db.pool, &stale.lease, &epoch_row(0))
        .await
        .expect("first write");

    // Worker a stops heartbeating; its lease expires and the reaper requeues.
    expire_all(&db.pool).await;
    let rescued = queue::rescue_expired(&db.pool, Duration::ZERO)
        .await
        .expect("rescue");
    assert_eq!(rescued.requeued, 1);
    let fresh = queue::claim_next(&db.pool, b, LEASE)
        .await
        .expect("claim")
        .expect("job");
    assert_eq!(fresh.lease.job_id, stale.lease.job_id);
    assert!(fresh.lease.lease_token > stale.lease.lease_token);
    assert_eq!(fresh.attempt, 2);

    let mut late = epoch_row(1);
    late.train_loss = 999.0;
    for result in [
        metrics::record_epoch(&db.pool, &stale.lease, &late).await,
        metrics::record_step(
            &db.pool,
            &stale.lease,
            &StepRecord {
                epoch: 1,
                step: 7,
                progress: 0.5,
                train_loss: 9.0,
                lr: 0.1,
                images_per_second: None,
            },
        )
        .await,
        queue::heartbeat(&db.pool, &stale.lease, LEASE)
            .await
            .map(|_| ()),
        queue::complete(&db.pool, &stale.lease).await,
        queue::fail(&db.pool, &stale.lease, "late").await,
        artifacts::put_artifact(
            &db.pool,
            &stale.lease,
            &NewArtifact {
                kind: "reconstruction",
                epoch: Some(1),
                name: "r.png",
                media_type: "image/png",
                bytes: b"x",
            },
        )
        .await
        .map(|_| ()),
    ] {
        assert!(
            matches!(result, Err(QueueError::LeaseLost { .. })),
            "{result:?}"
        );
    }
    assert_eq!(
        scalar_i64(
            &db.pool,
            "select count(*) from epoch_metric where epoch = 1"
        )
        .await,
        0
    );
    assert_eq!(
        scalar_i64(&db.pool, "select count(*) from step_metric").await,
        0
    );
    assert_eq!(
        scalar_i64(&db.pool, "select count(*) from artifact").await,
        0
    );
    // The new owner writes fine and finishes the job.
    metrics::record_epoch(&db.pool, &fresh.lease, &epoch_row(1))
        .await
        .expect("fresh write");
    queue::complete(&db.pool, &fresh.lease)
        .await
        .expect("complete");
    let run = runs::get_run(&db.pool, created.run_id)
        .await
        .expect("get")
        .expect("run");
    assert_eq!(run.status, "succeeded");
}

#[tokio::test]
async fn rescue_backs_off_then_fails_with_the_reason_when_attempts_run_out() {
    let db = TestDb::new().await.expect("db");
    let created = runs::create_run_with(
        &db.pool,
        &pretrain(3),
        None,
        &JobOptions {
            job_type: JobType::LoadTest,
            max_attempts: 2,
            ..JobOptions::default()
        },
    )
    .await
    .expect("create");
    let w = worker(&db.pool, "w").await;
    queue::claim_next(&db.pool, w, LEASE)
        .await
        .expect("claim")
        .expect("job");
    // A live lease is never rescued, however long the job has run.
    assert_eq!(
        queue::rescue_expired(&db.pool, Duration::ZERO)
            .await
            .expect("rescue")
            .requeued,
        0
    );
    expire_all(&db.pool).await;
    let r = queue::rescue_expired(&db.pool, Duration::from_secs(60))
        .await
        .expect("rescue");
    assert_eq!((r.requeued, r.failed), (1, 0));
    // Backoff: not due yet.
    assert!(
        queue::claim_next(&db.pool, w, LEASE)
            .await
            .expect("claim")
            .is_none()
    );
    sqlx::query("update job set run_after = now()")
        .execute(&db.pool)
        .await
        .expect("due");
    let again = queue::claim_next(&db.pool, w, LEASE)
        .await
        .expect("claim")
        .expect("job");
    assert_eq!(again.attempt, 2);
    expire_all(&db.pool).await;
    let r = queue::rescue_expired(&db.pool, Duration::from_secs(60))
        .await
        .expect("rescue");
    assert_eq!((r.requeued, r.failed), (0, 1));
    let run = runs::get_run(&db.pool, created.run_id)
        .await
        .expect("get")
        .expect("run");
    assert_eq!(run.status, "failed");
    let error = run.error.expect("a reason");
    assert!(
        error.contains("lease expired") && error.contains("no attempts left"),
        "{error}"
    );
}

#[tokio::test]
async fn one_reaper_at_a_time() {
    let db = TestDb::new().await.expect("db");
    let mut tx = db.pool.begin().await.expect("tx");
    sqlx::query("select pg_advisory_xact_lock($1)")
        .bind(queue::RESCUE_LOCK_KEY)
        .execute(&mut *tx)
        .await
        .expect("lock");
    let r = queue::rescue_expired(&db.pool, Duration::ZERO)
        .await
        .expect("rescue");
    assert!(r.skipped);
    tx.rollback().await.expect("rollback");
    assert!(
        !queue::rescue_expired(&db.pool, Duration::ZERO)
            .await
            .expect("rescue")
            .skipped
    );
}

#[tokio::test]
async fn cancel_queued_at_once_running_by_flag_finished_is_a_conflict() {
    let db = TestDb::new().await.expect("db");
    let opts = JobOptions {
        job_type: JobType::LoadTest,
        ..JobOptions::default()
    };
    let queued = runs::create_run_with(&db.pool, &pretrain(2), None, &opts)
        .await
        .expect("create");
    assert_eq!(
        runs::cancel_run(&db.pool, queued.run_id)
            .await
            .expect("cancel"),
        CancelOutcome::Cancelled
    );
    let view = runs::get_run(&db.pool, queued.run_id)
        .await
        .expect("get")
        .expect("run");
    assert_eq!(
        (view.status.as_str(), view.job_state.as_deref()),
        ("cancelled", Some("cancelled"))
    );
    let w = worker(&db.pool, "w").await;
    assert!(
        queue::claim_next(&db.pool, w, LEASE)
            .await
            .expect("claim")
            .is_none(),
        "cancelled job never claimed"
    );

    let running = runs::create_run_with(&db.pool, &pretrain(2), None, &opts)
        .await
        .expect("create");
    let job = queue::claim_next(&db.pool, w, LEASE)
        .await
        .expect("claim")
        .expect("job");
    assert!(
        !queue::heartbeat(&db.pool, &job.lease, LEASE)
            .await
            .expect("hb")
            .cancel_requested
    );
    assert_eq!(
        runs::cancel_run(&db.pool, running.run_id)
            .await
            .expect("cancel"),
        CancelOutcome::Requested
    );
    assert!(
        queue::heartbeat(&db.pool, &job.lease, LEASE)
            .await
            .expect("hb")
            .cancel_requested
    );
    queue::finish_cancelled(&db.pool, &job.lease)
        .await
        .expect("finish");
    let view = runs::get_run(&db.pool, running.run_id)
        .await
        .expect("get")
        .expect("run");
    assert_eq!(view.status, "cancelled");
    assert!(view.finished_at.is_some());

    assert!(matches!(
        runs::cancel_run(&db.pool, running.run_id).await,
        Err(RunError::Conflict(_))
    ));
    assert!(matches!(
        runs::cancel_run(&db.pool, Uuid::new_v4()).await,
        Err(RunError::NotFound(_))
    ));
    // Retry brings it back with fresh attempts; retrying a queued run conflicts.
    runs::retry_run(&db.pool, running.run_id)
        .await
        .expect("retry");
    let view = runs::get_run(&db.pool, running.run_id)
        .await
        .expect("get")
        .expect("run");
    assert_eq!((view.status.as_str(), view.attempt), ("queued", Some(0)));
    assert!(matches!(
        runs::retry_run(&db.pool, running.run_id).await,
        Err(RunError::Conflict(_))
    ));
}

#[tokio::test]
async fn graceful_requeue_hands_the_attempt_back() {
    let db = TestDb::new().await.expect("db");
    let opts = JobOptions {
        job_type: JobType::LoadTest,
        max_attempts: 1,
        ..JobOptions::default()
    };
    let run = runs::create_run_with(&db.pool, &pretrain(2), None, &opts)
        .await
        .expect("create");
    let w = worker(&db.pool, "w").await;
    for _ in 0..3 {
        let job = queue::claim_next(&db.pool, w, LEASE)
            .await
            .expect("claim")
            .expect("job");
        queue::requeue(&db.pool, &job.lease).await.expect("requeue");
        assert!(matches!(
            queue::requeue(&db.pool, &job.lease).await,
            Err(QueueError::LeaseLost { .. })
        ));
    }
    let view = runs::get_run(&db.pool, run.run_id)
        .await
        .expect("get")
        .expect("run");
    assert_eq!((view.status.as_str(), view.attempt), ("queued", Some(0)));
}

#[tokio::test]
async fn epoch_rows_and_checkpoint_pointer_move_together_and_retention_keeps_every_tenth() {
    let db = TestDb::new().await.expect("db");
    let opts = JobOptions {
        job_type: JobType::LoadTest,
        ..JobOptions::default()
    };
    let run = runs::create_run_with(&db.pool, &pretrain(25), None, &opts)
        .await
        .expect("create");
    let w = worker(&db.pool, "w").await;
    let job = queue::claim_next(&db.pool, w, LEASE)
        .await
        .expect("claim")
        .expect("job");
    for epoch in 0..12 {
        let weights = format!("weights {epoch}");
        let state = format!("{{\"epoch\": {epoch}}}");
        let (wname, sname) = (
            format!("checkpoint-e{epoch:04}.safetensors"),
            format!("checkpoint-e{epoch:04}.json"),
        );
        let files = [
            NewArtifact {
                kind: "checkpoint",
                epoch: Some(epoch),
                name: &wname,
                media_type: "application/octet-stream",
                bytes: weights.as_bytes(),
            },
            NewArtifact {
                kind: "checkpoint",
                epoch: Some(epoch),
                name: &sname,
                media_type: "application/json",
                bytes: state.as_bytes(),
            },
        ];
        let id = metrics::record_epoch_with_checkpoint(
            &db.pool,
            &job.lease,
            &epoch_row(epoch),
            25,
            &files,
        )
        .await
        .expect("write");
        let a = artifacts::get_artifact(&db.pool, id).await.expect("read");
        assert_eq!(
            a.body,
            artifacts::ArtifactBody::Inline(weights.into_bytes())
        );
    }
    // A resumed attempt repeating epoch 11 replaces the row, never adds one.
    metrics::record_epoch(&db.pool, &job.lease, &epoch_row(11))
        .await
        .expect("again");
    assert_eq!(
        scalar_i64(&db.pool, "select count(*) from epoch_metric").await,
        12
    );
    let view = runs::get_run(&db.pool, run.run_id)
        .await
        .expect("get")
        .expect("run");
    assert_eq!(view.checkpoint_epoch, Some(11));
    let kept: Vec<i32> = sqlx::query_scalar("select distinct epoch from artifact order by epoch")
        .fetch_all(&db.pool)
        .await
        .expect("kept");
    assert_eq!(
        kept,
        vec![9, 11],
        "epoch 9 kept for good, 11 is the resume point"
    );
    assert_eq!(
        artifacts::checkpoint_files(&db.pool, run.run_id, 9)
            .await
            .expect("files")
            .len(),
        2
    );
}

#[tokio::test]
async fn invalid_configs_never_reach_the_queue() {
    let db = TestDb::new().await.expect("db");
    let mut bad = pretrain(3);
    bad.mask_ratio = 1.5;
    match runs::create_run(&db.pool, &bad, None).await {
        Err(RunError::Invalid(errs)) => assert!(errs.for_field("mask_ratio").is_some(), "{errs}"),
        other => panic!("expected a validation error, got {other:?}"),
    }
    assert_eq!(scalar_i64(&db.pool, "select count(*) from job").await, 0);
    assert_eq!(scalar_i64(&db.pool, "select count(*) from run").await, 0);
}

fn finetune(parent: Uuid, epoch: Option<u32>, extra: &str) -> RunConfig {
    let epoch = epoch
        .map(|e| format!("parent_epoch = {e}\n"))
        .unwrap_or_default();
    RunConfig::from_toml_str(&format!(
        "kind = 'finetune'\nepochs = 2\nwarmup_epochs = 0\nparent_run = '{parent}'\n{epoch}{extra}"
    ))
    .expect("valid finetune config")
}

fn field_of(result: Result<runs::CreatedRun, RunError>) -> String {
    match result {
        Err(RunError::Invalid(errs)) => errs.first().field.clone(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn finetunes_need_a_finished_pretrain_parent_of_the_same_encoder() {
    let db = TestDb::new().await.expect("db");
    assert_eq!(
        field_of(runs::create_run(&db.pool, &finetune(Uuid::new_v4(), None, ""), None).await),
        "parent_run"
    );

    let parent = runs::create_run_with(
        &db.pool,
        &pretrain(12),
        None,
        &JobOptions {
            job_type: JobType::LoadTest,
            ..JobOptions::default()
        },
    )
    .await
    .expect("parent");
    // Unfinished, no checkpoint yet.
    assert_eq!(
        field_of(runs::create_run(&db.pool, &finetune(parent.run_id, None, ""), None).await),
        "parent_run"
    );
    assert_eq!(
        field_of(runs::create_run(&db.pool, &finetune(parent.run_id, Some(9), ""), None).await),
        "parent_epoch"
    );
    // Checkpoints of epochs 0..=9 land; 9 is kept for good, 5 is not.
    let w = worker(&db.pool, "w").await;
    let job = queue::claim_next(&db.pool, w, LEASE)
        .await
        .expect("claim")
        .expect("job");
    for epoch in 0..10 {
        let name = format!("checkpoint-e{epoch:04}.safetensors");
        let files = [NewArtifact {
            kind: "checkpoint",
            epoch: Some(epoch),
            name: &name,
            media_type: "application/octet-stream",
            bytes: b"w",
        }];
        metrics::record_epoch_with_checkpoint(&db.pool, &job.lease, &epoch_row(epoch), 12, &files)
            .await
            .expect("write");
    }
    assert_eq!(
        field_of(runs::create_run(&db.pool, &finetune(parent.run_id, Some(5), ""), None).await),
        "parent_epoch"
    );
    assert_eq!(
        field_of(runs::create_run(&db.pool, &finetune(parent.run_id, Some(40), ""), None).await),
        "parent_epoch"
    );
    assert_eq!(
        field_of(
            runs::create_run(
                &db.pool,
                &finetune(parent.run_id, Some(9), "preset = 'vit-tiny/4'"),
                None
            )
            .await
        ),
        "embed_dim"
    );
    assert_eq!(
        field_of(
            runs::create_run(
                &db.pool,
                &finetune(parent.run_id, Some(9), "model = 'wave_mae'"),
                None
            )
            .await
        ),
        "model"
    );
    let child = runs::create_run(&db.pool, &finetune(parent.run_id, Some(9), ""), None)
        .await
        .expect("accepted");
    let view = runs::get_run(&db.pool, child.run_id)
        .await
        .expect("get")
        .expect("run");
    assert_eq!(
        (view.parent_run_id, view.parent_epoch),
        (Some(parent.run_id), Some(9))
    );

    // A finetune cannot be a parent.
    assert_eq!(
        field_of(runs::create_run(&db.pool, &finetune(child.run_id, None, ""), None).await),
        "parent_run"
    );
}

/// The summary columns of `run` next to a fresh aggregate of its epoch rows.
async fn assert_summary_matches(pool: &PgPool, run_id: Uuid) {
    type Summary = (
        i64,
        Option<i32>,
        Option<f64>,
        Option<f64>,
        Option<f64>,
        Option<f64>,
        Option<f64>,
        Option<i64>,
    );
    let stored: Summary = sqlx::query_as(
        "select epochs_done::bigint, last_epoch, best_acc1, best_acc5, last_train_loss,
                train_seconds, mean_images_per_second, epoch_n_parameters
         from run where run_id = $1",
    )
    .bind(run_id)
    .fetch_one(pool)
    .await
    .expect("stored summary");
    let fresh: Summary = sqlx::query_as(
        "select count(*), max(epoch), max(test_acc1), max(test_acc5),
                (array_agg(train_loss order by epoch desc))[1], sum(epoch_seconds),
                avg(images_per_second), max(n_parameters)
         from epoch_metric where run_id = $1",
    )
    .bind(run_id)
    .fetch_one(pool)
    .await
    .expect("fresh aggregate");
    let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * b.abs().max(1.0),
        (a, b) => a == b,
    };
    assert_eq!(
        (stored.0, stored.1, stored.7),
        (fresh.0, fresh.1, fresh.7),
        "{stored:?} vs {fresh:?}"
    );
    for (a, b) in [
        (stored.2, fresh.2),
        (stored.3, fresh.3),
        (stored.4, fresh.4),
        (stored.5, fresh.5),
        (stored.6, fresh.6),
    ] {
        assert!(close(a, b), "{stored:?} vs {fresh:?}");
    }
}

#[tokio::test]
async fn run_summary_follows_inserts_upserts_and_resume_rewrites() {
    let db = TestDb::new().await.expect("db");
    let created = runs::create_run_with(
        &db.pool,
        &pretrain(5),
        None,
        &JobOptions {
            job_type: JobType::LoadTest,
            ..JobOptions::default()
        },
    )
    .await
    .expect("create");
    let run_id = created.run_id;
    let row = |epoch: i32, acc1: f64, loss: f64| EpochRecord {
        test_acc1: Some(acc1),
        test_acc5: Some((acc1 + 10.0).min(100.0)),
        train_loss: loss,
        images_per_second: Some(100.0 + f64::from(epoch)),
        epoch_seconds: 0.5 + f64::from(epoch),
        ..epoch_row(epoch)
    };
    // No epochs yet: zero done, nothing best or last.
    assert_summary_matches(&db.pool, run_id).await;
    let summary = |pool: PgPool| async move {
        sqlx::query_as::<_, (i32, Option<f64>, Option<f64>, String)>(
            "select epochs_done, best_acc1, last_train_loss, status::text from run
             where run_id = $1",
        )
        .bind(run_id)
        .fetch_one(&pool)
        .await
        .expect("summary")
    };
    assert_eq!(
        summary(db.pool.clone()).await,
        (0, None, None, "queued".into())
    );

    let (a, b) = (worker(&db.pool, "a").await, worker(&db.pool, "b").await);
    let first = queue::claim_next(&db.pool, a, LEASE)
        .await
        .expect("claim")
        .expect("job");
    // Listen from here on: epoch writes must not announce a run status change.
    let mut listener = sqlx::postgres::PgListener::connect_with(&db.pool)
        .await
        .expect("listener");
    listener.listen("maelab_events").await.expect("listen");

    // Inserts.
    for (epoch, acc1, loss) in [(0, 10.0, 3.0), (1, 40.0, 2.0), (2, 30.0, 1.5)] {
        metrics::record_epoch(&db.pool, &first.lease, &row(epoch, acc1, loss))
            .await
            .expect("record");
        assert_summary_matches(&db.pool, run_id).await;
    }
    assert_eq!(
        summary(db.pool.clone()).await,
        (3, Some(40.0), Some(1.5), "running".into())
    );

    // An upsert of an existing epoch lowers the best: a full recompute, not a running max.
    metrics::record_epoch(&db.pool, &first.lease, &row(1, 20.0, 2.5))
        .await
        .expect("upsert");
    assert_summary_matches(&db.pool, run_id).await;
    assert_eq!(
        summary(db.pool.clone()).await,
        (3, Some(30.0), Some(1.5), "running".into())
    );
    // An upsert of the last epoch changes the last loss.
    metrics::record_epoch(&db.pool, &first.lease, &row(2, 25.0, 1.25))
        .await
        .expect("upsert last");
    assert_summary_matches(&db.pool, run_id).await;
    assert_eq!(
        summary(db.pool.clone()).await,
        (3, Some(25.0), Some(1.25), "running".into())
    );

    // Every notification so far came from epoch rows, none from `run`.
    let mut seen = 0;
    while let Ok(n) = tokio::time::timeout(Duration::from_millis(300), listener.recv()).await {
        let n = n.expect("notification");
        let payload: serde_json::Value = serde_json::from_str(n.payload()).expect("json");
        assert_eq!(payload["table"], "epoch_metric", "{payload}");
        seen += 1;
    }
    assert_eq!(seen, 5);

    // The lease is lost; the next attempt resumes after epoch 0 and rewrites 1 and 2.
    expire_all(&db.pool).await;
    queue::rescue_expired(&db.pool, Duration::ZERO)
        .await
        .expect("rescue");
    let second = queue::claim_next(&db.pool, b, LEASE)
        .await
        .expect("claim")
        .expect("job");
    for (epoch, acc1, loss) in [(1, 15.0, 2.2), (2, 12.0, 1.8), (3, 50.0, 1.0)] {
        metrics::record_epoch(&db.pool, &second.lease, &row(epoch, acc1, loss))
            .await
            .expect("resume write");
        assert_summary_matches(&db.pool, run_id).await;
    }
    assert_eq!(
        summary(db.pool.clone()).await,
        (4, Some(50.0), Some(1.0), "running".into())
    );
    // Written directly (not through a lease), the trigger still keeps it.
    sqlx::query(
        "insert into epoch_metric (run_id, epoch, train_lr, train_loss, test_acc1, epoch_seconds)
         values ($1, 4, 1e-4, 0.5, 99, 1)",
    )
    .bind(run_id)
    .execute(&db.pool)
    .await
    .expect("insert");
    assert_summary_matches(&db.pool, run_id).await;
    sqlx::query("delete from epoch_metric where run_id = $1 and epoch = 4")
        .bind(run_id)
        .execute(&db.pool)
        .await
        .expect("delete");
    assert_summary_matches(&db.pool, run_id).await;
    assert_eq!(
        summary(db.pool.clone()).await,
        (4, Some(50.0), Some(1.0), "running".into())
    );
}
