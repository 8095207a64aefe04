//! The pages under their Content-Security-Policy in real headless Chromium
//! (issue 15, part 2): the runs list, a run page, the compare page and a
//! study page draw their charts and follow their live streams with no CSP
//! violation reported, and the policy is really enforced (an inline script
//! injected into the page is blocked and reported, so the watch can fail).

mod api_support;
mod e2e_support;
mod pages_support;
mod study_support;

use std::time::Duration;

use e2e_support::{Browser, start};
use maelab_core::db::artifacts::{NewArtifact, put_artifact};
use maelab_core::db::metrics::{EpochRecord, StepRecord, record_epoch, record_step};
use maelab_core::db::queue::{self, Lease};
use pages_support::PNG_1X1;
use serde_json::json;
use study_support::{TWO_ARMS, claim, clear_gap, run_all, submit, train, worker};

fn step(step: i32) -> StepRecord {
    StepRecord {
        epoch: 0,
        step,
        progress: f64::from(step + 1) / 40.0,
        train_loss: 1.0 / f64::from(step + 1),
        lr: 1e-4,
        images_per_second: Some(3500.0),
    }
}

fn epoch(epoch: i32) -> EpochRecord {
    EpochRecord {
        epoch,
        train_lr: 1e-4,
        train_loss: 0.5,
        test_loss: Some(0.6),
        test_acc1: None,
        test_acc5: None,
        n_parameters: Some(1_000_000),
        psnr: Some(18.0),
        hf_ratio: Some(0.5),
        epoch_seconds: 12.0,
        images_per_second: Some(4000.0),
        extra: json!({}),
    }
}

async fn assert_no_violations(b: &Browser, page: &str) {
    let seen = b.csp_violations().await;
    assert!(seen.is_empty(), "CSP violations on {page}: {seen:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_draw_live_under_the_csp_without_a_violation() {
    let b = start().await;
    b.watch_csp().await;
    let pool = &b.pages.db.pool;

    // A study whose chains finished but one, held running until the page is open.
    let study = submit(pool, TWO_ARMS).await;
    let w = worker(pool).await;
    let mut held = run_all(pool, w, clear_gap, |c| c.arm == "wave" && c.seed == 2).await;
    assert_eq!(held.len(), 1);
    let held = held.remove(0);

    // A run a worker is training: steps so far, more to come while pages are open.
    let run_id = b.pages.create("csp run", "mae", &[]).await;
    let lease: Lease = queue::claim_next(pool, w, Duration::from_secs(60))
        .await
        .expect("claim")
        .expect("the run's job")
        .lease;
    for s in 0..10 {
        record_step(pool, &lease, &step(s)).await.expect("step");
    }

    // The runs list follows the run live. Its stream may connect after the
    // page loads, so epochs come until one shows (the run has 4).
    b.goto("/runs").await;
    let moved = format!(
        "return document.querySelector(\"tr[data-run-id='{run_id}'] [data-col=epochs]\").textContent !== '0'"
    );
    for e in 0..4 {
        record_epoch(pool, &lease, &epoch(e)).await.expect("epoch");
        tokio::time::sleep(Duration::from_millis(1000)).await;
        if b.js(&moved).await == json!(true) {
            break;
        }
    }
    b.until("the list's live epoch", &moved).await;
    assert_no_violations(&b, "/runs").await;

    // The run page draws its charts and adds points as they arrive.
    b.goto(&format!("/runs/{run_id}")).await;
    b.until(
        "the run's charts",
        "return window.maelabRun && document.querySelectorAll('#charts canvas').length >= 3",
    )
    .await;
    for s in 10..20 {
        record_step(pool, &lease, &step(s)).await.expect("step");
    }
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
    .expect("reconstruction");
    b.until(
        "20 live step points",
        "return window.maelabRun.steps.step.length === 20",
    )
    .await;
    b.until(
        "the reconstruction image",
        "const i = document.querySelector('#recon-images img'); return i && i.complete && i.naturalWidth > 0",
    )
    .await;
    let width = b
        .js("return document.getElementById('progress-fill').style.width")
        .await;
    assert_ne!(width, json!(""), "the progress bar is set by the script");
    assert_no_violations(&b, "the run page").await;

    // The compare page overlays the run's curves.
    b.goto(&format!("/compare?run={run_id}")).await;
    b.until(
        "the compare charts",
        "return document.querySelectorAll('#compare-charts canvas').length > 0",
    )
    .await;
    assert_no_violations(&b, "/compare").await;

    // The study page draws its bands and reloads its results when the held chain ends.
    b.goto(&format!("/studies/{study}")).await;
    b.until(
        "the study's charts",
        "return window.maelabStudy && window.maelabStudy.progress > 0 && document.querySelectorAll('#study-charts canvas').length > 0",
    )
    .await;
    assert_no_violations(&b, "the study page").await;
    let loaded = b.js("return window.maelabStudy.loadedAt").await;
    let row =
        "document.querySelector('#chains tr[data-arm=wave][data-seed=\"2\"] [data-col=status]')";
    train(pool, &held, 0.0).await;
    b.until(
        "the chain's finetune, live",
        &format!("return {row}.textContent === 'queued'"),
    )
    .await;
    assert_no_violations(&b, "the study page, live").await;
    let finetune = claim(pool, w).await.expect("the finetune");
    train(pool, &finetune, clear_gap("wave", 2)).await;
    b.until(
        "the study's results, reloaded",
        &format!("return window.maelabStudy && window.maelabStudy.loadedAt !== {loaded} && document.querySelectorAll('#study-charts canvas').length > 0"),
    )
    .await;
    assert_no_violations(&b, "the study page, reloaded").await;

    // The watch sees what the policy blocks: an inline script never runs.
    let ran = b
        .js("const s = document.createElement('script'); s.textContent = 'window.maelabInline = 1'; document.body.appendChild(s); return window.maelabInline === 1")
        .await;
    assert_eq!(ran, json!(false), "inline script ran despite the CSP");
    let seen = b
        .until(
            "the violation report",
            "return window.maelabCspViolations.length > 0 && window.maelabCspViolations",
        )
        .await;
    assert!(seen.to_string().contains("script-src"), "{seen}");
    b.client.clone().close().await.expect("close");
}
