//! Artifacts through the store (issue 13): uploads streamed into it, downloads
//! streamed out with Range and HEAD, a corrupt object never served whole,
//! rows from before the store served in place and then moved.

mod api_support;

use api_support::{TestApp, spawn};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use maelab_core::artifact_store::migrate;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tower::ServiceExt;

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 253) as u8).collect()
}

async fn external_run(app: &TestApp) -> String {
    let a = app
        .post_json("/api/v1/runs/external", &json!({"name": "store"}))
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    a.json()["run_id"].as_str().expect("id").to_string()
}

async fn put(
    app: &TestApp,
    id: &str,
    name: &str,
    bytes: Vec<u8>,
    declared: &str,
) -> (StatusCode, Value) {
    let req = Request::put(format!(
        "/api/v1/runs/{id}/artifacts/{name}?kind=checkpoint&epoch=0&sha256={declared}"
    ))
    .header("content-type", "application/octet-stream")
    .header("authorization", format!("Bearer {}", app.token))
    .body(Body::from(bytes))
    .expect("request");
    let a = app.send(req).await;
    (
        a.status,
        serde_json::from_slice(&a.body).unwrap_or(Value::Null),
    )
}

async fn get_with(
    app: &TestApp,
    method: Method,
    uri: &str,
    range: Option<&str>,
) -> api_support::Answer {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(r) = range {
        req = req.header("range", r);
    }
    app.send(req.body(Body::empty()).expect("request")).await
}

#[tokio::test]
async fn uploads_stream_into_the_store_and_download_with_ranges_and_head() {
    let app = spawn().await;
    let id = external_run(&app).await;
    let data = pattern(3 * 1024 * 1024 + 17);
    let (status, wrong) = put(&app, &id, "ckpt.bin", data.clone(), &sha(b"other")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{wrong}");
    assert_eq!(wrong["field"], "sha256");
    assert_eq!(app.store.object_count(), 0, "a mismatch stores nothing");

    let (status, art) = put(&app, &id, "ckpt.bin", data.clone(), &sha(&data)).await;
    assert_eq!(status, StatusCode::CREATED, "{art}");
    assert_eq!(art["size_bytes"], data.len());
    let (key, inline): (Option<String>, Option<Vec<u8>>) =
        sqlx::query_as("select store_key, bytes from artifact where name = 'ckpt.bin'")
            .fetch_one(&app.db.pool)
            .await
            .expect("row");
    assert!(inline.is_none(), "no bytes in the database");
    let key = key.expect("store key");
    assert!(key.starts_with(&format!("runs/{id}/")), "{key}");
    assert_eq!(app.store.object_count(), 1);

    let uri = format!("/api/v1/runs/{id}/artifacts/ckpt.bin");
    let whole = app.get(&uri).await;
    assert_eq!(whole.status, StatusCode::OK);
    assert_eq!(whole.headers["accept-ranges"], "bytes");
    assert_eq!(
        whole.headers["content-length"],
        data.len().to_string().as_str()
    );
    assert_eq!(
        whole.headers["etag"],
        format!("\"{}\"", sha(&data)).as_str()
    );
    assert_eq!(&whole.body[..], &data[..]);

    let part = get_with(&app, Method::GET, &uri, Some("bytes=100-199")).await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        part.headers["content-range"],
        format!("bytes 100-199/{}", data.len()).as_str()
    );
    assert_eq!(&part.body[..], &data[100..200]);
    let tail = get_with(&app, Method::GET, &uri, Some("bytes=-5")).await;
    assert_eq!(&tail.body[..], &data[data.len() - 5..]);
    let past = get_with(
        &app,
        Method::GET,
        &uri,
        Some(&format!("bytes={}-", data.len())),
    )
    .await;
    assert_eq!(past.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        past.headers["content-range"],
        format!("bytes */{}", data.len()).as_str()
    );
    let head = get_with(&app, Method::HEAD, &uri, None).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(
        head.headers["content-length"],
        data.len().to_string().as_str()
    );
    assert!(head.body.is_empty());

    // A second upload under the name replaces the object, not adds one.
    let again = pattern(1000);
    let (status, _) = put(&app, &id, "ckpt.bin", again.clone(), &sha(&again)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        app.store.object_count(),
        1,
        "the replaced object is deleted"
    );
    assert_eq!(&app.get(&uri).await.body[..], &again[..]);
}

#[tokio::test]
async fn a_corrupt_object_is_refused_whole_and_by_range() {
    let app = spawn().await;
    let id = external_run(&app).await;
    let data = pattern(2 * 1024 * 1024 + 3);
    let (status, _) = put(&app, &id, "ckpt.bin", data.clone(), &sha(&data)).await;
    assert_eq!(status, StatusCode::CREATED);
    let key: String = sqlx::query_scalar("select store_key from artifact where name = 'ckpt.bin'")
        .fetch_one(&app.db.pool)
        .await
        .expect("key");
    let path = app.store.local_path(&key).expect("path");
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[data.len() - 10] ^= 0xff;
    std::fs::write(&path, bytes).expect("flip");

    let uri = format!("/api/v1/runs/{id}/artifacts/ckpt.bin");
    let res = app
        .app
        .clone()
        .oneshot(Request::get(&uri).body(Body::empty()).expect("request"))
        .await
        .expect("response");
    assert!(
        res.into_body().collect().await.is_err(),
        "the body ends in an error, never a complete file"
    );
    let ranged = get_with(&app, Method::GET, &uri, Some("bytes=0-9")).await;
    assert_eq!(ranged.status, StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn rows_from_before_the_store_are_served_then_moved() {
    let app = spawn().await;
    let id = external_run(&app).await;
    let data = pattern(5000);
    sqlx::query(
        "insert into artifact (run_id, kind, epoch, name, media_type, bytes, sha256, size_bytes)
         values ($1::uuid, 'file', null, 'old.bin', 'application/octet-stream', $2, $3, $4)",
    )
    .bind(&id)
    .bind(&data)
    .bind(sha(&data))
    .bind(data.len() as i64)
    .execute(&app.db.pool)
    .await
    .expect("legacy row");
    let uri = format!("/api/v1/runs/{id}/artifacts/old.bin");
    let before = app.get(&uri).await;
    assert_eq!(before.status, StatusCode::OK);
    assert_eq!(&before.body[..], &data[..]);
    let part = get_with(&app, Method::GET, &uri, Some("bytes=10-19")).await;
    assert_eq!(&part.body[..], &data[10..20]);

    let moved = migrate::move_inline(&app.db.pool, &app.store, 10, None)
        .await
        .expect("migrate");
    assert_eq!((moved.moved, moved.left), (1, 0));
    assert_eq!(app.store.object_count(), 1);
    let after = app.get(&uri).await;
    assert_eq!(after.status, StatusCode::OK);
    assert_eq!(&after.body[..], &data[..]);
}
