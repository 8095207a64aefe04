//! The `maelab` CLI against a real server process on a free port with its own
//! database: tokens, submit, runs list/show/export, cancel, watch, and the
//! exit codes a pipeline branches on (0 ok, 1 run failed, 2 bar missed,
//! 3 usage/connection). The worker is simulated through the queue's fenced
//! writes (api_support::work_one), exactly the rows a worker writes.

mod api_support;
mod cli_support;

use std::process::{Output, Stdio};

use api_support::{claim_one, sim_epoch, work_one};
use cli_support::{Server, code, free_port, serve, text, toml_file};

const TINY: &str = r#"
name = "cli-tiny"
kind = "pretrain"
model = "mae"
preset = "vit-micro/4"
epochs = 2
warmup_epochs = 1
tags = ["ci"]
"#;

#[tokio::test]
async fn token_create_list_revoke() {
    let s = serve().await;
    let created = s.run(&["token", "create", "--name", "deploy"]).await;
    assert_eq!(code(&created), 0, "{}", text(&created));
    let secret = String::from_utf8_lossy(&created.stdout).trim().to_string();
    assert!(secret.starts_with("mlb_"), "{secret}");
    // The new token works against the server.
    let mut c = s.cli(&["runs", "list"]);
    c.env("MAELAB_TOKEN", &secret);
    assert_eq!(code(&c.output().unwrap()), 0);
    let list = s.run(&["token", "list"]).await;
    let listing = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(
        listing.contains("deploy") && !listing.contains(&secret[4..]),
        "{listing}"
    );
    let revoked = s.run(&["token", "revoke", "deploy"]).await;
    assert_eq!(code(&revoked), 0, "{}", text(&revoked));
    let again = s.run(&["token", "revoke", "deploy"]).await;
    assert_eq!(code(&again), 3, "{}", text(&again));
    // Submitting with the revoked token is refused: exit 3.
    let file = toml_file(TINY);
    let mut c = s.cli(&["submit", file.to_str().unwrap()]);
    c.env("MAELAB_TOKEN", &secret);
    let refused = c.output().unwrap();
    assert_eq!(code(&refused), 3, "{}", text(&refused));
}

/// `maelab submit` of the tiny config: it succeeds and prints the run's id.
async fn submit_tiny(s: &Server) -> String {
    let file = toml_file(TINY);
    let out = s.run(&["submit", file.to_str().unwrap()]).await;
    assert_eq!(code(&out), 0, "{}", text(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    uuid::Uuid::parse_str(&id).unwrap();
    id
}

#[tokio::test]
async fn submit_show_list_export_cancel() {
    let s = serve().await;
    let id = submit_tiny(&s).await;

    let show = s.run(&["runs", "show", &id]).await;
    assert_eq!(code(&show), 0, "{}", text(&show));
    let shown = String::from_utf8_lossy(&show.stdout).to_string();
    assert!(
        shown.contains("cli-tiny") && shown.contains("queued"),
        "{shown}"
    );

    let list = s.run(&["runs", "list", "--tag", "ci"]).await;
    assert!(
        String::from_utf8_lossy(&list.stdout).contains(&id),
        "{}",
        text(&list)
    );
    let none = s.run(&["runs", "list", "--tag", "other"]).await;
    assert!(!String::from_utf8_lossy(&none.stdout).contains(&id));

    let cancel = s.run(&["cancel", &id]).await;
    assert_eq!(code(&cancel), 0, "{}", text(&cancel));
    let status: String = sqlx::query_scalar("select status::text from run where run_id = $1::uuid")
        .bind(&id)
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(status, "cancelled");
    // Cancelling twice is refused by the server (409): exit 3.
    let twice = s.run(&["cancel", &id]).await;
    assert_eq!(code(&twice), 3, "{}", text(&twice));
    assert!(String::from_utf8_lossy(&twice.stderr).contains("409"));
}

#[tokio::test]
async fn usage_config_and_connection_errors_exit_3() {
    let s = serve().await;
    let no_args = s.run(&["submit"]).await;
    assert_eq!(code(&no_args), 3, "{}", text(&no_args));
    let bad_bar = s
        .run(&["submit", "x.toml", "--fail-under", "accuracy=70"])
        .await;
    assert_eq!(code(&bad_bar), 3, "{}", text(&bad_bar));
    let bad = toml_file("epochs = 0\n");
    let invalid = s.run(&["submit", bad.to_str().unwrap()]).await;
    assert_eq!(code(&invalid), 3, "{}", text(&invalid));
    assert!(
        String::from_utf8_lossy(&invalid.stderr).contains("epochs"),
        "{}",
        text(&invalid)
    );
    let file = toml_file(TINY);
    let mut c = s.cli(&["submit", file.to_str().unwrap()]);
    c.env_remove("MAELAB_TOKEN");
    let no_token = c.output().unwrap();
    assert_eq!(code(&no_token), 3, "{}", text(&no_token));
    let mut c = s.cli(&["runs", "list"]);
    c.env("MAELAB_URL", format!("http://127.0.0.1:{}", free_port()));
    let down = c.output().unwrap();
    assert_eq!(code(&down), 3, "{}", text(&down));
    assert!(String::from_utf8_lossy(&down.stderr).contains("cannot reach"));
    let count: i64 = sqlx::query_scalar("select count(*) from run")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(count, 0, "nothing was submitted");
}

/// Start `submit … --fail-under bar`, let a simulated worker train the run
/// with `accs`, and return submit's exit code and output.
async fn submit_against_worker(s: &Server, bar: &str, accs: &[f64], succeed: bool) -> Output {
    let file = toml_file(TINY);
    let child = s
        .cli(&[
            "submit",
            file.to_str().unwrap(),
            "--wait",
            "--fail-under",
            bar,
            "--poll",
            "0.2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    s.wait_for_queued(1).await;
    let epochs: Vec<_> = accs.iter().map(|a| (1.0, Some(*a))).collect();
    work_one(&s.db.pool, &epochs, succeed).await;
    tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn submit_wait_exit_codes_follow_the_run_and_the_bar() {
    let s = serve().await;
    let met = submit_against_worker(&s, "test_acc1=70", &[60.0, 75.0], true).await;
    assert_eq!(code(&met), 0, "{}", text(&met));
    let missed = submit_against_worker(&s, "test_acc1=70", &[60.0, 65.0], true).await;
    assert_eq!(code(&missed), 2, "{}", text(&missed));
    assert!(
        String::from_utf8_lossy(&missed.stderr).contains("65"),
        "{}",
        text(&missed)
    );
    let failed = submit_against_worker(&s, "test_acc1=70", &[80.0], false).await;
    assert_eq!(code(&failed), 1, "{}", text(&failed));
}

#[tokio::test]
async fn watch_and_export_a_finished_run() {
    let s = serve().await;
    let id = submit_tiny(&s).await;
    work_one(&s.db.pool, &[(0.9, Some(50.0)), (0.8, Some(61.0))], true).await;

    let watch = s.run(&["watch", &id, "--fail-under", "test_acc1=60"]).await;
    assert_eq!(code(&watch), 0, "{}", text(&watch));
    let lines: Vec<String> = String::from_utf8_lossy(&watch.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), 2, "{}", text(&watch));
    assert!(lines[1].contains("top-1 61.00"), "{}", text(&watch));

    let csv = s.run(&["runs", "export", &id, "--format", "csv"]).await;
    assert_eq!(code(&csv), 0, "{}", text(&csv));
    let csv = String::from_utf8_lossy(&csv.stdout).to_string();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(csv.starts_with("epoch,train_lr,train_loss"));
    let json = s.run(&["runs", "export", &id, "--format", "json"]).await;
    let rows: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(rows[1]["test_acc1"], 61.0);
}

#[tokio::test]
async fn watch_into_a_log_prints_lines_without_a_progress_bar() {
    use maelab_core::db::metrics::{StepRecord, record_epoch, record_step};
    use maelab_core::db::queue;
    let s = serve().await;
    let id = submit_tiny(&s).await;
    let pool = &s.db.pool;
    let lease = claim_one(pool).await;
    let step = |step: i32| StepRecord {
        epoch: 0,
        step,
        progress: f64::from(step) / 10.0,
        train_loss: 1.0,
        lr: 1e-3,
        images_per_second: Some(900.0),
    };
    record_step(pool, &lease, &step(3)).await.expect("step");
    // stderr is a pipe, as in a CI job's log.
    let child = s
        .cli(&["watch", &id, "--poll", "0.1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Running with fresh steps for many polls: a terminal would get its bar.
    for k in 4..10 {
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        record_step(pool, &lease, &step(k)).await.expect("step");
    }
    record_epoch(pool, &lease, &sim_epoch(0, (0.9, Some(50.0))))
        .await
        .expect("epoch");
    queue::complete(pool, &lease).await.expect("complete");
    let watched = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(code(&watched), 0, "{}", text(&watched));
    let err = String::from_utf8_lossy(&watched.stderr);
    assert!(
        !err.contains('\x1b') && !err.contains('\r'),
        "escape codes in a log: {err:?}"
    );
    assert!(
        !err.contains("epoch 1/"),
        "no progress bar in a log: {err:?}"
    );
    assert!(
        err.contains(": running") && err.contains(": succeeded"),
        "{err:?}"
    );
    assert_eq!(
        String::from_utf8_lossy(&watched.stdout).lines().count(),
        1,
        "{}",
        text(&watched)
    );
}
