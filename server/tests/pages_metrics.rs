//! Generic metrics on the pages (issue 12, item 2), through `oneshot`: the
//! run page lists an external run's logged keys by group (its script charts
//! them from the API), and the compare page offers the union of the runs'
//! keys to overlay.

mod pages_support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use pages_support::{Pages, spawn};
use serde_json::{Value, json};
use uuid::Uuid;

/// POST `body` to the API with the test token.
async fn post_api(p: &Pages, uri: &str, body: &Value) -> Value {
    let a = p
        .send(
            Request::post(uri)
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {}", p.token))
                .body(Body::from(body.to_string()))
                .expect("request"),
        )
        .await;
    assert!(a.status.is_success(), "{uri}: {} {}", a.status, a.text());
    serde_json::from_slice(&a.body).expect("JSON")
}

/// An external run with `keys` logged at steps 0..3 (and the MAE
/// `train_loss`, an epoch column, at the same steps).
async fn external_run(p: &Pages, name: &str, keys: &[&str]) -> Uuid {
    let run = post_api(p, "/api/v1/runs/external", &json!({"name": name})).await;
    let id: Uuid = run["run_id"].as_str().expect("id").parse().expect("uuid");
    let mut points = Vec::new();
    for step in 0..3 {
        points.push(json!({"key": "train_loss", "step": step, "value": 1.0 / f64::from(step + 1)}));
        for (i, key) in keys.iter().enumerate() {
            points.push(json!({"key": key, "step": step, "value": f64::from(step) + i as f64}));
        }
    }
    post_api(
        p,
        &format!("/api/v1/runs/{id}/metrics"),
        &json!({"points": points}),
    )
    .await;
    id
}

/// Every `<script>` has a `src`: the pages carry no inline script.
fn no_inline_script(html: &str) {
    for tag in html.split("<script").skip(1) {
        let open = &tag[..tag.find('>').expect("a closed tag")];
        assert!(open.contains("src="), "inline script: <script{open}>");
    }
}

/// The `<option>` values of the overlay selector, in order.
fn options(html: &str) -> Vec<String> {
    let start = html.find(r#"id="compare-key""#).expect("the key selector");
    let end = start + html[start..].find("</select>").expect("its end");
    html[start..end]
        .split("<option value=\"")
        .skip(1)
        .map(|o| o[..o.find('"').expect("quoted")].to_string())
        .collect()
}

#[tokio::test]
async fn run_page_lists_the_logged_keys_by_group() {
    let p = spawn().await;
    let id = external_run(
        &p,
        "ext",
        &["train/grad_norm", "train/loss_scale", "val/kl"],
    )
    .await;
    let a = p.get(&format!("/runs/{id}")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let html = a.text();
    no_inline_script(&html);
    assert!(html.contains(r#"<section class="metric-groups" id="metric-groups" data-generic="#));
    assert!(
        !html.contains("\" hidden>\n  <h2>Logged"),
        "the section is shown"
    );
    assert!(html.contains("/static/run_metrics.js"));
    // One group per prefix, in order, each with its keys.
    let train = html.find(r#"data-group="train""#).expect("the train group");
    let val = html.find(r#"data-group="val""#).expect("the val group");
    assert!(train < val);
    let in_train = &html[train..val];
    assert!(
        in_train.contains(r#"data-key="train/grad_norm""#),
        "{in_train}"
    );
    assert!(
        in_train.contains(r#"data-key="train/loss_scale""#),
        "{in_train}"
    );
    assert!(html[val..].contains(r#"data-key="val/kl""#));
    assert!(in_train.contains("3 points"), "{in_train}");
    // The MAE key is an epoch column, charted per epoch: not listed again,
    // and the script is told to skip it.
    assert!(!html.contains(r#"data-key="train_loss""#));
    assert!(!html.contains(r#"data-group="train_loss""#));
    assert!(html.contains("&#34;epoch_keys&#34;:[&#34;train_lr&#34;,&#34;train_loss&#34;"));

    // What the script reads: the keys with their groups, then one key's points.
    let keys: Value =
        serde_json::from_slice(&p.get(&format!("/api/v1/runs/{id}/metrics")).await.body)
            .expect("keys");
    let groups: Vec<(&str, &str)> = keys
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| (k["group"].as_str().unwrap(), k["key"].as_str().unwrap()))
        .collect();
    assert_eq!(
        groups,
        [
            ("train", "train/grad_norm"),
            ("train", "train/loss_scale"),
            ("train_loss", "train_loss"),
            ("val", "val/kl")
        ]
    );
    let after: Value = serde_json::from_slice(
        &p.get(&format!("/api/v1/runs/{id}/metrics?key=val%2Fkl&after=0"))
            .await
            .body,
    )
    .expect("points");
    let steps: Vec<i64> = after
        .as_array()
        .expect("points")
        .iter()
        .map(|r| r["step"].as_i64().unwrap())
        .collect();
    assert_eq!(steps, [1, 2]);
}

#[tokio::test]
async fn a_run_without_logged_keys_shows_nothing_extra() {
    let p = spawn().await;
    let id = p.create("worker run", "mae", &[]).await;
    p.epoch(id, 0, 0.9, Some(10.0)).await;
    let html = p.get(&format!("/runs/{id}")).await.text();
    no_inline_script(&html);
    assert!(html.contains(r#"id="metric-groups""#));
    assert!(
        html.contains("\" hidden>\n  <h2>Logged metrics</h2>"),
        "the section is hidden"
    );
    assert!(!html.contains("data-group="));
}

/// The selector's first options for runs with a worker's epoch rows: none,
/// then the epoch columns with values, in the columns' order.
const WORKER_COLUMNS: [&str; 7] = [
    "",
    "train_loss",
    "train_lr",
    "test_acc1",
    "psnr",
    "epoch_seconds",
    "images_per_second",
];

#[tokio::test]
async fn compare_offers_the_union_of_the_runs_keys() {
    let p = spawn().await;
    let a = external_run(&p, "a", &["train/grad_norm", "train/loss_scale"]).await;
    let b = external_run(&p, "b", &["val/kl", "train/grad_norm"]).await;
    let w = p.create("worker", "mae", &[]).await;
    p.epoch(w, 0, 0.9, Some(10.0)).await;
    let page = p.get(&format!("/compare?run={a}&run={b}&run={w}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    let html = page.text();
    no_inline_script(&html);
    assert!(html.contains("/static/metrics.js"));
    // Epoch columns any run has values in (the worker's test_acc1, psnr,
    // ...), then every logged key once, sorted; `train_loss` only once.
    let logged = ["train/grad_norm", "train/loss_scale", "val/kl"];
    assert_eq!(
        options(&html),
        [&WORKER_COLUMNS[..], &logged].concat(),
        "{html}"
    );
    // The first logged key is overlaid unless the URL names one.
    assert!(html.contains(r#"<option value="train/grad_norm" selected>"#));
    // The same runs named as one comma-separated `runs`, as people type it.
    let typed = p.get(&format!("/compare?runs={a},{b},{w}")).await;
    assert_eq!(typed.status, StatusCode::OK, "{}", typed.text());
    assert_eq!(options(&typed.text()), options(&html));
    let html = p
        .get(&format!("/compare?run={a}&run={b}&key=val%2Fkl"))
        .await
        .text();
    assert!(html.contains(r#"<option value="val/kl" selected>"#));
    assert_eq!(html.matches(" selected>").count(), 1, "one choice");
    // A key none of the runs has falls back.
    let html = p
        .get(&format!("/compare?run={w}&key=val%2Fkl"))
        .await
        .text();
    assert_eq!(options(&html), WORKER_COLUMNS);
    assert!(html.contains(r#"<option value="" selected>"#));
    // The series carry every epoch column for the overlay.
    assert!(html.contains("&#34;epoch_seconds&#34;:[10.0]"));
}
