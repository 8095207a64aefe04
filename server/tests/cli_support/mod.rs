//! Shared by the cli_* tests that drive the built `maelab` binary against a
//! real `maelab serve` process: the server on a free port with its own
//! database and token, the CLI pointed at it, and readers of its output.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use maelab_core::db::testing::TestDb;

pub const BIN: &str = env!("CARGO_BIN_EXE_maelab");

/// A `maelab serve` process, killed on drop.
pub struct Server {
    child: Child,
    pub url: String,
    pub db: TestDb,
    /// A valid token's secret (the CLI's `MAELAB_TOKEN`).
    pub token: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Start `maelab serve` on a fresh database; returns once `/healthz` answers.
pub async fn serve() -> Server {
    serve_with(Command::new(BIN), &[]).await
}

/// [`serve`] through `command`: `maelab` itself, or a launcher whose
/// arguments end in it, with the working directory and environment set
/// there; `args` follow `serve --bind …`.
pub async fn serve_with(command: Command, args: &[&str]) -> Server {
    serve_on(TestDb::new().await.unwrap(), command, args).await
}

/// [`serve_with`] on `db`, which the test may have filled first.
pub async fn serve_on(db: TestDb, mut command: Command, args: &[&str]) -> Server {
    let (token, _) = maelab_server::auth::tokens::create(&db.pool, "ci")
        .await
        .unwrap();
    let port = free_port();
    let child = command
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .args(args)
        .env("DATABASE_URL", &db.url)
        // Its artifacts in a folder of the test's own, not ./.maelab.
        .env(
            "MAELAB_ARTIFACT_STORE",
            std::env::temp_dir()
                .join("maelab-test-artifacts")
                .join(&db.name),
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(format!("{url}/healthz")).await
            && r.status().is_success()
        {
            break;
        }
        assert!(Instant::now() < deadline, "server did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Server {
        child,
        url,
        db,
        token,
    }
}

impl Server {
    /// The CLI with `args`, aimed at this server with its token (and its
    /// database, which `maelab token` writes directly).
    pub fn cli(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("MAELAB_URL", &self.url)
            .env("MAELAB_TOKEN", &self.token)
            .env("DATABASE_URL", &self.db.url)
            .env("RUST_LOG", "warn");
        c
    }

    /// Run the CLI to its end (off the async runtime's threads).
    pub async fn run(&self, args: &[&str]) -> Output {
        let mut c = self.cli(args);
        tokio::task::spawn_blocking(move || c.output().unwrap())
            .await
            .unwrap()
    }

    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("select count(*) from {table}"))
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    /// Wait until at least `n` jobs are queued (a submit got through).
    pub async fn wait_for_queued(&self, n: i64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let queued: i64 = sqlx::query_scalar("select count(*) from job where state = 'queued'")
                .fetch_one(&self.db.pool)
                .await
                .unwrap();
            if queued >= n {
                return;
            }
            assert!(Instant::now() < deadline, "{queued} of {n} jobs queued");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The exit code and both streams, for an assertion's message.
pub fn text(o: &Output) -> String {
    format!(
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        code(o),
        stdout(o),
        stderr(o)
    )
}

/// `body` in a new temporary TOML file.
pub fn toml_file(body: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("maelab-cli-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(&path, body).unwrap();
    path
}
