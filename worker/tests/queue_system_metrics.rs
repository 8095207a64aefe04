//! The CPU path of issue 13's items 4 and 5, for real: on a host without
//! CUDA, `doctor` plans one CPU worker, `run` with the default device
//! (`auto`) trains on the CPU, and its heartbeats store system samples
//! (CPU %, resident memory, no GPU) tagged with the run it works on.
//! And where a worker's artifacts go when it is given no store and no server
//! has published one: `<data-dir>/artifacts`, the server's own default.

mod queue_support;

use std::process::{Command, Stdio};
use std::time::Duration;

use maelab_core::db::testing::TestDb;
use queue_support::{WorkerProcess, load_test_run, wait_for};

fn cuda_available() -> bool {
    let out = Command::new(env!("CARGO_BIN_EXE_maelab-worker"))
        .args(["doctor", "--json"])
        .output()
        .expect("run doctor");
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let devices = report["cuda_devices"].as_array().expect("cuda_devices");
    assert_eq!(
        devices.len() as i64,
        report["cuda_device_count"].as_i64().expect("count")
    );
    report["cuda_available"].as_bool().expect("flag")
}

#[test]
fn doctor_plans_one_cpu_worker_without_cuda() {
    if cuda_available() {
        eprintln!("CUDA present: the CPU plan is not this host's");
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_maelab-worker"))
        .args(["doctor", "--worker-devices"])
        .output()
        .expect("run doctor");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "cpu\n");
}

#[tokio::test]
async fn a_default_worker_trains_on_the_cpu_and_reports_system_samples() {
    if cuda_available() {
        eprintln!("CUDA present: auto would pick the GPU");
        return;
    }
    let db = TestDb::new().await.expect("db");
    let run = load_test_run(&db.pool, 20, 200).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_maelab-worker"))
        // No --device: the default, auto, must pick the CPU here.
        .args(["run", "--database-url", &db.url, "--lease-seconds", "3"])
        .args(["--poll-interval", "0.5"])
        .env_remove("MAELAB_DEVICE")
        // Its own store: without one (and with no server publishing one) a
        // worker falls back to .maelab/artifacts under the test's folder.
        .env("MAELAB_ARTIFACT_STORE", queue_support::store_dir(&db.url))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn maelab-worker");
    // Heartbeats every second (lease / 3): two samples of the run in a few.
    wait_for(
        &db.pool,
        "select count(*) from worker_sample where run_id = $1",
        run.run_id,
        Duration::from_secs(30),
        |n| n >= 2,
    )
    .await;
    let _ = child.kill();
    let _ = child.wait();

    let (device, name): (String, String) = sqlx::query_as("select device, name from worker")
        .fetch_one(&db.pool)
        .await
        .expect("worker");
    assert_eq!(device, "cpu");
    assert!(name.ends_with("/cpu"), "{name}");
    let samples = maelab_core::db::worker_metrics::for_run(&db.pool, run.run_id)
        .await
        .expect("samples");
    assert!(samples.len() >= 2);
    for s in &samples {
        assert!(s.sample.rss_bytes.is_some_and(|b| b > 1 << 20), "{s:?}");
        assert!(s.sample.gpus.is_empty(), "no GPU on the CPU: {s:?}");
    }
    assert!(
        samples.iter().any(|s| s.sample.cpu_percent.is_some()),
        "a rate after the first reading: {samples:?}"
    );
}

#[tokio::test]
async fn without_a_store_a_worker_keeps_artifacts_in_its_data_folder() {
    let db = TestDb::new().await.expect("db");
    let data_dir = tempfile::tempdir().expect("tempdir");
    let log = data_dir.path().join("worker.log");
    let child = Command::new(env!("CARGO_BIN_EXE_maelab-worker"))
        .args(["run", "--database-url", &db.url, "--device", "cpu"])
        .arg("--data-dir")
        .arg(data_dir.path())
        .env_remove("MAELAB_ARTIFACT_STORE")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn maelab-worker");
    // Killed when dropped, whatever the assertions below say.
    let _worker = WorkerProcess { child };
    let registered = async {
        for _ in 0..600 {
            let n: i64 = sqlx::query_scalar("select count(*) from worker")
                .fetch_one(&db.pool)
                .await
                .expect("count");
            if n == 1 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    };
    let ok = registered.await;
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(ok, "the worker never registered:\n{log}");
    let store = data_dir.path().join("artifacts");
    // The store was opened and probed there (the probe's file is gone again).
    assert!(store.is_dir(), "{}\n{log}", store.display());
    assert!(
        log.contains(&store.display().to_string()),
        "the warning names it:\n{log}"
    );
}

#[tokio::test]
async fn an_idle_worker_keeps_being_seen() {
    let db = TestDb::new().await.expect("db");
    let _worker = WorkerProcess::spawn(&db.url, &["--poll-interval", "0.3"]);
    let seen = || async {
        sqlx::query_scalar::<_, chrono::DateTime<chrono::Utc>>("select last_seen_at from worker")
            .fetch_optional(&db.pool)
            .await
            .expect("last_seen_at")
    };
    let mut first = None;
    for _ in 0..600 {
        first = seen().await;
        if first.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = first.expect("the worker registered");
    // No job, so no lease heartbeat: its idle polls must show it alive (the
    // pages call a worker unseen for a minute lost).
    let mut later = first;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        later = seen().await.expect("still there");
        if later > first {
            break;
        }
    }
    assert!(later > first, "last_seen_at stayed at {first} while idle");
    let jobs: i64 = sqlx::query_scalar("select count(*) from job")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(jobs, 0, "it was idle throughout");
}
