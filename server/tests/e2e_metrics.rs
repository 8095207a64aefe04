//! Logged metrics on the run page, in real headless Chromium: an external
//! run's keys are charted one chart per group with one series per key, and a
//! batch posted through the API while the page is open shows up without a
//! reload (the page's stream announces it; the page reads what is new).

mod e2e_support;
mod pages_support;

use e2e_support::{Browser, start};
use serde_json::{Value, json};

/// POST `body` as JSON to the API from the page (bearer token), like a
/// training script would; answers `{status, body}`.
async fn post(b: &Browser, path: &str, body: Value) -> Value {
    let script = "const [path, body, token, done] = arguments;
        fetch(path, {method: 'POST', body: JSON.stringify(body),
                     headers: {'content-type': 'application/json', authorization: 'Bearer ' + token}})
          .then(r => r.json().then(j => done({status: r.status, body: j})))
          .catch(e => done({status: 0, body: String(e)}));";
    let answer = b
        .client
        .execute_async(script, vec![json!(path), body, json!(b.pages.token)])
        .await
        .expect("script");
    assert!(
        matches!(answer["status"].as_u64(), Some(200 | 201)),
        "{path}: {answer}"
    );
    answer["body"].clone()
}

fn batch(steps: std::ops::Range<u64>, keys: &[&str]) -> Value {
    let mut points = Vec::new();
    for step in steps {
        points.push(json!({"key": "train_loss", "step": step, "value": 1.0 / (step + 1) as f64}));
        for (i, key) in keys.iter().enumerate() {
            points.push(json!({"key": key, "step": step, "value": (step * 10 + i as u64) as f64}));
        }
    }
    json!({ "points": points })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logged_metrics_are_charted_by_group_and_follow_new_batches() {
    let b = start().await;
    b.goto("/runs").await;
    let run = post(&b, "/api/v1/runs/external", json!({"name": "ext"})).await;
    let id = run["run_id"].as_str().expect("run id").to_string();
    let metrics = format!("/api/v1/runs/{id}/metrics");
    post(
        &b,
        &metrics,
        batch(0..3, &["train/grad_norm", "train/loss_scale", "val/kl"]),
    )
    .await;

    b.goto(&format!("/runs/{id}")).await;
    let shape = "return window.maelabGenericCharts.charts()
        .map(c => [c.group, c.series, c.keys, c.data[0].length])";
    b.until(
        "the logged charts",
        "return window.maelabGenericCharts && window.maelabGenericCharts.charts().length === 2",
    )
    .await;
    assert_eq!(
        b.js(shape).await,
        json!([
            ["train", 2, ["train/grad_norm", "train/loss_scale"], 3],
            ["val", 1, ["val/kl"], 3]
        ])
    );
    assert_eq!(
        b.js("return document.querySelectorAll('#generic-charts .chart').length")
            .await,
        json!(2)
    );
    // The MAE key stays in the fixed epoch charts only.
    assert_eq!(
        b.js("return window.maelabGenericCharts.points('train_loss')")
            .await,
        Value::Null
    );

    // One more batch while the page is open: a new step, and a new key.
    b.until(
        "the stream open",
        "return window.maelabEvents.readyState === 1",
    )
    .await;
    b.js("window.notReloaded = true").await;
    post(
        &b,
        &metrics,
        batch(
            3..4,
            &["train/grad_norm", "train/loss_scale", "val/kl", "val/ppl"],
        ),
    )
    .await;
    b.until(
        "the new point",
        "const p = window.maelabGenericCharts.points('train/grad_norm');
         return p && p.step[p.step.length - 1] === 3",
    )
    .await;
    b.until(
        "the new series",
        "return window.maelabGenericCharts.charts().some(c => c.series === 2 && c.group === 'val')",
    )
    .await;
    assert_eq!(b.js("return window.notReloaded").await, json!(true));
    assert_eq!(
        b.js(shape).await,
        json!([
            ["train", 2, ["train/grad_norm", "train/loss_scale"], 4],
            ["val", 2, ["val/kl", "val/ppl"], 4]
        ])
    );
    // The drawn data: x is the step, the grad norm's new value is the last.
    assert_eq!(
        b.js(
            "const d = window.maelabGenericCharts.charts()[0].data; return [d[0], d[1][3], d[2][3]]"
        )
        .await,
        json!([[0, 1, 2, 3], 30, 31])
    );
    assert_eq!(
        b.js("return window.maelabRun.epochs.epoch.length").await,
        json!(4),
        "the epoch charts follow too"
    );

    // The compare page overlays the first logged key, then any picked key.
    b.goto(&format!("/compare?run={id}")).await;
    b.until(
        "the overlay",
        "return window.maelabCompare && window.maelabCompare.data",
    )
    .await;
    assert_eq!(
        b.js("const c = window.maelabCompare; return [c.key, c.series, c.data[0], c.data[1]]")
            .await,
        json!(["train/grad_norm", 1, [0, 1, 2, 3], [0, 10, 20, 30]])
    );
    b.js(
        "const s = document.getElementById('compare-key'); s.value = 'train_loss';
          s.dispatchEvent(new Event('change'))",
    )
    .await;
    b.until(
        "the epoch column overlaid",
        "const c = window.maelabCompare; return c.key === 'train_loss' && c.data && c.data[1].length === 4",
    )
    .await;
    assert!(
        b.client
            .current_url()
            .await
            .expect("url")
            .as_str()
            .ends_with("key=train_loss"),
        "the URL names the key"
    );
}
