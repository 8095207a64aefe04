//! The pieces together with real training: the built `maelab-worker run`
//! process claims runs made by `maelab_core::db::runs::create_run`, trains
//! them on the CPU (a 2-block vit-micro on CIFAR-10 from `$MAELAB_CIFAR10`
//! when that archive is there, else on a small synthetic CIFAR-format
//! dataset) and streams epochs, steps, reconstructions and checkpoints into
//! PostgreSQL; a finetune starts from its parent's checkpoint fetched from
//! the database; SIGTERM mid-run requeues the run and another worker resumes
//! it from the stored checkpoint; cancel stops a training run; a run whose
//! data is missing fails with the path named, and the worker goes on to the
//! next job.

mod queue_support;
mod train_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use maelab_core::RunConfig;
use maelab_core::db::runs::{self, RunError};
use maelab_core::db::testing::TestDb;
use queue_support::{LoggedWorker, load_test_run, wait_status};
use sqlx::PgPool;
use tempfile::TempDir;
use train_support::{config, write_dataset};
use uuid::Uuid;

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// The tiny model of `train_support::config`, small data, two epochs.
fn tiny(kind: &str, data: &Path, extra: &str) -> RunConfig {
    let base = "epochs = 2\nbatch_size = 32\ntrain_subset = 128\ntest_subset = 64\n\
                warmup_epochs = 0.5";
    config(kind, data, &format!("{base}\n{extra}"))
}

/// Wait for a final status; on a timeout, show the worker's log.
async fn wait_final(pool: &PgPool, run_id: Uuid, worker: &LoggedWorker, limit: Duration) -> String {
    queue_support::wait_final(pool, run_id, limit, || worker.log()).await
}

async fn run_error(pool: &PgPool, run_id: Uuid) -> Option<String> {
    sqlx::query_scalar("select error from run where run_id = $1")
        .bind(run_id)
        .fetch_one(pool)
        .await
        .expect("error column")
}

/// (epoch, train_loss, train_lr, test_loss, test_acc1, test_acc5, psnr, hf_ratio)
type EpochCols = (
    i32,
    f64,
    f64,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
);

async fn epoch_rows(pool: &PgPool, run_id: Uuid) -> Vec<EpochCols> {
    sqlx::query_as(
        "select epoch, train_loss, train_lr, test_loss, test_acc1, test_acc5, psnr, hf_ratio
         from epoch_metric where run_id = $1 order by epoch",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await
    .expect("epoch rows")
}

/// kind, epoch, name, inline bytes and store key of an artifact row.
type StoredRow = (String, Option<i32>, String, Option<Vec<u8>>, Option<String>);

/// (kind, epoch, name, bytes) of every artifact of the run, the bytes read
/// from the workers' artifact store (none are in the database).
async fn artifacts(db: &TestDb, run_id: Uuid) -> Vec<(String, Option<i32>, String, Vec<u8>)> {
    let rows: Vec<StoredRow> = sqlx::query_as(
        "select kind, epoch, name, bytes, store_key from artifact where run_id = $1 order by artifact_id",
    )
    .bind(run_id)
    .fetch_all(&db.pool)
    .await
    .expect("artifacts");
    let store = queue_support::store_dir(&db.url);
    rows.into_iter()
        .map(|(kind, epoch, name, inline, key)| {
            assert!(inline.is_none(), "{name}: bytes in the database");
            let key = key.expect("a store key");
            let bytes = std::fs::read(store.join(&key)).expect("the object is in the store");
            (kind, epoch, name, bytes)
        })
        .collect()
}

/// The CIFAR-10 archive `scripts/env.sh` points at, else a synthetic dataset
/// written into `dir`.
fn dataset(dir: &Path) -> PathBuf {
    match std::env::var_os("MAELAB_CIFAR10").map(PathBuf::from) {
        Some(archive) if archive.is_file() => {
            println!("training on {}", archive.display());
            archive
        }
        _ => {
            println!("MAELAB_CIFAR10 is not set or missing: training on synthetic data");
            write_dataset(&dir.join("data"), 40, 64)
        }
    }
}

/// (epoch, worker id that wrote it) for every epoch row of the run.
async fn writers(pool: &PgPool, run_id: Uuid) -> Vec<(i32, String)> {
    sqlx::query_as(
        "select epoch, extra->>'worker_id' from epoch_metric where run_id = $1 order by epoch",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await
    .expect("epoch writers")
}

async fn worker_ids(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("select worker_id::text from worker order by started_at")
        .fetch_all(pool)
        .await
        .expect("workers")
}

#[tokio::test]
async fn pretrain_then_finetune_from_its_checkpoint_in_the_database() {
    let tmp = TempDir::new().expect("tempdir");
    let data = dataset(tmp.path());
    let db = TestDb::new().await.expect("db");
    let worker = LoggedWorker::spawn(&db.url, tmp.path());
    let started = Instant::now();

    // (a) Pretrain: epochs, steps, a reconstruction per epoch, a checkpoint.
    let pre_cfg = tiny("pretrain", &data, "");
    let pre = runs::create_run(&db.pool, &pre_cfg, Some("test"))
        .await
        .expect("create pretrain");
    let status = wait_final(&db.pool, pre.run_id, &worker, Duration::from_secs(90)).await;
    assert_eq!(
        status,
        "succeeded",
        "error: {:?}\nworker log:\n{}",
        run_error(&db.pool, pre.run_id).await,
        worker.log()
    );
    let pretrain_secs = started.elapsed().as_secs_f64();
    let rows = epoch_rows(&db.pool, pre.run_id).await;
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        [0, 1],
        "exactly `epochs` epoch rows"
    );
    for (epoch, loss, lr, test_loss, acc1, _, psnr, hf_ratio) in &rows {
        assert!(
            loss.is_finite() && *loss > 0.0,
            "epoch {epoch} train_loss {loss}"
        );
        assert!(lr.is_finite() && *lr > 0.0, "epoch {epoch} train_lr {lr}");
        assert!(
            test_loss.is_none() && acc1.is_none(),
            "pretrain has no test accuracy"
        );
        let psnr = psnr.expect("pretrain rows carry psnr");
        assert!(psnr.is_finite() && psnr > 0.0, "psnr {psnr}");
        let hf = hf_ratio.expect("pretrain rows carry hf_ratio");
        assert!(hf.is_finite() && hf >= 0.0, "hf_ratio {hf}");
    }
    let steps: Vec<(i32, i32, f64)> = sqlx::query_as(
        "select epoch, step, progress from step_metric where run_id = $1 order by step",
    )
    .bind(pre.run_id)
    .fetch_all(&db.pool)
    .await
    .expect("steps");
    for epoch in [0, 1] {
        let last = steps
            .iter()
            .filter(|s| s.0 == epoch)
            .map(|s| s.2)
            .fold(f64::NAN, f64::max);
        assert_eq!(
            last, 1.0,
            "epoch {epoch} steps reach the epoch's end: {steps:?}"
        );
    }
    let arts = artifacts(&db, pre.run_id).await;
    let recons: Vec<_> = arts.iter().filter(|a| a.0 == "reconstruction").collect();
    assert_eq!(
        recons.iter().map(|a| a.1).collect::<Vec<_>>(),
        [Some(0), Some(1)],
        "one reconstruction per epoch"
    );
    for (_, _, name, bytes) in &recons {
        assert!(bytes.starts_with(PNG_SIGNATURE), "{name} is not a PNG");
        image::load_from_memory(bytes).expect("the PNG decodes");
    }
    let checkpoints: Vec<_> = arts.iter().filter(|a| a.0 == "checkpoint").collect();
    assert!(
        checkpoints
            .iter()
            .any(|a| a.1 == Some(1) && a.2.ends_with(".safetensors") && a.3.len() > 1000),
        "the last epoch's weights are stored: {:?}",
        checkpoints.iter().map(|a| &a.2).collect::<Vec<_>>()
    );

    // A finetune of another encoder shape is refused before it is queued.
    let mut foreign = tiny("finetune", &data, "embed_dim = 64");
    foreign.parent_run = Some(pre.run_id);
    match runs::create_run(&db.pool, &foreign, None).await {
        Err(RunError::Invalid(errs)) => {
            assert!(errs.to_string().contains("embed_dim"), "{errs}");
        }
        other => panic!("a foreign-shaped finetune was accepted: {other:?}"),
    }

    // (b) Finetune from the pretrain run's last checkpoint (no parent_epoch:
    // the last one of a succeeded run).
    let mut ft_cfg = tiny("finetune", &data, "");
    ft_cfg.parent_run = Some(pre.run_id);
    let ft = runs::create_run(&db.pool, &ft_cfg, Some("test"))
        .await
        .expect("create finetune");
    let status = wait_final(&db.pool, ft.run_id, &worker, Duration::from_secs(90)).await;
    assert_eq!(
        status,
        "succeeded",
        "error: {:?}\nworker log:\n{}",
        run_error(&db.pool, ft.run_id).await,
        worker.log()
    );
    let rows = epoch_rows(&db.pool, ft.run_id).await;
    assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), [0, 1]);
    for (epoch, loss, _, test_loss, acc1, acc5, _, _) in &rows {
        assert!(loss.is_finite(), "epoch {epoch} train_loss {loss}");
        let test_loss = test_loss.expect("finetune rows carry test_loss");
        let (acc1, acc5) = (acc1.expect("test_acc1"), acc5.expect("test_acc5"));
        assert!(
            test_loss.is_finite() && test_loss > 0.0,
            "test_loss {test_loss}"
        );
        assert!((0.0..=100.0).contains(&acc1), "test_acc1 {acc1}");
        assert!(
            acc5 >= acc1 && acc5 <= 100.0,
            "test_acc5 {acc5} < top-1 {acc1}"
        );
    }
    // The worker fetched the parent's checkpoint from the database and the
    // trainer loaded its encoder.
    let log = worker.log();
    assert!(
        log.lines().any(
            |l| l.contains("encoder loaded from the pretrain checkpoint")
                && l.contains("parent.safetensors")
        ),
        "no encoder load in the worker log:\n{log}"
    );
    for line in log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
    {
        println!("worker: {line}");
    }
    println!(
        "pretrain finished after {pretrain_secs:.1} s, finetune after {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test]
async fn a_missing_dataset_fails_the_run_with_its_path_and_the_worker_goes_on() {
    let tmp = TempDir::new().expect("tempdir");
    let db = TestDb::new().await.expect("db");
    let missing = tmp.path().join("no-such-dataset");
    let bad = runs::create_run(&db.pool, &tiny("pretrain", &missing, ""), None)
        .await
        .expect("create");
    let next = load_test_run(&db.pool, 2, 0).await;
    let mut worker = LoggedWorker::spawn(&db.url, tmp.path());
    let status = wait_final(&db.pool, bad.run_id, &worker, Duration::from_secs(60)).await;
    assert_eq!(status, "failed");
    let error = run_error(&db.pool, bad.run_id).await.unwrap_or_default();
    assert!(
        error.contains(&missing.display().to_string()),
        "the reason names the path: {error:?}"
    );
    let attempts: i32 = sqlx::query_scalar("select attempt from job where run_id = $1")
        .bind(bad.run_id)
        .fetch_one(&db.pool)
        .await
        .expect("attempt");
    assert_eq!(attempts, 1, "bad data is not retried");
    wait_status(&db.pool, next.run_id, "succeeded", Duration::from_secs(30)).await;
    assert!(worker.is_running(), "the worker keeps running");
}

#[tokio::test]
async fn sigterm_requeues_a_training_run_and_another_worker_resumes_it_from_the_database() {
    let tmp = TempDir::new().expect("tempdir");
    let data = write_dataset(&tmp.path().join("data"), 40, 64);
    let db = TestDb::new().await.expect("db");
    let run = runs::create_run(&db.pool, &tiny("pretrain", &data, "epochs = 6"), None)
        .await
        .expect("create");
    let first_dir = tmp.path().join("first");
    std::fs::create_dir_all(&first_dir).expect("dir");
    let mut first = LoggedWorker::spawn(&db.url, &first_dir);
    queue_support::wait_for(
        &db.pool,
        "select count(*) from epoch_metric where run_id = $1",
        run.run_id,
        Duration::from_secs(60),
        |n| n >= 1,
    )
    .await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(first.child.id()).expect("pid")),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let end = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Ok(Some(status)) = first.child.try_wait() {
            break status;
        }
        assert!(
            Instant::now() < end,
            "no exit after SIGTERM:\n{}",
            first.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit:?}\n{}", first.log());
    assert_eq!(
        queue_support::run_status(&db.pool, run.run_id).await,
        "queued"
    );
    let covered: Option<i32> =
        sqlx::query_scalar("select checkpoint_epoch from job where run_id = $1")
            .bind(run.run_id)
            .fetch_one(&db.pool)
            .await
            .expect("checkpoint pointer");
    let covered = covered.expect("the requeued job points at a checkpoint");
    assert!(covered < 5, "SIGTERM came after the last epoch ({covered})");

    let second_dir = tmp.path().join("second");
    std::fs::create_dir_all(&second_dir).expect("dir");
    let second = LoggedWorker::spawn(&db.url, &second_dir);
    let status = wait_final(&db.pool, run.run_id, &second, Duration::from_secs(90)).await;
    assert_eq!(status, "succeeded", "{}", second.log());
    let ids = worker_ids(&db.pool).await;
    assert_eq!(ids.len(), 2);
    let rows = writers(&db.pool, run.run_id).await;
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4, 5],
        "every epoch exactly once"
    );
    for (epoch, writer) in &rows {
        let expected = if *epoch <= covered { &ids[0] } else { &ids[1] };
        assert_eq!(
            writer, expected,
            "epoch {epoch}: checkpointed epochs (<= {covered}) are not trained again"
        );
    }
    let log = second.log();
    assert!(
        log.contains("resuming from the stored checkpoint") && log.contains("resumed"),
        "the second worker resumed from the database's checkpoint:\n{log}"
    );
}

#[tokio::test]
async fn cancel_stops_a_training_run_within_seconds_and_frees_the_worker() {
    let tmp = TempDir::new().expect("tempdir");
    let data = write_dataset(&tmp.path().join("data"), 40, 64);
    let db = TestDb::new().await.expect("db");
    let run = runs::create_run(&db.pool, &tiny("pretrain", &data, "epochs = 200"), None)
        .await
        .expect("create");
    let mut worker = LoggedWorker::spawn(&db.url, tmp.path());
    queue_support::wait_for(
        &db.pool,
        "select count(*) from epoch_metric where run_id = $1",
        run.run_id,
        Duration::from_secs(60),
        |n| n >= 1,
    )
    .await;
    let asked = Instant::now();
    runs::cancel_run(&db.pool, run.run_id)
        .await
        .expect("cancel");
    let status = wait_final(&db.pool, run.run_id, &worker, Duration::from_secs(10)).await;
    let took = asked.elapsed();
    assert_eq!(status, "cancelled");
    assert!(took < Duration::from_secs(5), "cancel took {took:?}");
    println!("cancel reached the training worker in {took:?}");
    // The device is free: the next job runs.
    let next = load_test_run(&db.pool, 1, 0).await;
    wait_status(&db.pool, next.run_id, "succeeded", Duration::from_secs(30)).await;
    assert!(worker.is_running());
}
