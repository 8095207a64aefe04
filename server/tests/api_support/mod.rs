//! Shared by the api_*, auth_* and cli_* tests: a fresh migrated database per
//! test, the app around it (for `oneshot`), a token, and row counts to prove
//! that refused requests wrote nothing. Its simulated worker
//! ([`register_worker`], [`work_one`]) serves the e2e_* and study tests too.
#![allow(dead_code)]

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use maelab_core::artifact_store::testing::TempStore;
use maelab_core::db::metrics::EpochRecord;
use maelab_core::db::testing::TestDb;
use maelab_server::auth::tokens;
use maelab_server::http::{AppState, app};
use maelab_server::settings::ServeSettings;
use serde_json::{Value, json};
use tower::ServiceExt;

pub struct TestApp {
    pub db: TestDb,
    pub app: Router,
    /// A valid bearer secret.
    pub token: String,
    /// The app's artifact store (a temporary folder), published in the
    /// database as `maelab serve` does.
    pub store: TempStore,
}

/// A temporary artifact store, published for workers as the server does.
pub async fn test_store(db: &TestDb) -> TempStore {
    let store = TempStore::new().expect("artifact store");
    maelab_core::db::artifacts::publish_store_url(&db.pool, store.url())
        .await
        .expect("publish the store");
    store
}

pub async fn spawn_with(settings: ServeSettings) -> TestApp {
    let db = TestDb::new().await.expect("test database");
    let (token, _) = tokens::create(&db.pool, "test").await.expect("token");
    let store = test_store(&db).await;
    let app = app(AppState::new(
        db.pool.clone(),
        settings,
        store.store.clone(),
    ));
    TestApp {
        db,
        app,
        token,
        store,
    }
}

pub async fn spawn() -> TestApp {
    spawn_with(ServeSettings::default()).await
}

/// Like [`spawn`], with the LISTEN hub running as `maelab serve` runs it;
/// returns once it listens.
pub async fn spawn_listening() -> TestApp {
    use maelab_server::live::LiveEvent;
    let db = TestDb::new().await.expect("test database");
    let (token, _) = tokens::create(&db.pool, "test").await.expect("token");
    let store = test_store(&db).await;
    let state = AppState::new(
        db.pool.clone(),
        ServeSettings::default(),
        store.store.clone(),
    );
    // The hub announces that it listens with a resync.
    let mut hub = state.live.subscribe();
    state.live.spawn_listener(db.pool.clone());
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(5), hub.recv()).await {
            Ok(Ok(LiveEvent::Resync)) => break,
            Ok(_) => continue,
            Err(_) => panic!("the hub did not start listening"),
        }
    }
    let app = app(state);
    TestApp {
        db,
        app,
        token,
        store,
    }
}

/// An answer, read whole.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl TestApp {
    pub async fn send(&self, req: Request<Body>) -> Answer {
        let res = self.app.clone().oneshot(req).await.expect("infallible");
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.expect("body").to_bytes();
        Answer {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, uri: &str) -> Answer {
        self.send(Request::get(uri).body(Body::empty()).unwrap())
            .await
    }

    /// POST a JSON body with the test token.
    pub async fn post_json(&self, uri: &str, body: &Value) -> Answer {
        self.send(
            Request::post(uri)
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {}", self.token))
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
    }

    /// POST with the test token and no body.
    pub async fn post_empty(&self, uri: &str) -> Answer {
        self.send(
            Request::post(uri)
                .header("authorization", format!("Bearer {}", self.token))
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }

    /// Rows in every table a request could write to.
    pub async fn counts(&self) -> Vec<(&'static str, i64)> {
        let mut out = Vec::new();
        for table in [
            "run",
            "job",
            "epoch_metric",
            "step_metric",
            "artifact",
            "api_token",
            "worker",
        ] {
            let n: i64 = sqlx::query_scalar(&format!("select count(*) from {table}"))
                .fetch_one(&self.db.pool)
                .await
                .expect("count");
            out.push((table, n));
        }
        out
    }

    /// Create a run through the API; returns its id.
    pub async fn create_run(&self, config: &Value) -> uuid::Uuid {
        let a = self.post_json("/api/v1/runs", config).await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
        a.json()["run_id"].as_str().unwrap().parse().unwrap()
    }
}

/// A small valid pretrain config.
pub fn tiny_config() -> Value {
    json!({
        "name": "tiny",
        "kind": "pretrain",
        "model": "mae",
        "preset": "vit-micro/4",
        "epochs": 2,
        "warmup_epochs": 1,
        "tags": ["smoke"],
    })
}

/// Register a CPU worker named `name` on `host`, as `maelab-worker run` does
/// when it starts; returns its id, to claim jobs with.
pub async fn register_worker(pool: &sqlx::PgPool, name: &str, host: &str) -> uuid::Uuid {
    use maelab_core::db::workers::{self, WorkerInfo};
    workers::register(
        pool,
        &WorkerInfo {
            name: name.into(),
            host: host.into(),
            device: "cpu".into(),
            gpu_name: None,
            torch_version: "none".into(),
            pid: None,
        },
    )
    .await
    .expect("register")
}

/// What a simulated worker reports for one epoch: (train loss, test top-1).
pub type EpochSpec = (f64, Option<f64>);

/// The epoch row a simulated worker writes for `epoch`: `loss`, and with a
/// top-1 `acc1` the test loss and top-5 of a finetune.
pub fn sim_epoch(epoch: i32, (loss, acc1): EpochSpec) -> EpochRecord {
    EpochRecord {
        epoch,
        train_lr: 1e-3,
        train_loss: loss,
        test_loss: acc1.map(|_| 1.0),
        test_acc1: acc1,
        test_acc5: acc1.map(|a| (a + 20.0).min(100.0)),
        n_parameters: Some(1000),
        psnr: None,
        hf_ratio: None,
        epoch_seconds: 1.5,
        images_per_second: Some(1000.0),
        extra: json!({}),
    }
}

/// Register a simulated worker and claim the next queued job: its lease.
pub async fn claim_one(pool: &sqlx::PgPool) -> maelab_core::db::queue::Lease {
    let worker = register_worker(pool, "sim-worker", "test-host").await;
    maelab_core::db::queue::claim_next(pool, worker, std::time::Duration::from_secs(60))
        .await
        .expect("claim")
        .expect("a queued job")
        .lease
}

/// Act as a worker would, through the queue's fenced writes: register, claim
/// the next job, write `epochs` (and a step per epoch and one reconstruction),
/// then complete it (`succeed`) or fail it. Returns the claimed run id.
pub async fn work_one(pool: &sqlx::PgPool, epochs: &[EpochSpec], succeed: bool) -> uuid::Uuid {
    use maelab_core::db::artifacts::{NewArtifact, put_artifact};
    use maelab_core::db::metrics::{StepRecord, record_epoch, record_step};
    use maelab_core::db::queue;
    let lease = claim_one(pool).await;
    for (i, (loss, acc1)) in epochs.iter().enumerate() {
        let epoch = i32::try_from(i).unwrap();
        record_step(
            pool,
            &lease,
            &StepRecord {
                epoch,
                step: epoch * 10 + 5,
                progress: 0.5,
                train_loss: loss + 0.1,
                lr: 1e-3,
                images_per_second: Some(900.0),
            },
        )
        .await
        .expect("step");
        record_epoch(pool, &lease, &sim_epoch(epoch, (*loss, *acc1)))
            .await
            .expect("epoch");
    }
    put_artifact(
        pool,
        &lease,
        &NewArtifact {
            kind: "reconstruction",
            epoch: Some(0),
            name: "recon-0000.png",
            media_type: "image/png",
            bytes: b"\x89PNG fake",
        },
    )
    .await
    .expect("artifact");
    if succeed {
        queue::complete(pool, &lease).await.expect("complete");
    } else {
        queue::fail(pool, &lease, "loss went NaN")
            .await
            .expect("fail");
    }
    lease.run_id.expect("a run")
}
