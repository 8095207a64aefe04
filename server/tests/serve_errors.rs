//! `maelab serve` refuses bad settings with one line that says what to do, a
//! non-zero exit code and no panic.

use std::process::{Command, Output};

use maelab_core::db::testing::TestDb;

fn serve(env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_maelab"))
        .arg("serve")
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "off")
        .env_remove("MAELAB_BIND")
        .output()
        .expect("run maelab")
}

fn assert_one_line_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected: {stderr}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(needle),
        "{stderr}"
    );
}

#[test]
fn malformed_database_url() {
    let out = serve(
        &[("DATABASE_URL", "mysql://nope")],
        &["--bind", "127.0.0.1:0"],
    );
    assert_one_line_error(&out, "DATABASE_URL is malformed");
}

#[test]
fn unreachable_database() {
    let out = serve(
        &[("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none")],
        &["--bind", "127.0.0.1:0"],
    );
    assert_one_line_error(&out, "cannot connect to PostgreSQL at 127.0.0.1:1/none");
}

#[tokio::test]
async fn port_in_use() {
    let db = TestDb::new().await.expect("test database");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let url = db.url.clone();
    let out =
        tokio::task::spawn_blocking(move || serve(&[("DATABASE_URL", &url)], &["--bind", &addr]))
            .await
            .expect("join");
    assert_one_line_error(&out, "is another process using that port");
}

#[tokio::test]
async fn an_unusable_artifact_store_stops_the_start_naming_its_url() {
    let db = TestDb::new().await.expect("test database");
    let file = std::env::temp_dir().join(format!("maelab-not-a-dir-{}", uuid::Uuid::new_v4()));
    std::fs::write(&file, b"x").expect("file");
    let store = file.join("artifacts").display().to_string();
    let url = db.url.clone();
    let arg = store.clone();
    let out = tokio::task::spawn_blocking(move || {
        serve(
            &[("DATABASE_URL", &url)],
            &["--bind", "127.0.0.1:0", "--artifact-store", &arg],
        )
    })
    .await
    .expect("join");
    let _ = std::fs::remove_file(&file);
    assert_one_line_error(&out, &store);
}
