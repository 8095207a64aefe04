//! A running server deletes workers' system samples past their retention
//! (two weeks), not only a worker at its start: workers and a server that
//! run for months keep a bounded history.

mod cli_support;

use std::process::Command;
use std::time::{Duration, Instant};

use cli_support::{BIN, serve_on};
use maelab_core::db::testing::TestDb;
use maelab_core::db::worker_metrics::{self, SystemSample};
use maelab_core::db::workers::{self, WorkerInfo};

async fn count(db: &TestDb, filter: &str) -> i64 {
    sqlx::query_scalar(&format!(
        "select count(*) from worker_sample where {filter}"
    ))
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_server_prunes_samples_past_their_retention() {
    let db = TestDb::new().await.unwrap();
    let info = WorkerInfo {
        name: "w".into(),
        host: "h".into(),
        device: "cpu".into(),
        gpu_name: None,
        torch_version: "2.11.0".into(),
        pid: None,
    };
    let worker = workers::register(&db.pool, &info).await.unwrap();
    let sample = SystemSample {
        cpu_percent: Some(50.0),
        rss_bytes: Some(1 << 20),
        gpus: vec![],
    };
    for _ in 0..3 {
        worker_metrics::record(&db.pool, worker, None, &sample)
            .await
            .unwrap();
    }
    // Two samples from beyond the retention, one from just inside it.
    let retention = worker_metrics::RETENTION.as_secs_f64();
    sqlx::query(
        "update worker_sample set sampled_at = now() - make_interval(secs => $1 + 3600)
         where worker_sample_id in (select worker_sample_id from worker_sample order by 1 limit 2)",
    )
    .bind(retention)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "update worker_sample set sampled_at = now() - make_interval(secs => $1 - 3600)
         where worker_sample_id = (select max(worker_sample_id) from worker_sample)",
    )
    .bind(retention)
    .execute(&db.pool)
    .await
    .unwrap();
    assert_eq!(count(&db, "true").await, 3);
    let kept_id: i64 = sqlx::query_scalar("select max(worker_sample_id) from worker_sample")
        .fetch_one(&db.pool)
        .await
        .unwrap();

    let server = serve_on(db, Command::new(BIN), &[]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&server.db, "true").await > 1 {
        assert!(Instant::now() < deadline, "old samples were not pruned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kept = format!("worker_sample_id = {kept_id}");
    assert_eq!(
        count(&server.db, &kept).await,
        1,
        "the sample inside the retention stays"
    );
}
