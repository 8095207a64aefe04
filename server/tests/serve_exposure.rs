//! `maelab serve` on an address other than loopback with reads open says so
//! in one warning line at start (issue 15, part 4); on loopback, or with
//! reads closed, it says nothing of the kind.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use maelab_core::db::testing::TestDb;

/// Start `maelab serve ARGS` on the test database, wait until it is up, stop
/// it, and return what it logged.
fn startup_log(url: &str, args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_maelab"))
        .arg("serve")
        .args(args)
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .env_remove("MAELAB_BIND")
        .env_remove("MAELAB_REQUIRE_AUTH_FOR_READS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("maelab starts");
    let mut up = String::new();
    let stdout = child.stdout.take().expect("stdout");
    BufReader::new(stdout).read_line(&mut up).expect("stdout");
    child.kill().expect("stop");
    let out = child.wait_with_output().expect("wait");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(up.starts_with("maelab is up"), "not up: {up:?}, log: {log}");
    log
}

fn warnings(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains("reads open")).collect()
}

async fn check(args: &'static [&'static str]) -> String {
    let db = TestDb::new().await.expect("test database");
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || startup_log(&url, args))
        .await
        .expect("join")
}

#[tokio::test]
async fn an_exposed_server_with_open_reads_warns_once() {
    let log = check(&["--bind", "0.0.0.0:0"]).await;
    let lines = warnings(&log);
    assert_eq!(lines.len(), 1, "one warning line: {log}");
    assert!(lines[0].contains("WARN"), "{}", lines[0]);
    assert!(lines[0].contains("0.0.0.0"), "{}", lines[0]);
    assert!(
        lines[0].contains("--require-auth-for-reads"),
        "{}",
        lines[0]
    );
}

#[tokio::test]
async fn closed_reads_or_loopback_do_not_warn() {
    const CLOSED: &[&str] = &["--bind", "0.0.0.0:0", "--require-auth-for-reads"];
    const LOOPBACK: &[&str] = &["--bind", "127.0.0.1:0"];
    for args in [CLOSED, LOOPBACK] {
        let log = check(args).await;
        assert!(warnings(&log).is_empty(), "{args:?}: {log}");
    }
}
