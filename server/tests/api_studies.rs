//! `/api/v1/studies` against a real database: preview writes nothing, a bad
//! study is refused naming the arm and field with nothing queued, submit
//! queues every chain in one go, the aggregates follow the chains' runs
//! (mean, interval, difference, verdict), export as CSV/JSON, cancel and
//! retry, the run limit, and the live stream.

mod api_support;

use std::time::{Duration, Instant};

use api_support::{TestApp, spawn, spawn_listening, spawn_with, work_one};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use maelab_server::settings::ServeSettings;
use serde_json::{Value, json};
use tower::ServiceExt;

/// A finetune-only study of two arms x three seeds, one epoch each.
fn finetune_study() -> Value {
    json!({
        "name": "two arms",
        "stages": "finetune",
        "seeds": 3,
        "baseline": "mae",
        "base": {"preset": "vit-micro/4"},
        "budget": {"epochs": 1},
        "arms": {"mae": {"model": "mae"}, "wave": {"model": "wave_mae", "wave_in": "encoder"}},
    })
}

async fn studies(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from study")
        .fetch_one(&app.db.pool)
        .await
        .expect("count")
}

#[tokio::test]
async fn preview_lists_the_runs_and_writes_nothing() {
    let app = spawn().await;
    let before = app.counts().await;
    let a = app
        .post_json("/api/v1/studies/preview", &finetune_study())
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let p = a.json();
    assert_eq!(p["runs"], 6);
    assert_eq!(p["arms"], json!(["mae", "wave"]));
    assert_eq!(p["chains"].as_array().expect("runs").len(), 6);
    assert_eq!(p["chains"][3]["arm"], "wave");
    assert_eq!(p["chains"][3]["model"], "wave_mae");
    assert_eq!(p["chains"][3]["epochs"], 1);
    assert_eq!(app.counts().await, before);
    assert_eq!(studies(&app).await, 0);
}

#[tokio::test]
async fn bad_studies_are_refused_naming_the_field_and_queue_nothing() {
    let app = spawn().await;
    let before = app.counts().await;
    let mut bad = finetune_study();
    bad["arms"]["wave"]["mask_ratio"] = json!(1.5);
    let a = app.post_json("/api/v1/studies", &bad).await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.text());
    assert_eq!(a.json()["field"], "arms.wave.mask_ratio");
    let mut bad = finetune_study();
    bad["arms"]["wave"]["wave_inn"] = json!("both");
    let a = app.post_json("/api/v1/studies", &bad).await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.text());
    assert_eq!(a.json()["field"], "arms.wave.wave_inn");
    let mut bad = finetune_study();
    bad["seeds"] = json!(0);
    let a = app.post_json("/api/v1/studies", &bad).await;
    assert_eq!(a.json()["field"], "seeds");
    let mut bad = finetune_study();
    bad["arms"] = json!({});
    let a = app.post_json("/api/v1/studies", &bad).await;
    assert_eq!(a.json()["field"], "arms");
    let mut bad = finetune_study();
    bad["budget"] = json!({"finetune_seconds": 0});
    let a = app.post_json("/api/v1/studies", &bad).await;
    assert_eq!(a.json()["field"], "budget.finetune_seconds");
    // Two arms with one name: only the text shows it.
    let req = Request::post("/api/v1/studies")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {}", app.token))
        .body(Body::from(
            r#"{"name": "d", "seeds": 1, "arms": {"a": {}, "a": {"model": "mae"}}}"#,
        ))
        .expect("request");
    let a = app.send(req).await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.text());
    assert!(
        a.json()["reason"]
            .as_str()
            .expect("reason")
            .contains("given twice")
    );
    // Not JSON at all is a 400.
    let req = Request::post("/api/v1/studies")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {}", app.token))
        .body(Body::from("{\"name\": "))
        .expect("request");
    assert_eq!(app.send(req).await.status, StatusCode::BAD_REQUEST);
    // No token, no study.
    let req = Request::post("/api/v1/studies")
        .header("content-type", "application/json")
        .body(Body::from(finetune_study().to_string()))
        .expect("request");
    assert_eq!(app.send(req).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.counts().await, before);
    assert_eq!(studies(&app).await, 0);
}

#[tokio::test]
async fn more_runs_than_the_limit_are_refused() {
    let app = spawn_with(ServeSettings {
        max_study_runs: 4,
        ..ServeSettings::default()
    })
    .await;
    let a = app.post_json("/api/v1/studies", &finetune_study()).await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.text());
    let body = a.json();
    assert_eq!(body["field"], "seeds");
    assert!(body["reason"].as_str().expect("reason").contains("6 runs"));
    assert_eq!(studies(&app).await, 0);
}

/// The metric `key` of `arm` in a study's results.
fn result<'a>(study: &'a Value, arm: &str, key: &str) -> &'a Value {
    let arms = study["results"]["arms"].as_array().expect("arms");
    let a = arms.iter().find(|a| a["arm"] == arm).expect("arm");
    a["metrics"]
        .as_array()
        .expect("metrics")
        .iter()
        .find(|m| m["metric"] == key)
        .expect("metric")
}

fn verdict(study: &Value, arm: &str) -> String {
    let arms = study["results"]["arms"].as_array().expect("arms");
    let a = arms.iter().find(|a| a["arm"] == arm).expect("arm");
    a["verdict"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn results_follow_the_chains_with_intervals_differences_and_verdicts() {
    let app = spawn().await;
    let a = app.post_json("/api/v1/studies", &finetune_study()).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    let created = a.json();
    let id = created["study_id"].as_str().expect("id").to_string();
    assert_eq!(
        a.headers["location"],
        format!("/api/v1/studies/{id}").as_str()
    );
    assert_eq!(created["chains"].as_array().expect("chains").len(), 6);
    assert_eq!(created["status"], "running");
    assert_eq!(created["created_by"], "test");
    let runs: i64 = sqlx::query_scalar("select count(*) from run where study_id is not null")
        .fetch_one(&app.db.pool)
        .await
        .expect("runs");
    assert_eq!(runs, 6);

    // Jobs are claimed seed by seed: mae and wave of seed 0, then of seed 1, ...
    for acc in [50.0, 60.0, 52.0, 61.0, 54.0, 65.0] {
        work_one(&app.db.pool, &[(1.0, Some(acc))], true).await;
    }
    let study = app.get(&format!("/api/v1/studies/{id}")).await.json();
    assert_eq!(study["status"], "succeeded");
    assert_eq!(study["chains_succeeded"], 6);
    let base = result(&study, "mae", "test_acc1");
    assert_eq!(base["summary"]["n"], 3);
    assert_eq!(base["values"], json!([50.0, 52.0, 54.0]));
    assert!((base["summary"]["mean"].as_f64().expect("mean") - 52.0).abs() < 1e-9);
    // With three seeds the percentile interval of a mean is [min, max].
    assert_eq!(base["summary"]["ci_low"], 50.0);
    assert_eq!(base["summary"]["ci_high"], 54.0);
    assert!(base["vs_baseline"].is_null());
    let wave = result(&study, "wave", "test_acc1");
    let diff = &wave["vs_baseline"];
    assert!((diff["diff"].as_f64().expect("diff") - 10.0).abs() < 1e-9);
    assert!(diff["ci_low"].as_f64().expect("low") > 0.0);
    assert_eq!(diff["prob_improvement"], 1.0);
    // Welch by hand: var 4 and 7, se^2 = 11/3, t = 10 / sqrt(11/3).
    let t = 10.0 / (11.0_f64 / 3.0).sqrt();
    assert!((diff["welch_t"].as_f64().expect("t") - t).abs() < 1e-9);
    let v = verdict(&study, "wave");
    assert!(
        v.contains("wave is better than mae") && v.contains("excludes 0"),
        "{v}"
    );
    assert!(v.contains("n = 3"), "{v}");

    // CSV and JSON export: one per-seed row per chain and metric.
    let csv = app
        .get(&format!("/api/v1/studies/{id}/export?format=csv"))
        .await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(
        csv.headers["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/csv")
    );
    let text = csv.text();
    let header = text.lines().next().expect("header");
    // The columns in reading order, not alphabetical.
    assert_eq!(
        header,
        "arm,seed,status,pretrain_run,finetune_run,metric,value"
    );
    let agg_csv = app
        .get(&format!(
            "/api/v1/studies/{id}/export?format=csv&rows=aggregate"
        ))
        .await
        .text();
    assert_eq!(
        agg_csv.lines().next().expect("header"),
        "arm,metric,n,mean,sd,ci_low,ci_high,baseline,diff,diff_ci_low,diff_ci_high,welch_p,prob_improvement"
    );
    let wave_acc = agg_csv
        .lines()
        .find(|l| l.starts_with("wave,test_acc1,"))
        .expect("wave's top-1 row");
    assert!(wave_acc.starts_with("wave,test_acc1,3,"), "{wave_acc}");
    let acc_rows = text.lines().filter(|l| l.contains(",test_acc1,")).count();
    assert_eq!(acc_rows, 6, "{text}");
    let agg = app
        .get(&format!("/api/v1/studies/{id}/export?rows=aggregate"))
        .await
        .json();
    let row = agg
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["arm"] == "wave" && r["metric"] == "test_acc1")
        .expect("row")
        .clone();
    assert_eq!(row["n"], 3);
    assert_eq!(row["baseline"], "mae");
    let bad = app
        .get(&format!("/api/v1/studies/{id}/export?format=xml"))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    let list = app.get("/api/v1/studies").await.json();
    assert_eq!(list[0]["study_id"], id.as_str());
    assert_eq!(list[0]["chains_total"], 6);
}

#[tokio::test]
async fn overlapping_intervals_say_not_distinguishable_and_failed_chains_count_honestly() {
    let app = spawn().await;
    let a = app.post_json("/api/v1/studies", &finetune_study()).await;
    let id = a.json()["study_id"].as_str().expect("id").to_string();
    // Claimed seed by seed: mae 50, 58, 54; wave 53, 57 and a failed chain.
    for (acc, ok) in [
        (50.0, true),
        (53.0, true),
        (58.0, true),
        (57.0, true),
        (54.0, true),
        (0.0, false),
    ] {
        work_one(&app.db.pool, &[(1.0, Some(acc))], ok).await;
    }
    let study = app.get(&format!("/api/v1/studies/{id}")).await.json();
    assert_eq!(study["status"], "finished");
    assert_eq!(study["chains_failed"], 1);
    let wave = result(&study, "wave", "test_acc1");
    assert_eq!(wave["summary"]["n"], 2, "the failed chain is not averaged");
    let v = verdict(&study, "wave");
    assert!(v.contains("not distinguishable at n = 2 vs 3"), "{v}");
}

#[tokio::test]
async fn cancel_and_retry_through_the_api() {
    let app = spawn().await;
    let a = app.post_json("/api/v1/studies", &finetune_study()).await;
    let id = a.json()["study_id"].as_str().expect("id").to_string();
    work_one(&app.db.pool, &[(1.0, Some(50.0))], true).await;
    let c = app
        .post_empty(&format!("/api/v1/studies/{id}/cancel"))
        .await;
    assert_eq!(c.status, StatusCode::OK, "{}", c.text());
    assert_eq!(c.json()["cancelled"], 5);
    let s = app.get(&format!("/api/v1/studies/{id}")).await.json();
    assert_eq!(s["status"], "cancelled");
    let r = app
        .post_empty(&format!("/api/v1/studies/{id}/retry?arm=wave&seed=1"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["runs"], 1);
    let r = app.post_empty(&format!("/api/v1/studies/{id}/retry")).await;
    assert_eq!(r.json()["runs"], 4);
    let r = app.post_empty(&format!("/api/v1/studies/{id}/retry")).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = app
        .post_empty(&format!("/api/v1/studies/{id}/retry?arm=wave"))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let missing = app
        .post_empty("/api/v1/studies/00000000-0000-0000-0000-000000000001/cancel")
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(
        app.get("/api/v1/studies/nope").await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn the_live_stream_sends_progress_when_a_chain_moves() {
    let app = spawn_listening().await;
    let a = app.post_json("/api/v1/studies", &finetune_study()).await;
    let id = a.json()["study_id"].as_str().expect("id").to_string();
    let req = Request::get(format!("/api/v1/studies/{id}/events"))
        .body(Body::empty())
        .expect("request");
    let res = app.app.clone().oneshot(req).await.expect("response");
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.into_body();
    let mut buf = String::new();
    let mut next = async || -> Value {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(at) = buf.find("\n\n") {
                let block: String = buf.drain(..at + 2).collect();
                if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data:")) {
                    return serde_json::from_str(data.trim()).expect("json");
                }
                continue;
            }
            let left = end.saturating_duration_since(Instant::now());
            let frame = tokio::time::timeout(left, body.frame())
                .await
                .expect("an event in time")
                .expect("open")
                .expect("frame");
            if let Ok(bytes) = frame.into_data() {
                buf.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    };
    let first = next().await;
    assert_eq!(first["chains"].as_array().expect("chains").len(), 6);
    assert_eq!(first["chains_succeeded"], 0);
    work_one(&app.db.pool, &[(1.0, Some(50.0))], true).await;
    let mut seen = 0;
    for _ in 0..5 {
        let p = next().await;
        seen = p["chains_succeeded"].as_i64().unwrap_or(0);
        if seen == 1 {
            break;
        }
    }
    assert_eq!(seen, 1);
}

#[tokio::test]
async fn one_seed_a_side_is_not_judged() {
    let app = spawn().await;
    let mut one_seed = finetune_study();
    one_seed["seeds"] = json!(1);
    let a = app.post_json("/api/v1/studies", &one_seed).await;
    let id = a.json()["study_id"].as_str().expect("id").to_string();
    for acc in [50.0, 70.0] {
        work_one(&app.db.pool, &[(1.0, Some(acc))], true).await;
    }
    let study = app.get(&format!("/api/v1/studies/{id}")).await.json();
    let v = verdict(&study, "wave");
    assert!(v.contains("Not judged") && v.contains("n = 1"), "{v}");
    assert!(!v.contains("is better"), "{v}");
}
