//! End to end in real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, driven over WebDriver): submit a run through the form,
//! see it in the list, watch chart points arrive live while a "worker" writes
//! through the queue's fenced functions, open the reconstruction image, and
//! cancel the run. The two page bars of issue 6 are measured here too and
//! printed (docs/benchmarks.md has the numbers and the command).

mod api_support;
mod e2e_support;
mod pages_support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use e2e_support::start;
use fantoccini::Locator;
use maelab_core::db::artifacts::{NewArtifact, put_artifact};
use maelab_core::db::metrics::{EpochRecord, StepRecord, record_epoch, record_step};
use maelab_core::db::queue::{self, Lease};
use pages_support::{PNG_1X1, Pages};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Register a worker and claim the next job, as `maelab-worker run` does.
async fn claim(p: &Pages) -> Lease {
    let worker_id = api_support::register_worker(&p.db.pool, "e2e-worker", "localhost").await;
    queue::claim_next(&p.db.pool, worker_id, Duration::from_secs(60))
        .await
        .expect("claim")
        .expect("a queued job")
        .lease
}

fn epoch_record(epoch: i32, loss: f64) -> EpochRecord {
    EpochRecord {
        epoch,
        train_lr: 1e-4,
        train_loss: loss,
        test_loss: Some(loss * 1.1),
        test_acc1: None,
        test_acc5: None,
        n_parameters: Some(1_000_000),
        psnr: Some(18.0 + f64::from(epoch)),
        hf_ratio: Some(0.5),
        epoch_seconds: 12.0,
        images_per_second: Some(4000.0),
        extra: json!({}),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_watch_live_open_reconstruction_and_cancel() {
    let b = start().await;
    let c = &b.client;

    // Sign in with a token, then submit through the form (defaults from the preset).
    b.goto("/signin?next=/runs/new").await;
    c.find(Locator::Id("token"))
        .await
        .expect("token field")
        .send_keys(&b.pages.token)
        .await
        .expect("type");
    c.find(Locator::Id("signin-submit"))
        .await
        .expect("sign in")
        .click()
        .await
        .expect("click");
    b.until(
        "the form, signed in",
        "return location.pathname === '/runs/new' && document.querySelector('input[name=csrf_token]').value !== ''",
    )
    .await;
    for (field, value) in [
        ("name", "e2e <run>"),
        ("epochs", "3"),
        ("warmup_epochs", "1"),
    ] {
        let input = c
            .find(Locator::Id(&format!("f-{field}")))
            .await
            .expect(field);
        input.clear().await.expect("clear");
        input.send_keys(value).await.expect("type");
    }
    c.find(Locator::Id("submit-run"))
        .await
        .expect("submit")
        .click()
        .await
        .expect("click");
    b.until("the run page", "return location.pathname.startsWith('/runs/') && !location.pathname.endsWith('/new') && document.getElementById('run') !== null").await;
    let path = c.current_url().await.expect("url").path().to_string();
    let run_id: uuid::Uuid = path.trim_start_matches("/runs/").parse().expect("run id");
    let title = c
        .find(Locator::Css("h1 .run-name"))
        .await
        .expect("title")
        .text()
        .await
        .expect("text");
    assert_eq!(title, "e2e <run>", "the name is shown as text");

    // It is in the list.
    b.goto("/runs").await;
    let link = c
        .find(Locator::Css(&format!(
            "tr[data-run-id='{run_id}'] a.run-name"
        )))
        .await
        .expect("the run's row");
    assert_eq!(link.text().await.expect("text"), "e2e <run>");
    assert_eq!(
        c.find(Locator::Css(&format!(
            "tr[data-run-id='{run_id}'] [data-col=status]"
        )))
        .await
        .expect("status")
        .text()
        .await
        .expect("text"),
        "queued"
    );

    // A worker claims it: the list follows without a reload.
    let lease = claim(&b.pages).await;
    b.until(
        "status running in the list",
        &format!("return document.querySelector(\"tr[data-run-id='{run_id}'] [data-col=status]\").textContent === 'running'"),
    )
    .await;

    // On the run page, chart points arrive live.
    b.goto(&path).await;
    b.until("charts", "return window.maelabRun !== undefined")
        .await;
    assert_eq!(
        b.js("return window.maelabRun.steps.step.length").await,
        json!(0)
    );
    let pool = &b.pages.db.pool;
    for step in 0..20 {
        let row = StepRecord {
            epoch: 0,
            step,
            progress: f64::from(step + 1) / 20.0,
            train_loss: 1.0 / f64::from(step + 1),
            lr: 1e-4,
            images_per_second: Some(3500.0),
        };
        record_step(pool, &lease, &row).await.expect("step");
    }
    b.until(
        "20 step points",
        "return window.maelabRun.steps.step.length === 20",
    )
    .await;
    record_epoch(pool, &lease, &epoch_record(0, 0.5))
        .await
        .expect("epoch");
    b.until(
        "the epoch point",
        "return window.maelabRun.epochs.epoch.length === 1",
    )
    .await;
    // Charts are redrawn on the next animation frame after the data arrive.
    b.until(
        "the epoch charts",
        "return document.querySelectorAll('.chart').length === 5",
    )
    .await;
    let charts = b
        .js("return Array.from(document.querySelectorAll('.chart')).map(c => c.dataset.title)")
        .await;
    for title in [
        "Training loss per step",
        "Learning rate",
        "Loss per epoch",
        "PSNR of masked patches (dB)",
        "High-frequency ratio",
    ] {
        assert!(
            charts.as_array().expect("titles").contains(&json!(title)),
            "{title} in {charts}"
        );
    }
    // A single epoch sits inside its axis, not at the edge of uPlot's 0-100,
    // on whole-epoch ticks, drawn as a point (a line needs two).
    let one = b
        .js("const c = window.maelabRun.charts().find(c => c.title === 'Loss per epoch'); return [c.x, c.xTicks, c.points]")
        .await;
    assert_eq!(one, json!([[-1, 1], [-1, 0, 1], true]), "a one-epoch chart");
    let many = b
        .js("return window.maelabRun.charts().find(c => c.title === 'Training loss per step').points")
        .await;
    assert_eq!(many, json!(false), "20 steps draw a line, no markers");
    // Smoothing and the log scale act on the drawn charts.
    b.js("const s = document.getElementById('smoothing'); s.value = '0.9'; s.dispatchEvent(new Event('input')); return null").await;
    let smoothed = b
        .until(
            "smoothed step loss",
            "const c = window.maelabRun.charts().find(c => c.title === 'Training loss per step'); const raw = c.data[1], sm = c.data[2]; return sm[19] > raw[19] * 1.5",
        )
        .await;
    assert_eq!(smoothed, json!(true));
    c.find(Locator::Id("log-scale"))
        .await
        .expect("log toggle")
        .click()
        .await
        .expect("click");
    let distr = b
        .js("return window.maelabRun.charts().find(c => c.title === 'Training loss per step').distr")
        .await;
    assert_eq!(distr, json!(3), "log scale");
    let progress = c
        .find(Locator::Id("progress-text"))
        .await
        .expect("progress")
        .text()
        .await
        .expect("text");
    assert_eq!(progress, "epoch 1/3 · 100%");

    // The reconstruction image appears, and opens as a PNG.
    put_artifact(
        pool,
        &lease,
        &NewArtifact {
            kind: "reconstruction",
            epoch: Some(0),
            name: "recon_e0000.png",
            media_type: "image/png",
            bytes: PNG_1X1,
        },
    )
    .await
    .expect("artifact");
    let src = b
        .until("the reconstruction image", "const i = document.querySelector('#recon-images img'); return i && i.complete && i.naturalWidth > 0 ? i.getAttribute('src') : null")
        .await;
    let src = src.as_str().expect("src").to_string();
    b.goto(&src).await;
    assert_eq!(
        b.js("return document.contentType").await,
        json!("image/png")
    );

    // The compare page overlays the run's curves with uPlot.
    b.goto(&format!("/compare?run={run_id}")).await;
    let titles = b
        .until(
            "compare charts",
            "const t = Array.from(document.querySelectorAll('#compare-charts .chart')).map(c => c.dataset.title); return t.length ? t : null",
        )
        .await;
    assert!(
        titles
            .as_array()
            .expect("titles")
            .contains(&json!("Training loss")),
        "{titles}"
    );

    // Cancel from the page; the worker learns it at its heartbeat and stops.
    b.goto(&path).await;
    c.find(Locator::Id("cancel"))
        .await
        .expect("cancel button")
        .click()
        .await
        .expect("click");
    b.until(
        "back on the run page",
        "return document.getElementById('run') !== null",
    )
    .await;
    // The run page was already open, so the check above can pass before the
    // form post lands: wait for the flag itself (bounded) before heartbeating.
    for _ in 0..100 {
        let flagged: bool =
            sqlx::query_scalar("select cancel_requested from job where job_id = $1")
                .bind(lease.job_id)
                .fetch_one(pool)
                .await
                .expect("job row");
        if flagged {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let beat = queue::heartbeat(pool, &lease, Duration::from_secs(60))
        .await
        .expect("heartbeat");
    assert!(beat.cancel_requested, "the cancel reached the queue");
    queue::finish_cancelled(pool, &lease)
        .await
        .expect("cancelled");
    b.until(
        "status cancelled, live",
        "return document.getElementById('status').textContent === 'cancelled' && document.getElementById('cancel-form').hidden && !document.getElementById('retry-form').hidden",
    )
    .await;

    // Signed in, the top bar offers sign-out; it ends the browser's session
    // on the server (the harness holds one of its own), and the bar offers
    // sign-in again.
    b.until(
        "the sign-out button",
        "return !document.getElementById('nav-signout').hidden && document.getElementById('nav-signin').hidden",
    )
    .await;
    let open_sessions = || async {
        sqlx::query_scalar::<_, i64>(
            "select count(*) from browser_session where revoked_at is null",
        )
        .fetch_one(pool)
        .await
        .expect("sessions")
    };
    let before = open_sessions().await;
    c.find(Locator::Css("#nav-signout button"))
        .await
        .expect("sign out")
        .click()
        .await
        .expect("click");
    b.until(
        "signed out",
        "return document.getElementById('nav-signout') !== null && document.getElementById('nav-signout').hidden && !document.getElementById('nav-signin').hidden",
    )
    .await;
    assert_eq!(
        open_sessions().await,
        before - 1,
        "sign-out ended the browser's session on the server"
    );
    c.clone().close().await.expect("close");
}

/// Open `n` raw SSE connections on `path` that read (and drop) what comes.
async fn sse_crowd(addr: &str, path: &str, n: usize) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("request");
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        }));
    }
    tasks
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// What every test run checks: a run page with 10,000 step points and 50
/// epochs draws every chart, and epoch rows reach the open page while 200
/// more SSE clients follow the run; the clients' streams end when they leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_with_10k_points_draws_and_follows_epochs_beside_200_clients() {
    ten_k_points_and_200_clients(false).await;
}

/// The same with issue 6's bars (< 1 s load+draw, < 500 ms commit to page):
/// a benchmark, so not a timed test of every run (a busy machine, such as
/// another test training beside this one, misses them without a defect).
/// `cargo test -p maelab-server --test e2e_pages bars -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark with timing bars: run with --ignored on a quiet machine"]
async fn bars_10k_points_draw_under_1s_and_epochs_arrive_under_500ms_with_200_clients() {
    ten_k_points_and_200_clients(true).await;
}

/// Prints the BENCH lines; asserts the timing bars only when `bars`.
async fn ten_k_points_and_200_clients(bars: bool) {
    let b = start().await;
    let p = &b.pages;
    let id = p.create("bench", "mae", &[]).await;
    let lease = claim(p).await;
    // 10,000 step points and 50 epochs of history.
    p.steps(id, 0, 0, 10_000).await;
    for e in 0..50 {
        p.epoch(id, e, 1.0 / f64::from(e + 1), Some(f64::from(e)))
            .await;
    }
    let path = format!("/runs/{id}");

    // Bar 1: load and draw with 10,000 step points.
    let mut draws = Vec::new();
    for _ in 0..5 {
        b.goto(&path).await;
        let v = b
            .until("the first draw", "return window.maelabDrawn || null")
            .await;
        assert_eq!(
            b.js("return window.maelabRun.steps.step.length").await,
            json!(10_000)
        );
        draws.push(v.as_f64().expect("ms"));
    }
    draws.sort_by(f64::total_cmp);
    println!(
        "BENCH page load+draw with 10000 steps: median {:.0} ms, max {:.0} ms over {} loads",
        percentile(&draws, 0.5),
        draws[draws.len() - 1],
        draws.len()
    );
    assert!(
        !bars || draws[draws.len() - 1] < 1000.0,
        "load+draw took {draws:?} ms"
    );

    // Bar 2: epoch rows reach the open page within 500 ms, with 200 more SSE clients on the run.
    b.goto(&path).await;
    b.until("the page", "return window.maelabRun !== undefined")
        .await;
    let addr = b.base.trim_start_matches("http://").to_string();
    let crowd = sse_crowd(&addr, &format!("/runs/{id}/events?after=49.9999.-1"), 200).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.state.live.subscribers() < 201 {
        assert!(
            Instant::now() < deadline,
            "only {} streams open",
            p.state.live.subscribers()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut lat = Vec::new();
    for e in 50..80 {
        // Taken before the write, so the figure is an upper bound on commit -> page.
        let committed = now_ms();
        record_epoch(&p.db.pool, &lease, &epoch_record(e, 0.01))
            .await
            .expect("epoch");
        let at = b
            .until(
                "the epoch on the page",
                &format!(
                    "const l = window.maelabLastEpoch; return l && l.epoch === {e} ? l.at : null"
                ),
            )
            .await;
        lat.push(at.as_f64().expect("ms") - committed);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    lat.sort_by(f64::total_cmp);
    println!(
        "BENCH epoch commit -> open page with 200 extra SSE clients: p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms over {} epochs",
        percentile(&lat, 0.5),
        percentile(&lat, 0.95),
        lat[lat.len() - 1],
        lat.len()
    );
    assert!(!bars || lat[lat.len() - 1] < 500.0, "latencies {lat:?}");
    // Clients that hang up free their streams on the server (real TCP, not oneshot).
    for t in crowd {
        t.abort();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.state.live.subscribers() > 1 {
        assert!(
            Instant::now() < deadline,
            "{} streams still open after the clients left",
            p.state.live.subscribers()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.client.clone().close().await.expect("close");
}
