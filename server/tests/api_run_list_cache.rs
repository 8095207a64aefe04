//! `GET /api/v1/runs` is answered from memory while nothing changed: a change
//! made through this server shows at once, one made elsewhere (a worker,
//! another server) as soon as the LISTEN hub hears it, one nobody hears after
//! at most `MAX_AGE`; and with no hub listening every list reads the database.

mod api_support;

use std::time::{Duration, Instant};

use api_support::{TestApp, spawn, spawn_listening, tiny_config, work_one};
use maelab_core::RunConfig;
use maelab_core::db::runs;
use maelab_server::read_model::run_list_cache::MAX_AGE;
use serde_json::{Value, json};

/// Well under `MAX_AGE`: a change shown this soon was heard, not aged out.
const HEARD: Duration = Duration::from_millis(1000);

async fn names(t: &TestApp) -> Vec<String> {
    let a = t.get("/api/v1/runs?sort=name&order=asc").await;
    assert_eq!(a.status, 200, "{}", a.text());
    a.json()["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["name"].as_str().expect("name").to_string())
        .collect()
}

async fn run_named(t: &TestApp, name: &str) -> Value {
    let a = t.get(&format!("/api/v1/runs?q={name}")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    a.json()["runs"][0].clone()
}

/// Polls `check` until it holds; panics after `limit`.
async fn within<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

async fn create_elsewhere(t: &TestApp, name: &str) {
    let config = RunConfig::from_toml_str(&format!(
        "name = '{name}'\nkind = 'pretrain'\nepochs = 1\nwarmup_epochs = 0"
    ))
    .expect("config");
    runs::create_run(&t.db.pool, &config, None)
        .await
        .expect("run");
}

/// A change no notification announces (run names never change through
/// maelab; the trigger notifies status changes only).
async fn rename_unheard(t: &TestApp, from: &str, to: &str) {
    sqlx::query("update run set name = $2 where name = $1")
        .bind(from)
        .bind(to)
        .execute(&t.db.pool)
        .await
        .expect("rename");
}

#[tokio::test]
async fn changes_reach_the_cached_list_as_soon_as_they_are_heard() {
    let t = spawn_listening().await;
    assert!(names(&t).await.is_empty());

    // Through this server: the very next list shows it.
    t.create_run(&json!({"name": "a-api", "epochs": 2, "warmup_epochs": 0}))
        .await;
    assert_eq!(names(&t).await, ["a-api"]);

    // Elsewhere: shown once the hub hears the run's notification.
    create_elsewhere(&t, "b-elsewhere").await;
    let took = within(HEARD, "a run created elsewhere", || async {
        names(&t).await == ["a-api", "b-elsewhere"]
    })
    .await;
    assert!(took < MAX_AGE);

    // A worker claims a run and writes an epoch: status and summary follow.
    let first = run_named(&t, "a-api").await;
    assert_eq!(first["status"], "queued");
    assert_eq!(first["epochs_done"], 0);
    work_one(&t.db.pool, &[(0.75, None)], true).await;
    within(HEARD, "the worker's epoch and final status", || async {
        let run = run_named(&t, "a-api").await;
        run["status"] == "succeeded" && run["epochs_done"] == 1 && run["last_loss"] == 0.75
    })
    .await;
}

#[tokio::test]
async fn the_list_is_served_from_memory_and_an_unheard_change_ages_out() {
    let t = spawn_listening().await;
    t.create_run(&tiny_config()).await;
    assert_eq!(names(&t).await, ["tiny"]);

    rename_unheard(&t, "tiny", "renamed").await;
    // Nothing announced the rename, so the remembered page still answers...
    assert_eq!(names(&t).await, ["tiny"], "the list was not cached");
    // A filter not asked before is not answered from another filter's entry.
    let a = t.get("/api/v1/runs?q=renamed").await;
    assert_eq!(a.json()["total"], 1);
    // ...but never for longer than MAX_AGE.
    within(MAX_AGE + HEARD, "an unheard change", || async {
        names(&t).await == ["renamed"]
    })
    .await;
}

#[tokio::test]
async fn without_a_listening_hub_every_list_reads_the_database() {
    let t = spawn().await;
    t.create_run(&tiny_config()).await;
    assert_eq!(names(&t).await, ["tiny"]);
    rename_unheard(&t, "tiny", "renamed").await;
    assert_eq!(names(&t).await, ["renamed"]);
}

#[tokio::test]
async fn bad_filters_are_still_refused_and_never_cached() {
    let t = spawn_listening().await;
    for _ in 0..2 {
        let a = t.get("/api/v1/runs?limit=0").await;
        assert_eq!(a.status, 400, "{}", a.text());
        assert!(a.text().contains("limit"), "{}", a.text());
    }
}
