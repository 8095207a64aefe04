//! `GET /api/v1/runs/{id}/events` follows the server's LISTEN hub: an epoch
//! row a worker commits reaches an open stream at once (no once-a-second
//! poll), and the stream ends with the run's final status.

mod api_support;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use maelab_core::RunConfig;
use maelab_core::db::metrics::{EpochRecord, record_epoch};
use maelab_core::db::testing::TestDb;
use maelab_core::db::{queue, runs};
use maelab_server::http::{AppState, app};
use maelab_server::live::LiveEvent;
use maelab_server::settings::ServeSettings;
use tower::ServiceExt;

/// Well under the old poll's one second.
const PROMPT: Duration = Duration::from_millis(300);

/// One server-sent event: (event, id, data).
type Sse = (String, String, serde_json::Value);

struct Stream {
    body: Body,
    buf: String,
}

impl Stream {
    /// The next named event; None when the stream ended, panics after `limit`.
    async fn next(&mut self, limit: Duration) -> Option<Sse> {
        let end = Instant::now() + limit;
        loop {
            if let Some(at) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..at + 2).collect();
                let (mut event, mut id, mut data) = (String::new(), String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if event.is_empty() {
                    continue;
                }
                let data = serde_json::from_str(&data).expect("JSON data");
                return Some((event, id, data));
            }
            let left = end.saturating_duration_since(Instant::now());
            let frame = tokio::time::timeout(left, self.body.frame())
                .await
                .unwrap_or_else(|_| panic!("no event within {limit:?}; buffered {:?}", self.buf));
            match frame {
                None => return None,
                Some(frame) => {
                    if let Ok(bytes) = frame.expect("frame").into_data() {
                        self.buf.push_str(&String::from_utf8_lossy(&bytes));
                    }
                }
            }
        }
    }
}

#[tokio::test]
async fn an_epoch_row_reaches_an_open_stream_at_once_and_the_final_status_ends_it() {
    let db = TestDb::new().await.expect("test database");
    let store = maelab_core::artifact_store::testing::TempStore::new().expect("store");
    let state = AppState::new(
        db.pool.clone(),
        ServeSettings::default(),
        store.store.clone(),
    );
    // Start the hub and wait until it LISTENs (it announces itself with a resync).
    let mut hub = state.live.subscribe();
    state.live.spawn_listener(db.pool.clone());
    loop {
        match tokio::time::timeout(Duration::from_secs(5), hub.recv()).await {
            Ok(Ok(LiveEvent::Resync)) => break,
            Ok(_) => continue,
            Err(_) => panic!("the hub did not start listening"),
        }
    }
    drop(hub);
    let router = app(state.clone());

    let config =
        RunConfig::from_toml_str("kind = 'pretrain'\nepochs = 3\nwarmup_epochs = 0").expect("cfg");
    let created = runs::create_run(&db.pool, &config, None)
        .await
        .expect("run");
    let worker = api_support::register_worker(&db.pool, "sim", "test").await;
    let job = queue::claim_next(&db.pool, worker, Duration::from_secs(60))
        .await
        .expect("claim")
        .expect("a job");

    let res = router
        .oneshot(
            Request::get(format!("/api/v1/runs/{}/events", created.run_id))
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible");
    assert_eq!(res.status(), StatusCode::OK);
    let mut stream = Stream {
        body: res.into_body(),
        buf: String::new(),
    };
    let (event, _, data) = stream.next(Duration::from_secs(5)).await.expect("status");
    assert_eq!(
        (event.as_str(), &data["status"]),
        ("status", &"running".into())
    );

    let mut slowest = Duration::ZERO;
    for epoch in 0..3 {
        let row = EpochRecord {
            epoch,
            train_lr: 1e-3,
            train_loss: 1.0 - f64::from(epoch) * 0.1,
            test_loss: None,
            test_acc1: None,
            test_acc5: None,
            n_parameters: Some(1000),
            psnr: None,
            hf_ratio: None,
            epoch_seconds: 1.0,
            images_per_second: Some(100.0),
            extra: serde_json::json!({"attempt": 1}),
        };
        record_epoch(&db.pool, &job.lease, &row)
            .await
            .expect("epoch row");
        let committed = Instant::now();
        let (event, id, data) = stream.next(Duration::from_secs(5)).await.expect("epoch");
        let took = committed.elapsed();
        slowest = slowest.max(took);
        assert_eq!(event, "epoch", "{data}");
        assert_eq!(id, epoch.to_string());
        assert_eq!(data["epoch"], epoch);
        assert_eq!(data["extra"]["attempt"], 1, "the API's row shape: {data}");
        assert!(
            took < PROMPT,
            "epoch {epoch} arrived after {took:?}, not at once"
        );
    }
    println!("slowest epoch commit-to-event: {slowest:?}");

    queue::complete(&db.pool, &job.lease)
        .await
        .expect("complete");
    let (event, _, data) = stream
        .next(Duration::from_secs(5))
        .await
        .expect("final status");
    assert_eq!(
        (event.as_str(), &data["status"]),
        ("status", &"succeeded".into())
    );
    assert!(
        stream.next(Duration::from_secs(5)).await.is_none(),
        "the stream ends after the final status"
    );
}
