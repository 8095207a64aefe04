//! System figures workers send with their heartbeats: the workers table on
//! the queue page shows each worker's newest sample, the run page's
//! `system.json` gives the samples of the run's job as chart columns.

mod pages_support;

use axum::http::StatusCode;
use maelab_core::db::worker_metrics::{self, SystemSample};
use pages_support::{gpu_sample, register_worker, spawn};
use uuid::Uuid;

async fn job_of(pool: &sqlx::PgPool, run_id: Uuid) -> i64 {
    sqlx::query_scalar("select job_id from job where run_id = $1")
        .bind(run_id)
        .fetch_one(pool)
        .await
        .expect("job")
}

#[tokio::test]
async fn workers_table_shows_the_newest_sample_of_each_worker() {
    let p = spawn().await;
    let gpu = register_worker(&p.db.pool, "gpu-worker", "cuda:0").await;
    let cpu = register_worker(&p.db.pool, "cpu-worker", "cpu").await;
    register_worker(&p.db.pool, "silent-worker", "cpu").await;
    worker_metrics::record(&p.db.pool, gpu, None, &gpu_sample(50.0, 2))
        .await
        .expect("old");
    worker_metrics::record(&p.db.pool, gpu, None, &gpu_sample(187.4, 12))
        .await
        .expect("new");
    let cpu_only = SystemSample {
        cpu_percent: Some(12.0),
        rss_bytes: Some(1 << 30),
        gpus: vec![],
    };
    worker_metrics::record(&p.db.pool, cpu, None, &cpu_only)
        .await
        .expect("cpu");

    let html = p.get("/queue").await.text();
    assert!(html.contains(r#"<script src="/static/queue.js" defer></script>"#));
    let table = &html[html.find(r#"id="workers""#).expect("workers table")..];
    let row = |name: &str| {
        let start = table
            .find(name)
            .unwrap_or_else(|| panic!("{name} in {table}"));
        let row = &table[start..];
        row[..row.find("</tr>").expect("row end")].to_string()
    };
    let g = row("gpu-worker");
    assert!(g.contains(r#"<td class="cpu">187%</td>"#), "{g}");
    assert!(g.contains(r#"<td class="memory">1.50 GiB</td>"#), "{g}");
    assert!(
        g.contains("cuda:0 · 97% · 12.0/80.0 GiB · 71 °C · 402 W"),
        "the newest sample, not the first: {g}"
    );
    let c = row("cpu-worker");
    assert!(c.contains(r#"<td class="cpu">12%</td>"#), "{c}");
    assert!(c.contains(r#"<td class="gpu-now"></td>"#), "no GPU: {c}");
    let s = row("silent-worker");
    assert!(s.contains(r#"<td class="cpu"></td>"#), "no sample yet: {s}");

    // The API's workers list carries the same sample.
    let api = p.get("/api/v1/workers").await;
    assert_eq!(api.status, StatusCode::OK);
    let list: serde_json::Value = serde_json::from_slice(&api.body).expect("json");
    let listed = list
        .as_array()
        .expect("array")
        .iter()
        .find(|w| w["name"] == "gpu-worker")
        .expect("gpu worker listed");
    assert_eq!(
        listed["system"]["gpus"][0]["memory_used_bytes"],
        12i64 << 30
    );
}

#[tokio::test]
async fn run_page_charts_the_samples_of_its_job() {
    let p = spawn().await;
    let run = p.create("charted", "mae", &[]).await;
    let other = p.create("elsewhere", "mae", &[]).await;
    let w = register_worker(&p.db.pool, "gpu-worker", "cuda:0").await;
    let job = job_of(&p.db.pool, run).await;
    let other_job = job_of(&p.db.pool, other).await;
    worker_metrics::record(&p.db.pool, w, None, &gpu_sample(5.0, 1))
        .await
        .expect("idle");
    worker_metrics::record(&p.db.pool, w, Some(job), &gpu_sample(100.0, 20))
        .await
        .expect("first");
    worker_metrics::record(&p.db.pool, w, Some(job), &gpu_sample(150.0, 30))
        .await
        .expect("second");
    worker_metrics::record(&p.db.pool, w, Some(other_job), &gpu_sample(1.0, 70))
        .await
        .expect("other run");

    let page = p.get(&format!("/runs/{run}")).await.text();
    assert!(page.contains(r#"<script src="/static/run_system.js" defer></script>"#));
    assert!(page.contains(&format!(r#"data-url="/runs/{run}/system.json""#)));

    let a = p.get(&format!("/runs/{run}/system.json")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let cols: serde_json::Value = serde_json::from_slice(&a.body).expect("json");
    assert_eq!(
        cols["gpu_memory_used_mib"],
        serde_json::json!([20480.0, 30720.0])
    );
    assert_eq!(
        cols["gpu_memory_total_mib"],
        serde_json::json!([81920.0, 81920.0])
    );
    assert_eq!(cols["cpu_percent"], serde_json::json!([100.0, 150.0]));
    assert_eq!(cols["rss_mib"], serde_json::json!([1536.0, 1536.0]));
    assert_eq!(cols["gpu_power_watts"][0], 402.4);
    assert_eq!(cols["minutes"][0], 0.0);
    assert_eq!(cols["minutes"].as_array().expect("minutes").len(), 2);

    // A run without samples answers empty columns; an unknown or malformed id does not.
    let none = p.create("quiet", "mae", &[]).await;
    let empty: serde_json::Value =
        serde_json::from_slice(&p.get(&format!("/runs/{none}/system.json")).await.body)
            .expect("json");
    assert_eq!(empty["minutes"], serde_json::json!([]));
    let missing = p
        .get(&format!("/runs/{}/system.json", Uuid::new_v4()))
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    // Like every page under /runs/{id}: an id that is no UUID names no run.
    let bad = p.get("/runs/not-a-uuid/system.json").await;
    assert_eq!(bad.status, StatusCode::NOT_FOUND);
    assert!(
        bad.text().contains("run not-a-uuid does not exist"),
        "{}",
        bad.text()
    );
}
