//! The API's reads and writes against a real database: create, list (filters,
//! search, sort, pages), detail, metrics as JSON and CSV, steps, artifacts and
//! log.txt, workers, queue, cancel/retry, SSE, and the OpenAPI document.

mod api_support;

use api_support::{spawn, tiny_config, work_one};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn create_answers_201_with_the_resolved_run_and_its_location() {
    let app = spawn().await;
    let a = app.post_json("/api/v1/runs", &tiny_config()).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    let run = a.json();
    let id = run["run_id"].as_str().unwrap();
    assert_eq!(a.headers["location"], format!("/api/v1/runs/{id}").as_str());
    assert_eq!(run["status"], "queued");
    assert_eq!(run["created_by"], "test");
    assert_eq!(run["epochs_total"], 2);
    assert_eq!(run["queue_position"], 1);
    // The stored config is the resolved one: preset fields filled in.
    assert_eq!(run["config"]["shape"]["embed_dim"], 128);
    let got = app.get(&format!("/api/v1/runs/{id}")).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.json()["name"], "tiny");
}

#[tokio::test]
async fn list_filters_searches_sorts_and_pages() {
    let app = spawn().await;
    for (name, tags) in [
        ("alpha", vec!["a"]),
        ("beta", vec!["b"]),
        ("gamma", vec!["a", "c"]),
    ] {
        let mut c = tiny_config();
        c["name"] = json!(name);
        c["tags"] = json!(tags);
        app.create_run(&c).await;
    }
    let names = |v: &Value| -> Vec<String> {
        v["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect()
    };
    let all = app.get("/api/v1/runs?sort=name&order=asc").await.json();
    assert_eq!(names(&all), ["alpha", "beta", "gamma"]);
    assert_eq!(all["total"], 3);
    let tagged = app
        .get("/api/v1/runs?tag=a&sort=name&order=desc")
        .await
        .json();
    assert_eq!(names(&tagged), ["gamma", "alpha"]);
    let searched = app.get("/api/v1/runs?q=ET").await.json();
    assert_eq!(names(&searched), ["beta"]);
    let page = app
        .get("/api/v1/runs?sort=name&order=asc&limit=2&offset=2")
        .await
        .json();
    assert_eq!(names(&page), ["gamma"]);
    assert_eq!(page["total"], 3);
    let past = app.get("/api/v1/runs?limit=2&offset=10").await.json();
    assert_eq!(names(&past), Vec::<String>::new());
    assert_eq!(past["total"], 3);
    let none = app.get("/api/v1/runs?status=running").await.json();
    assert_eq!(none["total"], 0);
}

#[tokio::test]
async fn a_trained_run_shows_progress_metrics_artifacts_and_log() {
    let app = spawn().await;
    let id = app.create_run(&tiny_config()).await;
    work_one(&app.db.pool, &[(0.9, Some(40.0)), (0.7, Some(55.5))], true).await;

    let run = app.get(&format!("/api/v1/runs/{id}")).await.json();
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["epochs_done"], 2);
    assert_eq!(run["best_acc1"], 55.5);
    assert_eq!(run["last_loss"], 0.7);
    assert_eq!(run["worker"], "sim-worker");
    assert!(run["duration_seconds"].as_f64().unwrap() >= 0.0);

    let sorted = app.get("/api/v1/runs?sort=best_acc1").await.json();
    assert_eq!(sorted["runs"][0]["best_acc1"], 55.5);

    let epochs = app.get(&format!("/api/v1/runs/{id}/epochs")).await.json();
    assert_eq!(epochs.as_array().unwrap().len(), 2);
    assert_eq!(epochs[1]["test_acc1"], 55.5);
    let after = app
        .get(&format!("/api/v1/runs/{id}/epochs?after=0"))
        .await
        .json();
    assert_eq!(after.as_array().unwrap().len(), 1);

    let csv = app
        .get(&format!("/api/v1/runs/{id}/epochs?format=csv"))
        .await;
    assert!(
        csv.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let lines: Vec<String> = csv.text().lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[0].starts_with("epoch,train_lr,train_loss"));
    assert!(lines[2].starts_with("1,"));
    let by_accept = app
        .send(
            Request::get(format!("/api/v1/runs/{id}/epochs"))
                .header("accept", "text/csv")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(by_accept.text(), csv.text());

    let steps = app.get(&format!("/api/v1/runs/{id}/steps")).await.json();
    assert_eq!(steps.as_array().unwrap().len(), 2);
    let later = app
        .get(&format!("/api/v1/runs/{id}/steps?after=5"))
        .await
        .json();
    assert_eq!(later.as_array().unwrap().len(), 1);
    assert_eq!(later[0]["step"], 15);

    let list = app
        .get(&format!("/api/v1/runs/{id}/artifacts"))
        .await
        .json();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["recon-0000.png", "log.txt"]);
    let png = app
        .get(&format!("/api/v1/runs/{id}/artifacts/recon-0000.png"))
        .await;
    assert_eq!(png.status, StatusCode::OK);
    assert_eq!(png.headers["content-type"], "image/png");
    assert_eq!(&png.body[..], b"\x89PNG fake");
    assert_eq!(png.headers["x-content-type-options"], "nosniff");
    let log = app
        .get(&format!("/api/v1/runs/{id}/artifacts/log.txt"))
        .await;
    assert_eq!(log.status, StatusCode::OK);
    let lines: Vec<Value> = log
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["epoch"], 1);
    assert_eq!(lines[1]["test_acc1"], 55.5);
    assert_eq!(lines[0]["train_loss"], 0.9);
}

#[tokio::test]
async fn queue_and_workers_show_positions_and_the_busy_worker() {
    let app = spawn().await;
    let first = app.create_run(&tiny_config()).await;
    let second = app.create_run(&tiny_config()).await;
    let q = app.get("/api/v1/queue").await.json();
    let queued = q["queued"].as_array().unwrap();
    assert_eq!(queued.len(), 2);
    assert_eq!(queued[0]["run_id"], first.to_string());
    assert_eq!(queued[0]["position"], 1);
    assert_eq!(queued[1]["run_id"], second.to_string());
    assert_eq!(queued[1]["position"], 2);
    assert_eq!(
        app.get(&format!("/api/v1/runs/{second}")).await.json()["queue_position"],
        2
    );
    work_one(&app.db.pool, &[(1.0, None)], true).await;
    let q = app.get("/api/v1/queue").await.json();
    assert_eq!(q["queued"][0]["run_id"], second.to_string());
    assert_eq!(q["queued"][0]["position"], 1);
    let workers = app.get("/api/v1/workers").await.json();
    assert_eq!(workers[0]["name"], "sim-worker");
    assert_eq!(workers[0]["state"], "idle");
}

#[tokio::test]
async fn cancel_then_retry_then_cancel_again() {
    let app = spawn().await;
    let id = app.create_run(&tiny_config()).await;
    let a = app.post_empty(&format!("/api/v1/runs/{id}/cancel")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json()["outcome"], "cancelled");
    assert_eq!(a.json()["run"]["status"], "cancelled");
    let again = app.post_empty(&format!("/api/v1/runs/{id}/cancel")).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let r = app.post_empty(&format!("/api/v1/runs/{id}/retry")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["status"], "queued");
    let c = app.post_empty(&format!("/api/v1/runs/{id}/cancel")).await;
    assert_eq!(c.status, StatusCode::OK);
}

#[tokio::test]
async fn events_stream_the_history_then_end_with_the_final_status() {
    let app = spawn().await;
    let id = app.create_run(&tiny_config()).await;
    work_one(&app.db.pool, &[(0.9, None), (0.8, None)], true).await;
    let a = app.get(&format!("/api/v1/runs/{id}/events")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(
        a.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = a.text();
    assert_eq!(text.matches("event: epoch").count(), 2, "{text}");
    assert!(text.contains("\"status\":\"succeeded\""), "{text}");
    // Resuming after epoch 0 sends only epoch 1.
    let resumed = app
        .send(
            Request::get(format!("/api/v1/runs/{id}/events"))
                .header("last-event-id", "0")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .text();
    assert_eq!(resumed.matches("event: epoch").count(), 1, "{resumed}");
    assert!(resumed.contains("id: 1"), "{resumed}");
}

#[tokio::test]
async fn every_documented_route_is_routed_and_every_api_route_documented() {
    let app = spawn().await;
    let doc = app.get("/api/v1/openapi.json").await;
    assert_eq!(doc.status, StatusCode::OK);
    let doc = doc.json();
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    let mut documented = 0;
    for (path, item) in paths {
        for (method, _) in item.as_object().unwrap() {
            documented += 1;
            let uri = path
                .replace("{run_id}", &uuid::Uuid::nil().to_string())
                .replace("{name}", "log.txt");
            let req = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(&uri)
                .body(Body::empty())
                .unwrap();
            let a = app.send(req).await;
            assert_ne!(a.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert!(
                !a.text().contains("no API endpoint"),
                "{method} {path} is not routed"
            );
        }
    }
    assert_eq!(documented, maelab_server::http::api::all_routes().count());
    // And every route in the table is in the document.
    for r in maelab_server::http::api::all_routes() {
        assert!(
            paths[r.path][r.verb.as_str()].is_object(),
            "{} missing",
            r.path
        );
    }
}
