//! Worker system samples against the real PostgreSQL: stored with the run of
//! the worker's job, newest per worker, charted per run, pruned by age.

use std::time::Duration;

use maelab_core::RunConfig;
use maelab_core::db::runs;
use maelab_core::db::testing::TestDb;
use maelab_core::db::worker_metrics::{self, GpuSample, SystemSample};
use maelab_core::db::workers::{self, WorkerInfo};

fn sample(cpu: f64, gpu_used: i64) -> SystemSample {
    SystemSample {
        cpu_percent: Some(cpu),
        rss_bytes: Some(512 << 20),
        gpus: vec![GpuSample {
            index: 0,
            name: Some("Fake H100".into()),
            utilization_percent: Some(97.0),
            memory_used_bytes: Some(gpu_used),
            memory_total_bytes: Some(80 << 30),
            temperature_c: Some(71.0),
            power_watts: Some(402.5),
        }],
    }
}

#[tokio::test]
async fn samples_are_stored_per_run_and_pruned_by_age() {
    let db = TestDb::new().await.expect("test db");
    let worker_id = workers::register(
        &db.pool,
        &WorkerInfo {
            name: "w".into(),
            host: "test".into(),
            device: "cuda:0".into(),
            gpu_name: None,
            torch_version: "none".into(),
            pid: None,
        },
    )
    .await
    .expect("register");
    let config = RunConfig::from_toml_str("kind = 'pretrain'\nepochs = 1\nwarmup_epochs = 0")
        .expect("config");
    let run = runs::create_run(&db.pool, &config, None)
        .await
        .expect("run");

    // Idle, then two samples while the job runs.
    worker_metrics::record(&db.pool, worker_id, None, &SystemSample::default())
        .await
        .expect("idle sample");
    worker_metrics::record(
        &db.pool,
        worker_id,
        Some(run.job_id),
        &sample(50.0, 1 << 30),
    )
    .await
    .expect("first");
    worker_metrics::record(
        &db.pool,
        worker_id,
        Some(run.job_id),
        &sample(150.0, 2 << 30),
    )
    .await
    .expect("second");

    let latest = worker_metrics::latest(&db.pool, &[worker_id])
        .await
        .expect("latest")
        .remove(&worker_id)
        .expect("a sample");
    assert_eq!(latest.sample, sample(150.0, 2 << 30));

    let charted = worker_metrics::for_run(&db.pool, run.run_id)
        .await
        .expect("for run");
    let used: Vec<_> = charted
        .iter()
        .map(|s| s.sample.gpus[0].memory_used_bytes)
        .collect();
    assert_eq!(
        used,
        [Some(1 << 30), Some(2 << 30)],
        "the idle sample is not the run's"
    );

    // Age the first two samples by a day: a 1-hour retention removes them.
    sqlx::query(
        "update worker_sample set sampled_at = sampled_at - interval '1 day'
         where worker_sample_id in (select worker_sample_id from worker_sample
                                    order by worker_sample_id limit 2)",
    )
    .execute(&db.pool)
    .await
    .expect("age");
    let pruned = worker_metrics::prune_older_than(&db.pool, Duration::from_secs(3600))
        .await
        .expect("prune");
    assert_eq!(pruned, 2);
    let left = worker_metrics::for_run(&db.pool, run.run_id)
        .await
        .expect("left");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].sample.cpu_percent, Some(150.0));
}
