//! The queue worker as a process (the built `maelab-worker run`) against the
//! real PostgreSQL: many workers, kill -9, cancel, SIGTERM, idling.

mod queue_support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use maelab_core::db::runs::{self, RunError};
use maelab_core::db::testing::TestDb;
use queue_support::*;

#[tokio::test]
async fn three_workers_thirty_jobs_none_twice_none_lost() {
    let db = TestDb::new().await.expect("db");
    let mut created = Vec::new();
    for _ in 0..30 {
        created.push(load_test_run(&db.pool, 2, 0).await);
    }
    let _workers: Vec<_> = (0..3)
        .map(|_| WorkerProcess::spawn(&db.url, &["--poll-interval", "0.5"]))
        .collect();
    for run in &created {
        wait_status(&db.pool, run.run_id, "succeeded", Duration::from_secs(60)).await;
    }
    let rows: Vec<(i32, i64, Option<uuid::Uuid>)> =
        sqlx::query_as("select attempt, lease_token, worker_id from job")
            .fetch_all(&db.pool)
            .await
            .expect("jobs");
    assert_eq!(rows.len(), 30);
    assert!(
        rows.iter().all(|(a, t, _)| *a == 1 && *t == 1),
        "each job claimed exactly once: {rows:?}"
    );
    let distinct: HashSet<_> = rows.iter().filter_map(|r| r.2).collect();
    assert!(
        distinct.len() >= 2,
        "work spread over the workers: {distinct:?}"
    );
    let n: i64 = sqlx::query_scalar("select count(*) from epoch_metric")
        .fetch_one(&db.pool)
        .await
        .expect("n");
    assert_eq!(n, 60, "two epochs for each of thirty runs");
}

/// One kill -9 trial: kill the worker mid-run, let the lease expire, another
/// worker resumes from the checkpoint; every epoch exactly once, and the
/// epochs the checkpoint covered were not redone.
async fn kill_trial(db: &TestDb, trial: u32) {
    let epochs = 8;
    let run = load_test_run(&db.pool, epochs, 120).await;
    let lease = [
        "--lease-seconds",
        "2",
        "--poll-interval",
        "0.3",
        "--rescue-backoff",
        "0.1",
    ];
    let mut first = WorkerProcess::spawn(&db.url, &lease);
    // Kill after 1..=4 epochs, varying with the trial.
    let kill_after = i64::from(1 + trial % 4);
    wait_for(
        &db.pool,
        "select count(*) from epoch_metric where run_id = $1",
        run.run_id,
        Duration::from_secs(30),
        |n| n >= kill_after,
    )
    .await;
    first.kill9();
    let covered: Option<i32> =
        sqlx::query_scalar("select checkpoint_epoch from job where run_id = $1")
            .bind(run.run_id)
            .fetch_one(&db.pool)
            .await
            .expect("checkpoint");
    let _second = WorkerProcess::spawn(&db.url, &lease);
    wait_status(&db.pool, run.run_id, "succeeded", Duration::from_secs(40)).await;
    let rows = queue_support::epochs(&db.pool, run.run_id).await;
    let got: Vec<i32> = rows.iter().map(|r| r.0).collect();
    assert_eq!(
        got,
        (0..epochs as i32).collect::<Vec<_>>(),
        "trial {trial}: every epoch once"
    );
    // Killed between an epoch row and its checkpoint: nothing covered yet.
    let covered = covered.unwrap_or(-1);
    for (epoch, attempt) in &rows {
        if *epoch <= covered {
            assert_eq!(
                *attempt, 1,
                "trial {trial}: epoch {epoch} was checkpointed, not redone"
            );
        }
    }
    assert_eq!(
        rows.last().map(|r| r.1),
        Some(2),
        "trial {trial}: the second attempt finished it"
    );
}

/// `MAELAB_KILL_TRIALS=20` for the benchmark's 20 trials; 2 by default.
#[tokio::test]
async fn kill_9_mid_run_resumes_elsewhere_with_every_epoch_once() {
    let db = TestDb::new().await.expect("db");
    let trials: u32 = std::env::var("MAELAB_KILL_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let started = Instant::now();
    for trial in 0..trials {
        kill_trial(&db, trial).await;
    }
    eprintln!(
        "{trials} kill -9 trials passed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test]
async fn cancel_reaches_a_running_worker_within_five_seconds() {
    let db = TestDb::new().await.expect("db");
    let run = load_test_run(&db.pool, 1000, 100).await;
    let _worker = WorkerProcess::spawn(&db.url, &["--poll-interval", "0.5"]);
    wait_for(
        &db.pool,
        "select count(*) from epoch_metric where run_id = $1",
        run.run_id,
        Duration::from_secs(30),
        |n| n >= 1,
    )
    .await;
    let asked = Instant::now();
    runs::cancel_run(&db.pool, run.run_id)
        .await
        .expect("cancel");
    wait_status(&db.pool, run.run_id, "cancelled", Duration::from_secs(5)).await;
    let took = asked.elapsed();
    eprintln!("cancel took {:.2} s", took.as_secs_f64());
    assert!(took < Duration::from_secs(5));
    assert!(matches!(
        runs::cancel_run(&db.pool, run.run_id).await,
        Err(RunError::Conflict(_))
    ));
    // The device is free: the same worker takes the next job.
    let next = load_test_run(&db.pool, 1, 0).await;
    wait_status(&db.pool, next.run_id, "succeeded", Duration::from_secs(10)).await;
}

#[tokio::test]
async fn sigterm_requeues_the_job_and_exits_zero() {
    let db = TestDb::new().await.expect("db");
    let run = load_test_run(&db.pool, 1000, 100).await;
    let mut worker = WorkerProcess::spawn(&db.url, &[]);
    wait_for(
        &db.pool,
        "select count(*) from epoch_metric where run_id = $1",
        run.run_id,
        Duration::from_secs(30),
        |n| n >= 2,
    )
    .await;
    worker.sigterm();
    let status = worker.wait_exit(Duration::from_secs(10)).expect("exited");
    assert!(status.success(), "{status:?}");
    let (state, attempt, ckpt): (String, i32, Option<i32>) =
        sqlx::query_as("select state::text, attempt, checkpoint_epoch from job where run_id = $1")
            .bind(run.run_id)
            .fetch_one(&db.pool)
            .await
            .expect("job");
    assert_eq!((state.as_str(), attempt), ("queued", 0));
    assert!(ckpt.is_some_and(|e| e >= 1), "resume point kept: {ckpt:?}");
    let stopped: i64 =
        sqlx::query_scalar("select count(*) from worker where stopped_at is not null")
            .fetch_one(&db.pool)
            .await
            .expect("workers");
    assert_eq!(stopped, 1);
}

#[tokio::test]
async fn an_idle_worker_does_not_busy_loop() {
    let db = TestDb::new().await.expect("db");
    let worker = WorkerProcess::spawn(&db.url, &["--poll-interval", "0.5"]);
    // Past start-up (libtorch load, migrations, registration).
    wait_for(
        &db.pool,
        "select count(*) from worker where $1::uuid is null or true",
        uuid::Uuid::nil(),
        Duration::from_secs(30),
        |n| n == 1,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = cpu_ticks(worker.pid());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let used = cpu_ticks(worker.pid()) - before;
    eprintln!("idle worker used {used} clock ticks of CPU in 3 s");
    // 3 s at 100 ticks/s = 300 ticks for a busy loop; polling twice a second costs ~0.
    assert!(used <= 6, "idle worker used {used} ticks in 3 s");
}
