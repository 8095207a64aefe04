//! Runs trained anywhere (docs/ingest.md) against a real database:
//! idempotent creation, batches upserted on (run, key, step) with the MAE keys
//! in the epoch rows, every bad point named with nothing written, uploads
//! checked by sha256, heartbeat, lost and finish.

mod api_support;

use api_support::{TestApp, spawn};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

async fn external(app: &TestApp, body: Value) -> (StatusCode, Value) {
    let a = app.post_json("/api/v1/runs/external", &body).await;
    let status = a.status;
    (status, a.json())
}

async fn points(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from metric_point")
        .fetch_one(&app.db.pool)
        .await
        .expect("count")
}

fn mae_epoch(step: u64, loss: f64, acc1: f64) -> Vec<Value> {
    vec![
        json!({"key": "train_lr", "step": step, "value": 1e-4}),
        json!({"key": "train_loss", "step": step, "value": loss}),
        json!({"key": "test_acc1", "step": step, "value": acc1}),
        json!({"key": "n_parameters", "step": step, "value": 1000}),
        json!({"key": "custom/grad_norm", "step": step, "value": 0.5}),
    ]
}

#[tokio::test]
async fn create_is_idempotent_per_client_run_id() {
    let app = spawn().await;
    let body = json!({"name": "vitb", "tags": ["cluster"], "config": {"model": "mae_vit_base_patch16", "epochs": 800},
                      "client_run_id": "abc-1"});
    let (status, run) = external(&app, body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    assert_eq!(run["status"], "running");
    assert_eq!(run["model"], "mae_vit_base_patch16");
    assert_eq!(run["epochs_total"], 800);
    assert_eq!(
        run["config"]["epochs"], 800,
        "the config is stored as given"
    );
    let (again, same) = external(&app, body).await;
    assert_eq!(again, StatusCode::OK);
    assert_eq!(same["run_id"], run["run_id"]);
    let runs: i64 = sqlx::query_scalar("select count(*) from run")
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
    assert_eq!(runs, 1);
    // Not queued: no job for a worker to claim.
    let jobs: i64 = sqlx::query_scalar("select count(*) from job")
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
    assert_eq!(jobs, 0);
    for (bad, field) in [
        (json!({"name": ""}), "name"),
        (json!({"name": "x", "config": [1]}), "config"),
        (
            json!({"name": "x", "lost_after_seconds": 1}),
            "lost_after_seconds",
        ),
        (json!({"name": "x", "tags": ["a\u{7}"]}), "tags[0]"),
        (json!({"name": "x", "color": "red"}), "color"),
        (
            json!({"name": "x", "kind": "pretrain", "parent_run": run["run_id"]}),
            "parent_run",
        ),
    ] {
        let (status, err) = external(&app, bad.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {err}");
        assert_eq!(err["field"], field, "{bad}: {err}");
    }

    // A client that lost a create's answer asks for the run without making one.
    let find = |query: &str, token: Option<&str>| {
        let mut req = Request::get(format!("/api/v1/runs/external{query}"));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        req.body(Body::empty()).unwrap()
    };
    let found = app
        .send(find("?client_run_id=abc-1", Some(&app.token)))
        .await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.text());
    assert_eq!(found.json()["run_id"], run["run_id"]);
    assert_eq!(found.json()["status"], "running");
    let (other, _) = maelab_server::auth::tokens::create(&app.db.pool, "other")
        .await
        .expect("token");
    for (query, token, status) in [
        (
            "?client_run_id=abc-2",
            Some(app.token.as_str()),
            StatusCode::NOT_FOUND,
        ),
        // Ids are per token: another token's abc-1 is not this run.
        (
            "?client_run_id=abc-1",
            Some(other.as_str()),
            StatusCode::NOT_FOUND,
        ),
        ("?client_run_id=abc-1", None, StatusCode::UNAUTHORIZED),
        ("", Some(app.token.as_str()), StatusCode::BAD_REQUEST),
        (
            "?client_run_id=%07",
            Some(app.token.as_str()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "?run=abc-1",
            Some(app.token.as_str()),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let a = app.send(find(query, token)).await;
        assert_eq!(a.status, status, "{query}: {}", a.text());
    }
    let runs: i64 = sqlx::query_scalar("select count(*) from run")
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
    assert_eq!(runs, 1, "looking creates nothing");
}

#[tokio::test]
async fn batches_upsert_points_and_fill_the_epoch_rows() {
    let app = spawn().await;
    let (_, run) = external(&app, json!({"name": "ft", "kind": "finetune"})).await;
    let id = run["run_id"].as_str().expect("id").to_string();
    let url = format!("/api/v1/runs/{id}/metrics");
    // Steps out of order, in two batches.
    let mut batch = mae_epoch(2, 0.5, 60.0);
    batch.extend(mae_epoch(0, 0.9, 40.0));
    let a = app.post_json(&url, &json!({"points": batch})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json()["accepted"], 10);
    // A retried batch duplicates nothing.
    let a = app.post_json(&url, &json!({"points": batch})).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(points(&app).await, 10);
    // Step 1 arrives late; a key of step 2 is corrected (last write wins).
    let late = [
        mae_epoch(1, 0.7, 50.0),
        vec![json!({"key": "test_acc1", "step": 2, "value": 62.5})],
    ]
    .concat();
    let a = app.post_json(&url, &json!({"points": late})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(points(&app).await, 15);
    let epochs = app.get(&format!("/api/v1/runs/{id}/epochs")).await;
    assert_eq!(epochs.status, StatusCode::OK, "{}", epochs.text());
    let rows = epochs.json();
    let rows = rows.as_array().expect("rows");
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[1]["epoch"], 1);
    assert_eq!(rows[2]["test_acc1"], 62.5);
    assert_eq!(rows[0]["train_loss"], 0.9);
    assert_eq!(rows[0]["n_parameters"], 1000);
    let run = app.get(&format!("/api/v1/runs/{id}")).await.json();
    assert_eq!(run["best_acc1"], 62.5);
    assert_eq!(run["epochs_done"], 3);
    assert_eq!(run["epochs_total"], 3, "grows with the epochs seen");
    // The custom key is kept as a point.
    let custom: f64 = sqlx::query_scalar(
        "select value from metric_point where key = 'custom/grad_norm' and step = 1",
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("point");
    assert_eq!(custom, 0.5);
    // Only some keys at a step still make an epoch row.
    let a = app
        .post_json(
            &url,
            &json!({"points": [{"key": "test_acc5", "step": 7, "value": 90.0}]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let rows = app.get(&format!("/api/v1/runs/{id}/epochs")).await.json();
    assert_eq!(rows.as_array().expect("rows").len(), 4);
}

#[tokio::test]
async fn bad_batches_name_the_point_and_write_nothing() {
    let app = spawn().await;
    let (_, run) = external(&app, json!({"name": "x"})).await;
    let id = run["run_id"].as_str().expect("id").to_string();
    let url = format!("/api/v1/runs/{id}/metrics");
    let good = |step: u64| json!({"key": "train_loss", "step": step, "value": 1.0});
    let cases = [
        (
            json!({"key": "train_loss", "step": 1, "value": "NaN"}),
            "points[3].value",
        ),
        (
            json!({"key": "train_loss", "step": -1, "value": 1.0}),
            "points[3].step",
        ),
        (
            json!({"key": "train_loss", "step": 1.5, "value": 1.0}),
            "points[3].step",
        ),
        (
            json!({"key": "k".repeat(251), "step": 1, "value": 1.0}),
            "points[3].key",
        ),
        (
            json!({"key": "a\u{1}b", "step": 1, "value": 1.0}),
            "points[3].key",
        ),
        (json!({"key": "", "step": 1, "value": 1.0}), "points[3].key"),
        (
            json!({"key": "test_acc1", "step": 1, "value": 150.0}),
            "points[3].value",
        ),
        (
            json!({"key": "n_parameters", "step": 1, "value": 1.5}),
            "points[3].value",
        ),
        (
            json!({"key": "train_loss", "step": 1, "value": 1.0, "extra": 1}),
            "points[3].extra",
        ),
        (
            json!({"key": "train_loss", "step": 1, "value": 1.0, "wall_time": -5}),
            "points[3].wall_time",
        ),
    ];
    for (bad, field) in cases {
        let body = json!({"points": [good(0), good(1), good(2), bad.clone()]});
        let a = app.post_json(&url, &body).await;
        assert_eq!(
            a.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            a.text()
        );
        assert_eq!(a.json()["field"], field, "{bad}");
    }
    let a = app.post_json(&url, &json!({"points": []})).await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(a.json()["field"], "points");
    let many: Vec<Value> = (0..1001).map(good).collect();
    let a = app.post_json(&url, &json!({"points": many})).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", a.text());
    // Huge numbers are not JSON doubles.
    let req = Request::post(&url)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {}", app.token))
        .body(Body::from(
            r#"{"points": [{"key": "a", "step": 1, "value": 1e999}]}"#,
        ))
        .expect("request");
    assert_eq!(app.send(req).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(points(&app).await, 0, "nothing from a refused batch");
    let epochs: i64 = sqlx::query_scalar("select count(*) from epoch_metric")
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
    assert_eq!(epochs, 0);

    // Unknown run, a worker's run.
    let missing = app
        .post_json(
            "/api/v1/runs/00000000-0000-0000-0000-000000000001/metrics",
            &json!({"points": [good(0)]}),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let worker_run = app.create_run(&api_support::tiny_config()).await;
    let a = app
        .post_json(
            &format!("/api/v1/runs/{worker_run}/metrics"),
            &json!({"points": [good(0)]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.text());
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

async fn put(app: &TestApp, uri: &str, bytes: &'static [u8], media: &str) -> (StatusCode, Value) {
    let req = Request::put(uri)
        .header("content-type", media)
        .header("authorization", format!("Bearer {}", app.token))
        .body(Body::from(bytes))
        .expect("request");
    let a = app.send(req).await;
    let json = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
    (a.status, json)
}

#[tokio::test]
async fn uploads_are_stored_only_when_their_sha256_matches() {
    let app = spawn().await;
    let (_, run) = external(&app, json!({"name": "x"})).await;
    let id = run["run_id"].as_str().expect("id").to_string();
    let png: &'static [u8] = b"\x89PNG\r\n\x1a\nfake";
    let wrong = sha(b"something else");
    let (status, err) = put(
        &app,
        &format!(
            "/api/v1/runs/{id}/artifacts/recon-0003.png?kind=reconstruction&epoch=3&sha256={wrong}"
        ),
        png,
        "image/png",
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["field"], "sha256");
    let stored: i64 = sqlx::query_scalar("select count(*) from artifact")
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
    assert_eq!(stored, 0);
    let (status, art) = put(
        &app,
        &format!(
            "/api/v1/runs/{id}/artifacts/recon-0003.png?kind=reconstruction&epoch=3&sha256={}",
            sha(png)
        ),
        png,
        "image/png",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{art}");
    assert_eq!(art["size_bytes"], png.len());
    let list = app
        .get(&format!("/api/v1/runs/{id}/artifacts?kind=reconstruction"))
        .await
        .json();
    assert_eq!(list[0]["name"], "recon-0003.png");
    let got = app
        .get(&format!("/api/v1/runs/{id}/artifacts/recon-0003.png"))
        .await;
    assert_eq!(&got.body[..], png);
    let (status, _) = put(
        &app,
        &format!("/api/v1/runs/{id}/artifacts/..%2Fx?sha256={}", sha(png)),
        png,
        "image/png",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn silent_runs_become_lost_and_come_back_and_finish_is_final() {
    let app = spawn().await;
    let (_, run) = external(&app, json!({"name": "x", "lost_after_seconds": 10})).await;
    let id = run["run_id"].as_str().expect("id").to_string();
    let uuid: uuid::Uuid = id.parse().expect("uuid");
    assert_eq!(
        maelab_core::db::ingest::mark_lost(&app.db.pool)
            .await
            .expect("sweep"),
        0
    );
    sqlx::query("update run set last_seen_at = now() - interval '1 minute' where run_id = $1")
        .bind(uuid)
        .execute(&app.db.pool)
        .await
        .expect("age");
    assert_eq!(
        maelab_core::db::ingest::mark_lost(&app.db.pool)
            .await
            .expect("sweep"),
        1
    );
    let got = app.get(&format!("/api/v1/runs/{id}")).await.json();
    assert_eq!(got["status"], "lost");
    let hb = app
        .post_empty(&format!("/api/v1/runs/{id}/heartbeat"))
        .await;
    assert_eq!(hb.status, StatusCode::OK, "{}", hb.text());
    let got = app.get(&format!("/api/v1/runs/{id}")).await.json();
    assert_eq!(got["status"], "running", "its client came back");

    let finish = |status: &str| json!({"status": status, "reason": "diverged"});
    let a = app
        .post_json(&format!("/api/v1/runs/{id}/finish"), &finish("failed"))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json()["status"], "failed");
    assert_eq!(a.json()["error"], "diverged");
    let again = app
        .post_json(&format!("/api/v1/runs/{id}/finish"), &finish("failed"))
        .await;
    assert_eq!(again.status, StatusCode::OK, "a retried finish is harmless");
    let other = app
        .post_json(&format!("/api/v1/runs/{id}/finish"), &finish("succeeded"))
        .await;
    assert_eq!(other.status, StatusCode::CONFLICT);
    let late = app
        .post_json(
            &format!("/api/v1/runs/{id}/metrics"),
            &json!({"points": [{"key": "train_loss", "step": 0, "value": 1.0}]}),
        )
        .await;
    assert_eq!(late.status, StatusCode::CONFLICT);
    let hb = app
        .post_empty(&format!("/api/v1/runs/{id}/heartbeat"))
        .await;
    assert_eq!(hb.status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn an_open_run_stream_follows_an_external_run() {
    let app = api_support::spawn_listening().await;
    let (_, run) = external(&app, json!({"name": "live"})).await;
    let id = run["run_id"].as_str().expect("id").to_string();
    let req = Request::get(format!("/api/v1/runs/{id}/events"))
        .body(Body::empty())
        .expect("request");
    let res = tower::ServiceExt::oneshot(app.app.clone(), req)
        .await
        .expect("response");
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.into_body();
    let url = format!("/api/v1/runs/{id}/metrics");
    let batch = [mae_epoch(0, 0.9, 40.0), mae_epoch(1, 0.8, 45.0)].concat();
    let a = app.post_json(&url, &json!({"points": batch})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    // Both epochs of the one batch reach the stream.
    let mut seen = String::new();
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !(seen.contains("\"epoch\":0") && seen.contains("\"epoch\":1")) {
        let left = end.saturating_duration_since(std::time::Instant::now());
        let frame = tokio::time::timeout(left, http_body_util::BodyExt::frame(&mut body))
            .await
            .unwrap_or_else(|_| panic!("epochs not streamed; got {seen}"))
            .expect("open")
            .expect("frame");
        if let Ok(bytes) = frame.into_data() {
            seen.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
}

#[tokio::test]
async fn concurrent_batches_share_commits_and_keep_their_own_answers() {
    let app = spawn().await;
    let mut runs = Vec::new();
    for i in 0..16 {
        let (status, run) = external(&app, json!({"name": format!("c{i}")})).await;
        assert_eq!(status, StatusCode::CREATED, "{run}");
        runs.push(run["run_id"].as_str().expect("id").to_string());
    }
    let finished = runs[0].clone();
    let a = app
        .post_json(
            &format!("/api/v1/runs/{finished}/finish"),
            &json!({"status": "succeeded"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    // Every run's epochs 0-4 at once, one request per epoch row: 80 requests
    // in flight together, so the writers store them in shared transactions.
    let requests = runs
        .iter()
        .flat_map(|id| (0..5u64).map(move |step| (id.clone(), step)));
    let answers = futures::future::join_all(requests.map(|(id, step)| {
        let app = &app;
        async move {
            let a = app
                .post_json(
                    &format!("/api/v1/runs/{id}/metrics"),
                    &json!({"points": mae_epoch(step, 1.0 / (step + 1) as f64, 10.0 * step as f64)}),
                )
                .await;
            (id, a.status)
        }
    }))
    .await;
    for (id, status) in &answers {
        let expected = if *id == finished {
            StatusCode::CONFLICT
        } else {
            StatusCode::OK
        };
        assert_eq!(*status, expected, "run {id}");
    }
    assert_eq!(
        points(&app).await,
        15 * 5 * 5,
        "nothing from the finished run"
    );
    for id in &runs[1..] {
        let run = app.get(&format!("/api/v1/runs/{id}")).await.json();
        assert_eq!(run["epochs_done"], 5, "{run}");
        assert_eq!(run["best_acc1"], 40.0, "{run}");
        assert_eq!(run["last_loss"], 0.2, "{run}");
    }
}
