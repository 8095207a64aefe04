//! Shared by the embedded PostgreSQL tests: throwaway data folders, the
//! system's PostgreSQL tools, a cluster made the old way (`initdb
//! --auth=trust`), and a second OS account to try the cluster from.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A data folder under /tmp (with the default umask, so the `postgres` user
/// can reach its cluster), removed on drop: declare it before the cluster so
/// the cluster stops first.
pub struct DataDir(pub PathBuf);

impl DataDir {
    pub fn new() -> Self {
        let dir =
            std::env::temp_dir().join(format!("maelab-embedded-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("data dir");
        Self(dir)
    }

    pub fn cluster(&self) -> PathBuf {
        self.0.join("postgres")
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        // A test that failed midway may have left its cluster running.
        if self.cluster().join("postmaster.pid").exists() {
            let _ = pg_ctl_stop(&self.cluster());
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A PostgreSQL program: from `MAELAB_PG_BIN`, else the newest
/// /usr/lib/postgresql/*/bin, else PATH (as the server finds them).
pub fn pg_tool(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("MAELAB_PG_BIN") {
        return PathBuf::from(dir).join(name);
    }
    let mut bins: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join(name).is_file())
        .collect();
    bins.sort();
    bins.pop()
        .map(|(_, bin)| bin.join(name))
        .unwrap_or_else(|| PathBuf::from(name))
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `program args…` as the cluster's OS user (`postgres` when we are root).
fn as_cluster_owner_unchecked(program: &Path, args: &[&str]) -> std::io::Result<Output> {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(args).output()
}

/// [`as_cluster_owner_unchecked`], which must succeed.
fn as_cluster_owner(program: &Path, args: &[&str]) -> Output {
    let out = as_cluster_owner_unchecked(program, args).expect("run a PostgreSQL tool");
    assert!(
        out.status.success(),
        "{} {args:?}: {}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A cluster in `dir/postgres` made as maelab did before it had passwords
/// (`initdb --auth=trust`), with a migrated `maelab` database holding
/// `runs` queued runs; left running, as an older server would. Returns its
/// port and the runs' ids.
pub async fn old_trust_cluster(dir: &DataDir, runs: usize) -> (u16, Vec<uuid::Uuid>) {
    let cluster = dir.cluster();
    std::fs::create_dir_all(&cluster).expect("cluster dir");
    if is_root() {
        let pg = nix::unistd::User::from_name("postgres")
            .expect("passwd")
            .expect("a postgres user");
        std::os::unix::fs::chown(&cluster, Some(pg.uid.as_raw()), Some(pg.gid.as_raw()))
            .expect("chown");
    }
    let cluster_arg = cluster.display().to_string();
    as_cluster_owner(
        &pg_tool("initdb"),
        &[
            "-D",
            &cluster_arg,
            "-U",
            "maelab",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
        ],
    );
    let port = free_port();
    let log = cluster.join("server.log").display().to_string();
    let options = format!("-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''");
    as_cluster_owner(
        &pg_tool("pg_ctl"),
        &[
            "-D",
            &cluster_arg,
            "-l",
            &log,
            "-o",
            &options,
            "-w",
            "start",
        ],
    );

    // No password anywhere: trust lets anyone on the host in.
    let admin = format!("postgres://maelab@127.0.0.1:{port}/postgres");
    let pool = maelab_core::db::connect(&admin, 1)
        .await
        .expect("trust connect");
    sqlx::query("create database maelab")
        .execute(&pool)
        .await
        .expect("create db");
    pool.close().await;
    let pool = maelab_core::db::connect(&format!("postgres://maelab@127.0.0.1:{port}/maelab"), 2)
        .await
        .expect("connect maelab");
    maelab_core::db::migrate(&pool).await.expect("migrate");
    let config =
        maelab_core::RunConfig::from_toml_str("kind = 'pretrain'\nepochs = 3\nwarmup_epochs = 0")
            .expect("config");
    let mut ids = Vec::new();
    for _ in 0..runs {
        let created = maelab_core::db::runs::create_run(&pool, &config, None)
            .await
            .expect("run");
        ids.push(created.run_id);
    }
    pool.close().await;
    (port, ids)
}

/// Stop the cluster in `dir/postgres` (one this process did not start).
pub fn stop_cluster(dir: &DataDir) {
    let out = pg_ctl_stop(&dir.cluster()).expect("pg_ctl stop");
    assert!(out.status.success(), "pg_ctl stop: {}", text(&out));
}

fn pg_ctl_stop(cluster: &Path) -> std::io::Result<Output> {
    let cluster = cluster.display().to_string();
    as_cluster_owner_unchecked(
        &pg_tool("pg_ctl"),
        &["-D", &cluster, "-m", "fast", "-w", "stop"],
    )
}

/// A second OS account on this machine, removed (with its home) on drop,
/// even when the test fails. Needs root, as the tests run.
pub struct OtherAccount {
    pub name: String,
}

impl OtherAccount {
    pub fn create() -> Self {
        assert!(
            is_root(),
            "this test creates a second OS account: run it as root (scripts/test does)"
        );
        let name = format!("mlt{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        // useradd locks /etc/passwd; tests running beside each other take turns.
        for attempt in 0.. {
            let out = Command::new("useradd")
                .args(["--create-home", "--shell", "/bin/sh", &name])
                .output()
                .expect("useradd");
            if out.status.success() {
                break;
            }
            assert!(
                attempt < 50,
                "useradd {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Self { name }
    }

    /// `program args…` run as this account, with a clean PostgreSQL
    /// environment plus `env`.
    pub fn run(&self, program: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", &self.name, "--"]).arg(program).args(args);
        for var in [
            "PGPASSWORD",
            "PGPASSFILE",
            "PGHOST",
            "PGPORT",
            "PGUSER",
            "DATABASE_URL",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("HOME", format!("/home/{}", self.name));
        cmd.envs(env.iter().copied());
        cmd.output().expect("runuser")
    }

    /// psql as this account: `conninfo`, never prompting for a password.
    pub fn psql(&self, conninfo: &str, env: &[(&str, &str)]) -> Output {
        self.run(
            &pg_tool("psql"),
            &[
                "-w",
                "-X",
                "-At",
                "-d",
                conninfo,
                "-c",
                "select current_user",
            ],
            env,
        )
    }
}

impl Drop for OtherAccount {
    fn drop(&mut self) {
        for _ in 0..50 {
            let out = Command::new("userdel").args(["-r", &self.name]).output();
            match out {
                // 6: no such user (already gone); 12: the home could not be removed.
                Ok(o) if o.status.success() || matches!(o.status.code(), Some(6 | 12)) => return,
                _ => std::thread::sleep(std::time::Duration::from_millis(100)),
            }
        }
        eprintln!("could not remove the test account {}", self.name);
    }
}

/// stdout and stderr of a finished command, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
