//! The study page in real headless Chromium (Debian's `chromium` and
//! `chromium-driver` over WebDriver, the harness in `e2e_support`): a study
//! of 2 arms x 3 seeds whose chains a fake worker finished through the
//! queue's fenced functions shows its results table and verdict, draws each
//! arm's mean and min-max band with uPlot, and follows the chains live: a run
//! finished while the page is open moves its chain without a reload, and a
//! chain that succeeds reloads the results. Set `MAELAB_STUDY_SCREENSHOT` to a
//! path to keep a screenshot of the page.

mod api_support;
mod e2e_support;
mod pages_support;
mod study_support;

use std::time::Duration;

use e2e_support::start;
use serde_json::json;
use study_support::{TWO_ARMS, claim, clear_gap, run_all, submit, train, worker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn study_page_results_bands_and_live_chains() {
    let b = start().await;
    let pool = &b.pages.db.pool;
    let id = submit(pool, TWO_ARMS).await;
    let w = worker(pool).await;
    // Every chain finishes but wave / seed 2, whose pretrain stays running.
    let mut held = run_all(pool, w, clear_gap, |c| c.arm == "wave" && c.seed == 2).await;
    assert_eq!(held.len(), 1);
    let pretrain = held.remove(0);

    let path = format!("/studies/{id}");
    b.goto(&path).await;
    b.until(
        "the page's script",
        "return window.maelabStudy && window.maelabStudy.progress > 0",
    )
    .await;
    let loaded = b.js("return window.maelabStudy.loadedAt").await;

    // The results table and the verdict.
    let mean = b
        .js(r#"return document.querySelector('#results tbody[data-metric=test_acc1] tr[data-arm=mae] .mean').textContent"#)
        .await;
    assert_eq!(mean, json!("51.00"));
    let n = b
        .js(r#"return document.querySelector('#results tbody[data-metric=test_acc1] tr[data-arm=wave] td.num').textContent"#)
        .await;
    assert_eq!(n, json!("2"), "wave has 2 finished chains");
    let verdict = b
        .js("return document.querySelector('#verdicts li[data-arm=wave]').textContent")
        .await;
    let verdict = verdict.as_str().expect("a verdict").to_string();
    assert!(
        verdict.starts_with("wave vs mae on best top-1 (%): +4.50"),
        "{verdict}"
    );

    // Bands: per chart and arm a mean, a highest and a lowest seed, one band.
    let charts = b.js("return window.maelabStudyCharts").await;
    let charts = charts.as_array().expect("charts").clone();
    let keys: Vec<&str> = charts.iter().filter_map(|c| c["key"].as_str()).collect();
    for key in [
        "pretrain-train_loss",
        "pretrain-psnr",
        "finetune-train_loss",
        "finetune-test_acc1",
    ] {
        assert!(keys.contains(&key), "{key} in {keys:?}");
    }
    for c in &charts {
        assert_eq!(c["arms"], json!(2), "{c}");
        assert_eq!(c["series"], json!(6), "{c}");
        assert_eq!(c["bands"], json!(2), "{c}");
    }
    let canvases = b
        .js("return document.querySelectorAll('#study-charts canvas').length")
        .await;
    assert_eq!(canvases, json!(charts.len()));
    let recons = b
        .until("the reconstructions", "const i = Array.from(document.querySelectorAll('#study-recons img')); return i.length === 2 && i.every(x => x.complete && x.naturalWidth > 0) ? i.length : null")
        .await;
    assert_eq!(recons, json!(2));

    if let Ok(shot) = std::env::var("MAELAB_STUDY_SCREENSHOT") {
        b.client.set_window_size(1400, 3400).await.expect("resize");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let png = b.client.screenshot().await.expect("screenshot");
        std::fs::write(&shot, png).expect("write the screenshot");
        b.client.set_window_size(1400, 1000).await.expect("resize");
    }

    // Live: the held pretrain finishes; its chain moves on (the finetune is
    // queued) without a reload.
    let row = "document.querySelector('#chains tr[data-arm=wave][data-seed=\"2\"]')";
    assert_eq!(
        b.js(&format!(
            "return {row}.querySelector('[data-col=status]').textContent"
        ))
        .await,
        json!("pretraining")
    );
    train(pool, &pretrain, 0.0).await;
    b.until(
        "the chain's finetune, live",
        &format!("const r = {row}; return r.querySelector('[data-col=status]').textContent === 'queued' && r.querySelector('[data-col=finetune] a') !== null"),
    )
    .await;
    assert_eq!(
        b.js("return window.maelabStudy.loadedAt").await,
        loaded,
        "no reload"
    );
    assert_eq!(
        b.js("return document.getElementById('chains-active').textContent")
            .await,
        json!("1")
    );
    assert_eq!(
        b.js("return document.getElementById('chains-total').textContent")
            .await,
        json!("6")
    );

    // The finetune succeeds: the chain is done, and the results reload with n = 3.
    let finetune = claim(pool, w).await.expect("the finetune");
    assert_eq!(
        (finetune.arm.as_str(), finetune.seed, finetune.kind.as_str()),
        ("wave", 2, "finetune")
    );
    train(pool, &finetune, clear_gap("wave", 2)).await;
    b.until(
        "the results, reloaded",
        &format!("return window.maelabStudy && window.maelabStudy.loadedAt !== {loaded} && document.querySelector('#results tbody[data-metric=test_acc1] tr[data-arm=wave] td.num').textContent === '3'"),
    )
    .await;
    let status = b
        .js("return document.getElementById('study-status').textContent")
        .await;
    assert_eq!(status, json!("succeeded"));
    b.client.clone().close().await.expect("close");
}
