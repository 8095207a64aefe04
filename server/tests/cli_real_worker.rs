//! The CI path end to end with nothing simulated: `maelab serve` on a free
//! port with its own database, a real `maelab-worker run` process training on
//! the CPU, and `maelab submit` as a pipeline calls it. A tiny pretrain run
//! with `--wait` exits 0; a tiny finetune of it with a bar no run can meet
//! (`--fail-under test_acc1=101`) exits 2.
//!
//! The server crate cannot depend on the worker crate (it never links
//! libtorch), so the worker binary is looked up beside `maelab` in the same
//! target folder. `scripts/test` builds the whole workspace first; a plain
//! `cargo test -p maelab-server` before the worker was ever built skips this
//! test with a message saying so.
//!
//! Also: a worker started on the server's host with neither a URL nor
//! DATABASE_URL finds the embedded PostgreSQL through the URL file the server
//! wrote into the shared data folder, and still reaches it after the server
//! (and so the cluster) restarts.

mod embedded_pg_support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use maelab_core::db::testing::TestDb;

const BIN: &str = env!("CARGO_BIN_EXE_maelab");

/// `maelab-worker` in the folder `maelab` was built into.
fn worker_binary() -> PathBuf {
    Path::new(BIN).with_file_name(format!("maelab-worker{}", std::env::consts::EXE_SUFFIX))
}

/// A child process, killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A scratch folder, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("maelab-cli-worker-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `maelab serve` on a free port with what `configure` adds (its database);
/// returns it and its base URL once `/healthz` answers, or panics after `limit`.
async fn serve(limit: Duration, configure: impl FnOnce(&mut Command)) -> (Proc, String) {
    let port = free_port();
    let mut command = Command::new(BIN);
    command.args(["serve", "--bind", &format!("127.0.0.1:{port}")]);
    configure(&mut command);
    let server = Proc(
        command
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn maelab serve"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/healthz")).await
            && r.status().is_success()
        {
            return (server, base);
        }
        assert!(Instant::now() < deadline, "the server did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `maelab-worker run` on the CPU, its data cache in `scratch`, with what
/// `configure` adds; its log (RUST_LOG=info) goes to the returned file.
fn spawn_worker(
    bin: &Path,
    scratch: &Scratch,
    configure: impl FnOnce(&mut Command),
) -> (Proc, PathBuf) {
    let log = scratch.0.join("worker.log");
    let mut command = Command::new(bin);
    command
        .args(["run", "--device", "cpu", "--cache-dir"])
        .arg(scratch.0.join("cache"));
    configure(&mut command);
    let child = command
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn maelab-worker");
    (Proc(child), log)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A small dataset in the CIFAR-10 binary format (label byte, then 3x32x32
/// bytes): 5 x 40 training images and 64 test images, classes round-robin,
/// each class its own tint so a finetune has something to learn.
fn write_dataset(dir: &Path) {
    std::fs::create_dir_all(dir).expect("dataset dir");
    let mut seed: u32 = 7;
    let mut records = |n: usize| -> Vec<u8> {
        let mut out = Vec::with_capacity(n * 3073);
        for k in 0..n {
            let class = u8::try_from(k % 10).expect("class");
            out.push(class);
            for ch in 0..3u32 {
                for _ in 0..1024 {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    let noise = (seed >> 16) % 48;
                    let tint = (u32::from(class) * 23 * (ch + 1)) % 160;
                    out.push(u8::try_from(tint + noise).expect("pixel"));
                }
            }
        }
        out
    };
    for i in 1..=5 {
        std::fs::write(dir.join(format!("data_batch_{i}.bin")), records(40)).expect("write");
    }
    std::fs::write(dir.join("test_batch.bin"), records(64)).expect("write");
}

/// A tiny vit-micro run on `data`, two epochs; `extra` adds TOML lines.
fn tiny_toml(kind: &str, data: &Path, extra: &str) -> String {
    format!(
        r#"name = "cli-real-{kind}"
kind = "{kind}"
model = "mae"
preset = "vit-micro/4"
embed_dim = 32
depth = 2
num_heads = 2
decoder_embed_dim = 32
decoder_depth = 1
decoder_num_heads = 2
epochs = 2
warmup_epochs = 0.5
batch_size = 32
train_subset = 128
test_subset = 64
dataset = "{}"
tags = ["ci"]
{extra}
"#,
        data.display()
    )
}

/// Run the CLI, killing it after `limit`.
fn cli(args: &[&str], env: &[(&str, &str)], limit: Duration) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn maelab");
    let end = Instant::now() + limit;
    while matches!(child.try_wait(), Ok(None)) {
        if Instant::now() > end {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("maelab output")
}

fn describe(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// What the real-worker tests start from.
struct Setup {
    worker_bin: PathBuf,
    scratch: Scratch,
    /// The tiny dataset, in `scratch`.
    data: PathBuf,
    db: TestDb,
    /// A token named as asked, made by `maelab token create`.
    token: String,
}

/// The worker binary (None, with a message, when it is not built), a scratch
/// folder with the tiny dataset, a fresh database and a token in it.
async fn setup(token_name: &str) -> Option<Setup> {
    let worker_bin = worker_binary();
    if !worker_bin.is_file() {
        println!(
            "SKIPPED: {} is not built; run `cargo build -p maelab-worker` (scripts/test builds \
             the whole workspace) to run this test",
            worker_bin.display()
        );
        return None;
    }
    let scratch = Scratch::new();
    let data = scratch.0.join("data");
    write_dataset(&data);
    let db = TestDb::new().await.expect("test database");
    let created = tokio::task::spawn_blocking({
        let (url, name) = (db.url.clone(), token_name.to_string());
        move || {
            cli(
                &["token", "create", "--name", &name],
                &[("DATABASE_URL", &url)],
                Duration::from_secs(30),
            )
        }
    })
    .await
    .expect("join");
    assert_eq!(created.status.code(), Some(0), "{}", describe(&created));
    let token = String::from_utf8_lossy(&created.stdout).trim().to_string();
    assert!(token.starts_with("mlb_"), "{token}");
    Some(Setup {
        worker_bin,
        scratch,
        data,
        db,
        token,
    })
}

#[tokio::test]
async fn submit_wait_and_a_missed_bar_with_a_real_worker() {
    let Some(Setup {
        worker_bin,
        scratch,
        data,
        db,
        token,
    }) = setup("ci").await
    else {
        return;
    };
    let url = db.url.clone();

    let (_server, base) = serve(Duration::from_secs(30), |c| {
        c.env("DATABASE_URL", &url)
            // Its artifacts (and so the worker's, published) outside ./.maelab.
            .env(
                "MAELAB_ARTIFACT_STORE",
                std::env::temp_dir()
                    .join("maelab-test-artifacts")
                    .join(format!("real-worker-{}", uuid::Uuid::new_v4())),
            );
    })
    .await;

    let (_worker, worker_log) = spawn_worker(&worker_bin, &scratch, |c| {
        c.args(["--database-url", &url]).args([
            "--poll-interval",
            "0.5",
            "--threads",
            "1",
            "--loader-threads",
            "1",
        ]);
    });
    let log = || std::fs::read_to_string(&worker_log).unwrap_or_default();

    let submit = |toml: String, extra: &'static [&'static str]| {
        let (base, token) = (base.clone(), token.clone());
        let path = scratch.0.join(format!("run-{}.toml", uuid::Uuid::new_v4()));
        std::fs::write(&path, toml).expect("write toml");
        tokio::task::spawn_blocking(move || {
            let path = path.display().to_string();
            let mut args = vec!["submit", path.as_str(), "--poll", "0.2"];
            args.extend_from_slice(extra);
            cli(
                &args,
                &[("MAELAB_URL", &base), ("MAELAB_TOKEN", &token)],
                Duration::from_secs(120),
            )
        })
    };

    let started = Instant::now();
    let pre = submit(tiny_toml("pretrain", &data, ""), &["--wait"])
        .await
        .expect("join");
    assert_eq!(
        pre.status.code(),
        Some(0),
        "{}\nworker log:\n{}",
        describe(&pre),
        log()
    );
    let pretrain_secs = started.elapsed().as_secs_f64();
    let pre_id = String::from_utf8_lossy(&pre.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    let pre_id: uuid::Uuid = pre_id.parse().expect("submit prints the run id first");
    // `runs show` of the finished run: its duration reads as a duration.
    let shown = tokio::task::spawn_blocking({
        let (base, token, id) = (base.clone(), token.clone(), pre_id.to_string());
        move || {
            cli(
                &["runs", "show", &id],
                &[("MAELAB_URL", &base), ("MAELAB_TOKEN", &token)],
                Duration::from_secs(30),
            )
        }
    })
    .await
    .expect("join");
    assert_eq!(shown.status.code(), Some(0), "{}", describe(&shown));
    let shown = String::from_utf8_lossy(&shown.stdout).to_string();
    let duration = shown
        .lines()
        .find_map(|l| l.strip_prefix("duration"))
        .map(str::trim)
        .expect("a duration line");
    assert!(
        duration.ends_with('s') && duration.trim_end_matches('s').parse::<u64>().is_ok(),
        "whole seconds with a unit: {shown}"
    );

    let ft = submit(
        tiny_toml("finetune", &data, &format!("parent_run = \"{pre_id}\"")),
        &["--fail-under", "test_acc1=101"],
    )
    .await
    .expect("join");
    assert_eq!(
        ft.status.code(),
        Some(2),
        "{}\nworker log:\n{}",
        describe(&ft),
        log()
    );
    let stderr = String::from_utf8_lossy(&ft.stderr);
    assert!(
        stderr.contains("bar missed: best test_acc1 is"),
        "the run reported test_acc1 and missed the bar: {stderr}"
    );
    println!(
        "pretrain submit --wait: {pretrain_secs:.1} s; with the finetune: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// `maelab import --follow` running a real `maelab-worker train` (whose
/// log.txt is the official MAE format) into a folder that does not exist yet:
/// the run appears, gets both epochs as the training writes them and is
/// finished `succeeded` by the command's exit, its values the log's.
#[tokio::test]
async fn import_follow_runs_and_follows_a_real_training() {
    let Some(Setup {
        worker_bin,
        scratch,
        data,
        db,
        token,
    }) = setup("cluster").await
    else {
        return;
    };
    let url = db.url.clone();
    let (_server, base) = serve(Duration::from_secs(30), |c| {
        c.env("DATABASE_URL", &url)
            .env("MAELAB_ARTIFACT_STORE", scratch.0.join("artifacts"));
    })
    .await;

    let config = scratch.0.join("tiny.toml");
    std::fs::write(&config, tiny_toml("pretrain", &data, "")).expect("write toml");
    let out = scratch.0.join("mae-out");
    let followed = tokio::task::spawn_blocking({
        let (base, token) = (base.clone(), token.clone());
        let (bin, config, out, cache) = (
            worker_bin.display().to_string(),
            config.display().to_string(),
            out.display().to_string(),
            scratch.0.join("cache").display().to_string(),
        );
        move || {
            cli(
                &[
                    "import",
                    "--follow",
                    "--poll",
                    "0.1",
                    &out,
                    "--",
                    &bin,
                    "train",
                    "--config",
                    &config,
                    "--out",
                    &out,
                    "--threads",
                    "1",
                    "--loader-threads",
                    "1",
                    "--cache-dir",
                    &cache,
                ],
                &[("MAELAB_URL", &base), ("MAELAB_TOKEN", &token)],
                Duration::from_secs(180),
            )
        }
    })
    .await
    .expect("join");
    assert_eq!(followed.status.code(), Some(0), "{}", describe(&followed));
    let stdout = String::from_utf8_lossy(&followed.stdout).to_string();
    let id = stdout
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(stdout.contains("pretrain  following"), "{stdout}");
    assert!(
        stdout.contains(&format!("{id}  succeeded  2 epochs")),
        "{stdout}"
    );

    let run: serde_json::Value = reqwest::get(format!("{base}/api/v1/runs/{id}"))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["kind"], "pretrain");
    assert_eq!(run["name"], "mae-out");
    assert_eq!(run["epochs_done"], 2);
    // The stored values are the log's, digit for digit.
    let log = std::fs::read_to_string(out.join("log.txt")).expect("log.txt");
    let last: serde_json::Value =
        serde_json::from_str(log.lines().last().expect("a line")).expect("json line");
    let epochs: serde_json::Value = reqwest::get(format!("{base}/api/v1/runs/{id}/epochs"))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let epochs = epochs
        .as_array()
        .or_else(|| epochs["epochs"].as_array())
        .cloned()
        .unwrap_or_default();
    assert_eq!(epochs.len(), 2, "{epochs:?}");
    assert_eq!(
        epochs[1]["train_loss"], last["train_loss"],
        "{epochs:?}\n{log}"
    );
}

/// SIGTERM, then up to 60 s for the process to exit (a server stops its
/// embedded PostgreSQL on the way out).
async fn terminate(mut p: Proc) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(p.0.id()).expect("pid fits"));
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if matches!(p.0.try_wait(), Ok(Some(_))) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = p.0.kill();
}

#[tokio::test]
async fn a_worker_beside_the_server_finds_its_embedded_database_and_keeps_it_across_a_restart() {
    let worker_bin = worker_binary();
    if !worker_bin.is_file() {
        eprintln!(
            "SKIPPED: {} is not built; run `cargo build -p maelab-worker`",
            worker_bin.display()
        );
        return;
    }
    // Declared first so it is dropped last: it stops a cluster a failed
    // assertion left running, then removes the folder.
    let data_dir = embedded_pg_support::DataDir::new();
    let scratch = Scratch::new();
    // With the embedded PostgreSQL in data_dir; initdb and the cluster's
    // first start come before /healthz answers.
    let embedded = |c: &mut Command| {
        c.env("MAELAB_DATA_DIR", &data_dir.0)
            .env_remove("DATABASE_URL");
    };
    let (server, base) = serve(Duration::from_secs(120), embedded).await;
    assert!(
        data_dir.0.join("database-url").is_file(),
        "the server wrote its URL"
    );

    let (worker, worker_log) = spawn_worker(&worker_bin, &scratch, |c| {
        c.args(["--name", "beside-the-server", "--data-dir"])
            .arg(&data_dir.0)
            .env_remove("DATABASE_URL")
            .env_remove("MAELAB_DATABASE_URL");
    });
    let log = || std::fs::read_to_string(&worker_log).unwrap_or_default();
    // (name:state, last_seen_at) of the one worker, once it has registered.
    let listed = async |base: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let workers: serde_json::Value = reqwest::get(format!("{base}/api/v1/workers"))
                .await
                .expect("GET /api/v1/workers")
                .json()
                .await
                .expect("json");
            let rows: Vec<(String, String)> = workers
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|w| {
                    Some((
                        format!("{}:{}", w["name"].as_str()?, w["state"].as_str()?),
                        w["last_seen_at"].as_str()?.to_string(),
                    ))
                })
                .collect();
            if !rows.is_empty() {
                return rows;
            }
            assert!(
                Instant::now() < deadline,
                "the worker never registered\nworker log:\n{}",
                log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let before = listed(&base).await;
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0].0, "beside-the-server:idle", "{}", log());

    // The server restarts, its cluster with it, on the cluster's remembered
    // port: the worker, which read the URL once, goes on heartbeating.
    terminate(server).await;
    let (server, base) = serve(Duration::from_secs(120), embedded).await;
    let up = chrono::Utc::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = listed(&base).await;
        let seen: chrono::DateTime<chrono::Utc> = now[0].1.parse().expect("RFC 3339");
        if seen > up {
            assert_eq!(now[0].0, "beside-the-server:idle", "{}", log());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no heartbeat after the restart\nworker log:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut worker = worker;
    assert!(
        matches!(worker.0.try_wait(), Ok(None)),
        "the worker lived through the restart\n{}",
        log()
    );

    terminate(worker).await;
    terminate(server).await;
    assert!(
        !data_dir.cluster().join("postmaster.pid").exists(),
        "the server stopped its cluster"
    );
}
