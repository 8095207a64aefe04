//! Nothing assumes one host (issue 13): `maelab serve`, its PostgreSQL and an
//! S3 server (s3s-fs) on one "host", two `maelab-worker run` processes on
//! another, the hosts being two Linux network namespaces joined by a veth
//! pair; each process sees only its own host's folders (netns_support). A
//! pretrain starts on worker 1, which is killed with SIGKILL mid-run; worker 2
//! resumes it from the checkpoint in S3; a finetune of it then runs on a new
//! worker on host 1, which never held the last checkpoint, and loads it from
//! S3. Every epoch appears once; the artifacts are in the bucket and nowhere
//! on the hosts' disks; the server serves the checkpoint from the bucket.
//!
//! Needs root (namespaces), `ip`, the s3s-fs that `scripts/setup --test`
//! puts in .tools, and `maelab` built beside `maelab-worker` (`cargo test
//! --workspace` builds both).

mod netns_support;
mod queue_support;
mod train_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use maelab_core::RunConfig;
use maelab_core::db::runs;
use netns_support::{HTTP_PORT, SERVER_ADDR, TwoHosts};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use train_support::{config, write_dataset};
use uuid::Uuid;

const BUCKET: &str = "maelab-multi-host";

/// The server binary, built into the folder `maelab-worker` was built into.
fn server_binary() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_maelab-worker")).with_file_name("maelab");
    assert!(
        bin.is_file(),
        "{} is not built: run `cargo build -p maelab-server` (scripts/test builds the workspace)",
        bin.display()
    );
    bin
}

/// The s3s-fs `scripts/setup --test` installs (MAELAB_S3S_FS overrides).
fn s3s_fs_binary() -> PathBuf {
    let bin = std::env::var_os("MAELAB_S3S_FS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/s3s-fs"),
        PathBuf::from,
    );
    assert!(
        bin.is_file(),
        "{} is missing: run scripts/setup --test",
        bin.display()
    );
    bin
}

/// The tiny model of `train_support::config` on small data.
fn tiny(kind: &str, data: &Path, extra: &str) -> RunConfig {
    let base = "epochs = 2\nbatch_size = 32\ntrain_subset = 128\ntest_subset = 64\n\
                warmup_epochs = 0.5";
    config(kind, data, &format!("{base}\n{extra}"))
}

/// A worker on the worker host, in `own`'s folder (its data cache there),
/// with the S3 credentials but no `--artifact-store`: it reads the store's
/// URL the server published. Returns its pid and log.
fn spawn_worker(hosts: &mut TwoHosts, own: &str, name: &str) -> (u32, PathBuf) {
    let cache = hosts.host_dir().join("cache").display().to_string();
    let database_url = hosts.database_url();
    let args = [
        "run",
        "--database-url",
        &database_url,
        "--device",
        "cpu",
        "--name",
        name,
        "--cache-dir",
        &cache,
        "--threads",
        "1",
        "--loader-threads",
        "1",
        // Test knobs: a lost lease is noticed within seconds.
        "--lease-seconds",
        "2",
        "--poll-interval",
        "0.3",
        "--rescue-backoff",
        "0.1",
    ];
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_maelab-worker"));
    let mut cmd = hosts.command(&hosts.worker_ns.clone(), own, &bin, &args);
    cmd.envs(hosts.s3_env()).env("RUST_LOG", "info");
    hosts.spawn(name, cmd)
}

fn read(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Wait for a final status; on a timeout, show the logs.
async fn wait_final(pool: &PgPool, run_id: Uuid, logs: &[&Path], limit: Duration) -> String {
    queue_support::wait_final(pool, run_id, limit, || {
        logs.iter()
            .map(|l| read(l))
            .collect::<Vec<_>>()
            .join("\n----\n")
    })
    .await
}

/// (epoch, name of the worker that wrote it) for every epoch row of the run.
async fn writers(pool: &PgPool, run_id: Uuid) -> Vec<(i32, String)> {
    sqlx::query_as(
        "select e.epoch, w.name from epoch_metric e
         join worker w on w.worker_id::text = e.extra->>'worker_id'
         where e.run_id = $1 order by e.epoch",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await
    .expect("epoch writers")
}

/// Every regular file under `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_killed_on_one_host_resumes_on_another_and_its_finetune_loads_it_from_s3() {
    let mut hosts = TwoHosts::new(Path::new(env!("CARGO_TARGET_TMPDIR")));
    let pool = maelab_core::db::connect(&hosts.start_postgres(), 4)
        .await
        .expect("the server host's PostgreSQL over its socket");
    maelab_core::db::migrate(&pool).await.expect("migrate");
    hosts.start_s3(&s3s_fs_binary(), BUCKET);

    // The server, publishing the bucket as the artifact store.
    let store_url = format!("s3://{BUCKET}/maelab");
    let bind = format!("{SERVER_ADDR}:{HTTP_PORT}");
    let data_dir = hosts.host_dir().join("data").display().to_string();
    let database_url = hosts.database_url();
    let server_args = [
        "serve",
        "--bind",
        &bind,
        "--database-url",
        &database_url,
        "--data-dir",
        &data_dir,
        "--artifact-store",
        &store_url,
    ];
    let mut cmd = hosts.command(
        &hosts.server_ns.clone(),
        "server",
        &server_binary(),
        &server_args,
    );
    cmd.envs(hosts.s3_env()).env("RUST_LOG", "info");
    let (_, server_log) = hosts.spawn("server", cmd);
    let server_ns = hosts.server_ns.clone();
    hosts.wait_listening(&server_ns, SERVER_ADDR, HTTP_PORT, &server_log);

    // The same dataset on each worker host, at the same path.
    for own in ["worker1", "worker2"] {
        write_dataset(&hosts.dir(own).join("data"), 40, 64);
    }
    let data = hosts.host_dir().join("data");

    // (a) A pretrain starts on worker 1; SIGKILL once a checkpoint is in S3.
    let epochs = 6;
    let pre = runs::create_run(
        &pool,
        &tiny("pretrain", &data, &format!("epochs = {epochs}")),
        None,
    )
    .await
    .expect("create pretrain");
    let (w1, w1_log) = spawn_worker(&mut hosts, "worker1", "w1");
    queue_support::wait_for(
        &pool,
        "select count(*) from job where run_id = $1 and checkpoint_epoch is not null",
        pre.run_id,
        Duration::from_secs(120),
        |n| n == 1,
    )
    .await;
    hosts.kill9(w1);
    let covered: i32 = sqlx::query_scalar("select checkpoint_epoch from job where run_id = $1")
        .bind(pre.run_id)
        .fetch_one(&pool)
        .await
        .expect("checkpoint pointer");
    assert!(
        covered < epochs - 1,
        "worker 1 finished before the kill (checkpoint {covered}); log:\n{}",
        read(&w1_log)
    );

    // (b) Worker 2, on the same host side but with its own folder, resumes.
    let (w2, w2_log) = spawn_worker(&mut hosts, "worker2", "w2");
    let status = wait_final(
        &pool,
        pre.run_id,
        &[&w1_log, &w2_log, &server_log],
        Duration::from_secs(180),
    )
    .await;
    assert_eq!(status, "succeeded", "{}", read(&w2_log));
    let rows = writers(&pool, pre.run_id).await;
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        (0..epochs).collect::<Vec<_>>(),
        "every epoch exactly once: {rows:?}"
    );
    for (epoch, writer) in &rows {
        let expected = if *epoch <= covered { "w1" } else { "w2" };
        assert_eq!(
            writer, expected,
            "epoch {epoch}: checkpointed epochs (<= {covered}) are not trained again"
        );
    }
    let log = read(&w2_log);
    assert!(
        log.contains("resuming from the stored checkpoint"),
        "worker 2 resumed from the stored checkpoint:\n{log}"
    );
    assert!(
        log.contains("artifact store ready") && log.contains(&store_url),
        "worker 2 uses the published bucket:\n{log}"
    );

    // (c) A finetune on a new worker on host 1's folder, which never held the
    // checkpoint worker 2 wrote last.
    hosts.kill9(w2);
    let (_, w3_log) = spawn_worker(&mut hosts, "worker1", "w1-again");
    let mut ft_cfg = tiny("finetune", &data, "");
    ft_cfg.parent_run = Some(pre.run_id);
    let ft = runs::create_run(&pool, &ft_cfg, None)
        .await
        .expect("create finetune");
    let status = wait_final(
        &pool,
        ft.run_id,
        &[&w3_log, &server_log],
        Duration::from_secs(180),
    )
    .await;
    assert_eq!(status, "succeeded", "{}", read(&w3_log));
    let rows = writers(&pool, ft.run_id).await;
    assert_eq!(
        rows,
        [(0, "w1-again".to_string()), (1, "w1-again".to_string())],
        "the finetune's epochs, once each, on host 1"
    );
    let log = read(&w3_log);
    assert!(
        log.contains("encoder loaded from the pretrain checkpoint"),
        "the finetune loaded its parent:\n{log}"
    );

    // (d) Artifacts only through S3: every row points at an object in the
    // bucket, and no host folder holds an artifact.
    let stored: Vec<(String, Option<String>, String)> = sqlx::query_as(
        "select name, store_key, sha256 from artifact where run_id = any($1) order by artifact_id",
    )
    .bind(vec![pre.run_id, ft.run_id])
    .fetch_all(&pool)
    .await
    .expect("artifact rows");
    assert!(
        stored
            .iter()
            .any(|(name, _, _)| name.ends_with(".safetensors")),
        "checkpoints were recorded: {stored:?}"
    );
    let bucket_dir = hosts.dir("server").join("s3").join(BUCKET);
    for (name, key, sha) in &stored {
        let key = key
            .as_deref()
            .unwrap_or_else(|| panic!("{name} is stored in the database, not the bucket"));
        let object = bucket_dir.join("maelab").join(key);
        let bytes = std::fs::read(&object)
            .unwrap_or_else(|e| panic!("{name}: no object {}: {e}", object.display()));
        assert_eq!(&hex::encode(Sha256::digest(&bytes)), sha, "{name} in S3");
    }
    for own in ["server", "worker1", "worker2"] {
        let dir = hosts.dir(own);
        let local: Vec<_> = files_under(&dir)
            .into_iter()
            .filter(|p| {
                let s = p.to_string_lossy();
                s.contains("artifacts") || s.ends_with(".safetensors") || s.ends_with(".png")
            })
            .filter(|p| !p.starts_with(dir.join("s3")) && !p.starts_with(dir.join("pg")))
            .collect();
        assert!(
            local.is_empty(),
            "artifacts on host folder {own}: {local:?}"
        );
    }

    // (e) The server serves the last checkpoint from the bucket to a client
    // on the worker host, byte for byte.
    let (name, sha): (String, String) = sqlx::query_as(
        "select name, sha256 from artifact where run_id = $1 and kind = 'checkpoint'
         and name like '%.safetensors' order by epoch desc limit 1",
    )
    .bind(pre.run_id)
    .fetch_one(&pool)
    .await
    .expect("last checkpoint");
    let url = format!(
        "http://{SERVER_ADDR}:{HTTP_PORT}/api/v1/runs/{}/artifacts/{name}",
        pre.run_id
    );
    let worker_ns = hosts.worker_ns.clone();
    let body = tokio::task::spawn_blocking(move || {
        netns_support::in_namespace(&worker_ns, move || {
            let mut body = Vec::new();
            let response = ureq::get(&url).call().map_err(|e| e.to_string())?;
            std::io::Read::read_to_end(&mut response.into_reader(), &mut body)
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(body)
        })
    })
    .await
    .expect("join")
    .unwrap_or_else(|e| {
        panic!(
            "download from the server host: {e}; server log:\n{}",
            read(&server_log)
        )
    });
    assert_eq!(hex::encode(Sha256::digest(&body)), sha, "{name} as served");
}
