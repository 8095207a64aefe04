//! The worker's sink against a store that fails (issue 13, faults): a
//! checkpoint whose upload never lands does not move the job's checkpoint
//! pointer and does not fail the run; the next checkpoint, with the store
//! back, moves it. Real PostgreSQL, a local store whose folder is swapped for
//! a file to make it unwritable.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use maelab_core::RunConfig;
use maelab_core::artifact_store::testing::TempStore;
use maelab_core::db::testing::TestDb;
use maelab_worker::events::{Checkpoint, Control, EpochRow, Sink};
use maelab_worker::queue::signals::JobSignals;
use maelab_worker::queue::sink::DbSink;

fn row(epoch: u32) -> EpochRow {
    EpochRow {
        epoch,
        train_lr: 1e-4,
        train_loss: 1.0,
        test_loss: None,
        test_acc1: None,
        test_acc5: None,
        n_parameters: 10,
        psnr: None,
        hf_ratio: None,
        epoch_seconds: 0.1,
        images_per_second: 1.0,
    }
}

async fn pointer(pool: &sqlx::PgPool, job_id: i64) -> Option<i32> {
    sqlx::query_scalar("select checkpoint_epoch from job where job_id = $1")
        .bind(job_id)
        .fetch_one(pool)
        .await
        .expect("job")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_the_store_never_took_does_not_move_the_pointer_and_the_run_goes_on() {
    let db = TestDb::new().await.expect("db");
    let store = TempStore::new().expect("store");
    let config = RunConfig::from_toml_str("kind = 'pretrain'\nepochs = 3\nwarmup_epochs = 0")
        .expect("config");
    let (_, job) = db
        .claimed_run(&config, Duration::from_secs(60))
        .await
        .expect("claimed run");
    let job_id = job.lease.job_id;
    let files = tempfile::tempdir().expect("dir");
    let (weights, state) = (
        files.path().join("w.safetensors"),
        files.path().join("s.json"),
    );
    std::fs::write(&weights, vec![7u8; 100_000]).expect("weights");
    std::fs::write(&state, b"{\"epoch\": 0}").expect("state");
    let first = Checkpoint {
        epoch: 0,
        weights: weights.clone(),
        state: state.clone(),
    };

    let mut sink = DbSink::new(
        db.pool.clone(),
        store.store.clone(),
        job.lease.clone(),
        Arc::new(JobSignals::new(Arc::new(AtomicBool::new(false)))),
        tokio::runtime::Handle::current(),
        3,
        serde_json::json!({}),
    );
    sink.store_patience = Duration::from_millis(600);

    // The store's folder becomes a file: every upload fails (transiently).
    std::fs::remove_dir_all(&store.dir).expect("remove");
    std::fs::write(&store.dir, b"not a folder").expect("file");
    let (mut sink, controls) = tokio::task::spawn_blocking(move || {
        let a = sink.epoch(&row(0)).expect("epoch row");
        let b = sink.checkpoint(&first).expect("the run goes on");
        (sink, [a, b])
    })
    .await
    .expect("thread");
    assert_eq!(controls, [Control::Continue, Control::Continue]);
    assert_eq!(
        pointer(&db.pool, job_id).await,
        None,
        "no pointer to a missing object"
    );
    let rows: i64 = sqlx::query_scalar("select count(*) from artifact")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(rows, 0);
    let epochs: i64 = sqlx::query_scalar("select count(*) from epoch_metric")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(epochs, 1, "the epoch row itself is kept");

    // The store comes back: the next checkpoint lands and moves the pointer.
    std::fs::remove_file(&store.dir).expect("unblock");
    std::fs::create_dir_all(&store.dir).expect("folder");
    let weights_again = files.path().join("w.safetensors");
    let state_again = files.path().join("s.json");
    let controls = tokio::task::spawn_blocking(move || {
        let a = sink.epoch(&row(1)).expect("epoch row");
        let b = sink
            .checkpoint(&Checkpoint {
                epoch: 1,
                weights: weights_again,
                state: state_again,
            })
            .expect("checkpoint");
        [a, b]
    })
    .await
    .expect("thread");
    assert_eq!(controls, [Control::Continue, Control::Continue]);
    assert_eq!(pointer(&db.pool, job_id).await, Some(1));
    assert_eq!(store.object_count(), 2, "weights and state");
}
