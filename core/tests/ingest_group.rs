//! Ingest batches against the real PostgreSQL, a fresh database per test:
//! batches sharing one transaction keep their own outcomes (a refused one
//! writes nothing, the others are stored), a run's batches apply in arrival
//! order, and the run summary that `ingest_points` extends in place always
//! equals the one rebuilt from the epoch rows.

use maelab_core::config::RunKind;
use maelab_core::db::ingest::{
    self, FinishStatus, IngestError, NewExternalRun, Point, PreparedBatch,
};
use maelab_core::db::testing::TestDb;
use sqlx::{PgPool, Row};
use uuid::Uuid;

async fn external_run(pool: &PgPool, name: &str) -> Uuid {
    let run = NewExternalRun {
        name: name.into(),
        kind: RunKind::Pretrain,
        model: "mae_vit_tiny".into(),
        tags: vec![],
        config: serde_json::json!({}),
        client_run_id: None,
        parent_run: None,
        lost_after_seconds: ingest::DEFAULT_LOST_AFTER_SECONDS,
    };
    ingest::create(pool, &run, Some("test"))
        .await
        .expect("create")
        .run_id
}

fn points(rows: &[(&str, u64, f64)]) -> PreparedBatch {
    let points: Vec<Point> = rows
        .iter()
        .map(|(key, step, value)| Point {
            key: (*key).into(),
            step: *step,
            value: *value,
            wall_time: None,
        })
        .collect();
    PreparedBatch::new(&points).expect("valid batch")
}

/// The summary columns as stored, as text (exact comparison, nulls included).
async fn summary(pool: &PgPool, run: Uuid) -> Vec<Option<String>> {
    let row = sqlx::query(
        "select epochs_done::text, last_epoch::text, best_acc1::text, best_acc5::text,
                last_train_loss::text, train_seconds::text, mean_images_per_second::text,
                epoch_n_parameters::text, epochs_total::text
         from run where run_id = $1",
    )
    .bind(run)
    .fetch_one(pool)
    .await
    .expect("run");
    (0..9).map(|i| row.get::<Option<String>, _>(i)).collect()
}

/// Store one batch alone and check that the summary it left is the one a
/// full rebuild from the epoch rows gives.
async fn record_and_check(pool: &PgPool, run: Uuid, batch: &PreparedBatch) {
    let outcomes = ingest::record_group(pool, &[(run, batch)]).await;
    assert!(matches!(outcomes.as_slice(), [Ok(_)]), "{outcomes:?}");
    let kept = summary(pool, run).await;
    sqlx::query("select run_summary_refresh($1)")
        .bind(run)
        .execute(pool)
        .await
        .expect("refresh");
    assert_eq!(
        kept,
        summary(pool, run).await,
        "summary after the batch vs rebuilt"
    );
}

async fn epoch_row(
    pool: &PgPool,
    run: Uuid,
    epoch: i32,
) -> (Option<f64>, Option<f64>, Option<f64>) {
    let row = sqlx::query(
        "select train_loss, test_acc1, epoch_seconds from epoch_metric where run_id = $1 and epoch = $2",
    )
    .bind(run)
    .bind(epoch)
    .fetch_one(pool)
    .await
    .expect("epoch row");
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test]
async fn the_summary_kept_in_place_equals_the_rebuilt_one() {
    let db = TestDb::new().await.expect("test database");
    let pool = &db.pool;
    let run = external_run(pool, "summary").await;
    // Values exact in binary, so sums agree in any order.
    let steps: Vec<PreparedBatch> = vec![
        // Appends (kept in place): two whole epochs, then one key of the next.
        points(&[
            ("train_loss", 0, 1.5),
            ("test_acc1", 0, 50.0),
            ("test_acc5", 0, 80.0),
            ("epoch_seconds", 0, 2.5),
            ("n_parameters", 0, 1000.0),
            ("train_loss", 1, 1.25),
            ("test_acc1", 1, 60.0),
            ("epoch_seconds", 1, 2.25),
        ]),
        points(&[("train_loss", 2, 1.0), ("other/key", 2, 7.0)]),
        // A rewrite of an old epoch's best value (rebuilt): best_acc1 falls to 50.
        points(&[("test_acc1", 1, 10.0)]),
        // The other key of epoch 2 arrives later and meets train_loss in one row.
        points(&[("test_acc1", 2, 99.0), ("epoch_seconds", 2, 0.5)]),
        // images_per_second needs the average rebuilt.
        points(&[("train_loss", 5, 0.75), ("images_per_second", 5, 300.0)]),
        // An epoch before the last (out of order).
        points(&[("train_loss", 3, 0.875), ("test_acc5", 3, 95.0)]),
        // Keys that are not epoch columns only.
        points(&[("lr_scale", 9, 0.5)]),
        // Appends again after all that.
        points(&[
            ("train_loss", 6, 0.5),
            ("test_acc1", 6, 98.0),
            ("n_parameters", 6, 2000.0),
        ]),
    ];
    for batch in &steps {
        record_and_check(pool, run, batch).await;
    }
    assert_eq!(
        epoch_row(pool, run, 1).await,
        (Some(1.25), Some(10.0), Some(2.25))
    );
    assert_eq!(
        epoch_row(pool, run, 2).await,
        (Some(1.0), Some(99.0), Some(0.5))
    );
    let s = summary(pool, run).await;
    let s: Vec<&str> = s.iter().map(|v| v.as_deref().unwrap_or("null")).collect();
    // Epochs 0-3, 5 and 6; the last train_loss is epoch 6's; only epoch keys
    // size the run (7 epochs, not the 10 of lr_scale's step 9).
    assert_eq!(s, ["6", "6", "99", "95", "0.5", "5.25", "300", "2000", "7"]);
    let points: i64 = sqlx::query_scalar("select count(*) from metric_point where run_id = $1")
        .bind(run)
        .fetch_one(pool)
        .await
        .expect("count");
    assert_eq!(points, 20);
}

#[tokio::test]
async fn a_shared_transaction_keeps_each_batch_outcome() {
    let db = TestDb::new().await.expect("test database");
    let pool = &db.pool;
    let (a, b, finished) = (
        external_run(pool, "a").await,
        external_run(pool, "b").await,
        external_run(pool, "finished").await,
    );
    ingest::finish(pool, finished, FinishStatus::Succeeded, None)
        .await
        .expect("finish");
    let unknown = Uuid::new_v4();
    let first = points(&[("train_loss", 0, 2.0), ("loss/aux", 0, 1.0)]);
    let refused = points(&[("train_loss", 0, 3.0)]);
    let of_b = points(&[("test_acc1", 4, 40.0)]);
    let again = points(&[("train_loss", 0, 1.5)]);
    let outcomes = ingest::record_group(
        pool,
        &[
            (a, &first),
            (unknown, &refused),
            (finished, &refused),
            (b, &of_b),
            (a, &again),
        ],
    )
    .await;
    assert_eq!(outcomes.len(), 5);
    assert!(matches!(&outcomes[0], Ok(r) if r.points == 2 && r.epochs == Some((0, 0))));
    assert!(matches!(&outcomes[1], Err(IngestError::NotFound(id)) if *id == unknown));
    assert!(
        matches!(&outcomes[2], Err(IngestError::Conflict(m)) if m.contains("succeeded")),
        "{:?}",
        outcomes[2]
    );
    assert!(matches!(&outcomes[3], Ok(r) if r.epochs == Some((4, 4))));
    assert!(outcomes[4].is_ok(), "{:?}", outcomes[4]);
    // Arrival order within a run: the later batch's value wins.
    let value: f64 = sqlx::query_scalar(
        "select value from metric_point where run_id = $1 and key = 'train_loss' and step = 0",
    )
    .bind(a)
    .fetch_one(pool)
    .await
    .expect("point");
    assert_eq!(value, 1.5);
    assert_eq!(epoch_row(pool, a, 0).await.0, Some(1.5));
    // The refused batch wrote nothing anywhere.
    let finished_points: i64 =
        sqlx::query_scalar("select count(*) from metric_point where run_id = $1")
            .bind(finished)
            .fetch_one(pool)
            .await
            .expect("count");
    assert_eq!(finished_points, 0);
    assert_eq!(summary(pool, b).await[2].as_deref(), Some("40"));
}

#[tokio::test]
async fn a_batch_is_checked_before_it_is_queued() {
    let bad = [Point {
        key: "test_acc1".into(),
        step: 0,
        value: 101.0,
        wall_time: None,
    }];
    let err = PreparedBatch::new(&bad).expect_err("out of range");
    assert!(err.to_string().starts_with("points[0].value"), "{err}");
    let same_point_twice = [
        Point {
            key: "k".into(),
            step: 3,
            value: 1.0,
            wall_time: None,
        },
        Point {
            key: "k".into(),
            step: 3,
            value: 2.0,
            wall_time: None,
        },
    ];
    assert_eq!(
        PreparedBatch::new(&same_point_twice).expect("valid").len(),
        1
    );
}
