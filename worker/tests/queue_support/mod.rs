//! Helpers for the queue tests: worker processes of the built binary (bare,
//! or training with their log kept), runs of load-test jobs, and waiting on
//! the database.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use maelab_core::RunConfig;
use maelab_core::db::queue::JobType;
use maelab_core::db::runs::{self, CreatedRun, JobOptions};
use sqlx::PgPool;

/// The artifact store every worker of the test database at `url` shares
/// (what `maelab serve` would publish): a folder named after the database.
pub fn store_dir(url: &str) -> PathBuf {
    let name = url.rsplit('/').next().unwrap_or("unknown");
    std::env::temp_dir()
        .join("maelab-test-artifacts")
        .join(name)
}

/// A `maelab-worker run` process, killed (SIGKILL) when dropped.
pub struct WorkerProcess {
    pub child: Child,
}

impl WorkerProcess {
    pub fn spawn(url: &str, extra: &[&str]) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_maelab-worker"))
            .args(["run", "--database-url", url, "--device", "cpu"])
            .env("MAELAB_ARTIFACT_STORE", store_dir(url))
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn maelab-worker");
        Self { child }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid")
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn sigterm(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM");
    }

    /// Wait for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A training `maelab-worker run` process (CPU, one thread, its data cache
/// in `dir/cache`) whose log goes to `dir/worker.log`, killed on drop.
pub struct LoggedWorker {
    pub child: Child,
    log: PathBuf,
}

impl LoggedWorker {
    pub fn spawn(url: &str, dir: &Path) -> Self {
        let log = dir.join("worker.log");
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_maelab-worker"))
            .args(["run", "--database-url", url, "--device", "cpu"])
            .env("MAELAB_ARTIFACT_STORE", store_dir(url))
            .args(["--poll-interval", "0.5", "--threads", "1"])
            .args(["--loader-threads", "1", "--cache-dir"])
            .arg(dir.join("cache"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn maelab-worker");
        Self { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for LoggedWorker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn pretrain(epochs: u32) -> RunConfig {
    RunConfig::from_toml_str(&format!(
        "kind = 'pretrain'\nepochs = {epochs}\nwarmup_epochs = 0"
    ))
    .expect("valid config")
}

/// A run whose job is a load test of `epochs` epochs of `sleep_ms` each.
pub async fn load_test_run(pool: &PgPool, epochs: u32, sleep_ms: u64) -> CreatedRun {
    runs::create_run_with(
        pool,
        &pretrain(epochs),
        None,
        &JobOptions {
            job_type: JobType::LoadTest,
            max_attempts: 5,
            payload: serde_json::json!({"epochs": epochs, "sleep_ms": sleep_ms}),
            ..JobOptions::default()
        },
    )
    .await
    .expect("create run")
}

/// Poll `sql` (one i64) until `ok` holds, or panic after `limit`.
pub async fn wait_for(
    pool: &PgPool,
    sql: &str,
    bind: uuid::Uuid,
    limit: Duration,
    ok: impl Fn(i64) -> bool,
) -> i64 {
    let end = Instant::now() + limit;
    loop {
        let value: Option<i64> = sqlx::query_scalar(sql)
            .bind(bind)
            .fetch_optional(pool)
            .await
            .ok()
            .flatten();
        if let Some(v) = value
            && ok(v)
        {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out waiting for `{sql}` (last {value:?})"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub async fn run_status(pool: &PgPool, run_id: uuid::Uuid) -> String {
    sqlx::query_scalar("select status::text from run where run_id = $1")
        .bind(run_id)
        .fetch_one(pool)
        .await
        .expect("status")
}

/// Wait until the run reaches `status`.
pub async fn wait_status(pool: &PgPool, run_id: uuid::Uuid, status: &str, limit: Duration) {
    let end = Instant::now() + limit;
    loop {
        let now = run_status(pool, run_id).await;
        if now == status {
            return;
        }
        assert!(
            Instant::now() < end,
            "run {run_id} is {now}, expected {status}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Wait for a final status (succeeded, failed, cancelled) and return it; on
/// a timeout, panic showing `logs()` (the workers' logs).
pub async fn wait_final(
    pool: &PgPool,
    run_id: uuid::Uuid,
    limit: Duration,
    logs: impl Fn() -> String,
) -> String {
    let end = Instant::now() + limit;
    loop {
        let status = run_status(pool, run_id).await;
        if matches!(status.as_str(), "succeeded" | "failed" | "cancelled") {
            return status;
        }
        assert!(
            Instant::now() < end,
            "run {run_id} still {status} after {limit:?}; logs:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// (epoch, attempt that wrote it) for every epoch row of the run.
pub async fn epochs(pool: &PgPool, run_id: uuid::Uuid) -> Vec<(i32, i64)> {
    sqlx::query_as("select epoch, (extra->>'attempt')::bigint from epoch_metric where run_id = $1 order by epoch")
        .bind(run_id)
        .fetch_all(pool)
        .await
        .expect("epochs")
}

/// utime + stime of `pid`, in clock ticks, from /proc/<pid>/stat.
pub fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // The command name may hold spaces; fields after the closing parenthesis.
    let rest = &stat[stat.rfind(')').expect(")") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15.
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}
