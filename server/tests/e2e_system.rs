//! System figures in real headless Chromium: the run page charts its
//! worker's samples (static/run_system.js, no CSP violation) and adds each
//! new heartbeat's sample from its stream, and the queue page's workers table
//! picks up a new heartbeat's figures without a reload, woken by
//! `/queue/events` (static/queue.js), never by a timer.

mod e2e_support;
mod pages_support;

use e2e_support::start;
use maelab_core::db::worker_metrics;
use pages_support::{gpu_sample, register_worker};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_page_charts_system_figures_and_workers_table_stays_live() {
    let b = start().await;
    b.watch_csp().await;
    let pool = b.pages.db.pool.clone();
    let worker = register_worker(&pool, "gpu-worker", "cuda:0").await;
    let run = b.pages.create("charted", "mae", &[]).await;
    let job: i64 = sqlx::query_scalar("select job_id from job where run_id = $1")
        .bind(run)
        .fetch_one(&pool)
        .await
        .expect("job");
    for (cpu, gib) in [(100.0, 10), (120.0, 20), (140.0, 30)] {
        worker_metrics::record(&pool, worker, Some(job), &gpu_sample(cpu, gib))
            .await
            .expect("sample");
    }

    b.goto(&format!("/runs/{run}")).await;
    b.until(
        "the system charts",
        "return document.querySelectorAll('#system-charts .chart').length === 5",
    )
    .await;
    assert_eq!(
        b.js(
            "return Array.from(document.querySelectorAll('#system-charts .chart'))
                .map(c => c.dataset.title)"
        )
        .await,
        json!([
            "GPU memory (MiB)",
            "GPU utilisation (%)",
            "GPU temperature (°C) and power (W)",
            "Worker CPU (% of one core)",
            "Worker resident memory (MiB)"
        ])
    );
    assert_eq!(
        b.js("return document.getElementById('no-system').hidden")
            .await,
        json!(true)
    );
    assert_eq!(b.csp_violations().await, Vec::<String>::new());

    // A heartbeat while the page is open: one more point, from the stream.
    b.until(
        "the stream open",
        "return window.maelabEvents.readyState === 1
            && window.maelabSystem.drawn('GPU memory (MiB)') === 3",
    )
    .await;
    b.js("window.notReloaded = true").await;
    worker_metrics::record(&pool, worker, Some(job), &gpu_sample(160.0, 55))
        .await
        .expect("a heartbeat while open");
    b.until(
        "the fourth point",
        "return window.maelabSystem.drawn('GPU memory (MiB)') === 4
            && window.maelabSystem.drawn('Worker CPU (% of one core)') === 4",
    )
    .await;
    assert_eq!(b.js("return window.notReloaded").await, json!(true));

    b.goto("/queue").await;
    let gpu_cell =
        "const c = document.querySelector('#workers td.gpu-now'); return c && c.textContent";
    assert_eq!(
        b.js(gpu_cell).await,
        json!("cuda:0 · 97% · 55.0/80.0 GiB · 71 °C · 402 W")
    );
    worker_metrics::record(&pool, worker, Some(job), &gpu_sample(150.0, 42))
        .await
        .expect("a new heartbeat");
    b.until(
        "the new heartbeat's figures",
        "const c = document.querySelector('#workers td.gpu-now');
         return c && c.textContent.includes('42.0/80.0 GiB')",
    )
    .await;
    assert!(
        b.js("return window.maelabQueue.reads").await.as_i64() >= Some(1),
        "the stream woke the page"
    );
    assert_eq!(b.csp_violations().await, Vec::<String>::new());
}
