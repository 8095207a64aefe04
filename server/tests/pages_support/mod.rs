//! Shared by the pages_* and e2e_* tests: a fresh database, the app around
//! it, and rows written the way a worker writes them.
#![allow(dead_code)]

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use maelab_core::config::{RunConfig, RunConfigInput, RunKind};
use maelab_core::db::runs;
use maelab_core::db::testing::TestDb;
use maelab_server::http::{AppState, app};
use maelab_server::settings::ServeSettings;
use tower::ServiceExt;
use uuid::Uuid;

pub struct Pages {
    pub db: TestDb,
    pub state: AppState,
    pub app: Router,
    /// A valid access token's secret (to sign a browser in).
    pub token: String,
    /// `Cookie` header of a signed-in browser, and its CSRF value.
    pub cookie: String,
    pub csrf: String,
    /// The app's artifact store (a temporary folder).
    pub store: maelab_core::artifact_store::testing::TempStore,
}

pub async fn spawn() -> Pages {
    spawn_with(ServeSettings::default()).await
}

pub async fn spawn_with(settings: ServeSettings) -> Pages {
    let db = TestDb::new().await.expect("test database");
    let (token, _) = maelab_server::auth::tokens::create(&db.pool, "pages-test")
        .await
        .expect("token");
    let store = maelab_core::artifact_store::testing::TempStore::new().expect("store");
    maelab_core::db::artifacts::publish_store_url(&db.pool, store.url())
        .await
        .expect("publish the store");
    let state = AppState::new(db.pool.clone(), settings, store.store.clone());
    let app = app(state.clone());
    let mut p = Pages {
        db,
        state,
        app,
        token,
        cookie: String::new(),
        csrf: String::new(),
        store,
    };
    let a = p
        .send(
            Request::post("/signin")
                .header("content-type", "application/x-www-form-urlencoded")
                .header("sec-fetch-site", "same-origin")
                .body(Body::from(format!("token={}&next=%2Fruns", p.token)))
                .expect("request"),
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "sign-in: {}", a.text());
    let cookies: Vec<String> = a
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|c| c.split(';').next())
        .map(str::to_string)
        .collect();
    p.csrf = cookies
        .iter()
        .find_map(|c| c.strip_prefix("maelab_csrf="))
        .expect("csrf cookie")
        .to_string();
    p.cookie = cookies.join("; ");
    p
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    }
}

impl Pages {
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
        self.send(Request::get(uri).body(Body::empty()).expect("request"))
            .await
    }

    /// A form post from a signed-in browser on our own page.
    pub async fn post_form(&self, uri: &str, fields: &[(&str, &str)]) -> Answer {
        let mut all = vec![("csrf_token", self.csrf.as_str())];
        all.extend_from_slice(fields);
        self.post_raw(uri, &all, Some(&self.cookie), "same-origin")
            .await
    }

    /// A form post with exactly these fields, cookie and `Sec-Fetch-Site`.
    pub async fn post_raw(
        &self,
        uri: &str,
        fields: &[(&str, &str)],
        cookie: Option<&str>,
        site: &str,
    ) -> Answer {
        let body = serde_urlencoded::to_string(fields).expect("form");
        let mut req = Request::post(uri)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("sec-fetch-site", site);
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        self.send(req.body(Body::from(body)).expect("request"))
            .await
    }

    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("select count(*) from {table}"))
            .fetch_one(&self.db.pool)
            .await
            .expect("count")
    }

    /// Queue a tiny run through the queue's own `create_run`.
    pub async fn create(&self, name: &str, model: &str, tags: &[&str]) -> Uuid {
        let input = RunConfigInput {
            name: Some(name.to_string()),
            kind: Some(RunKind::Pretrain),
            model: Some(serde_json::from_value(serde_json::json!(model)).expect("model")),
            tags: Some(tags.iter().map(|t| (*t).to_string()).collect()),
            epochs: Some(4),
            warmup_epochs: Some(1.0),
            ..RunConfigInput::default()
        };
        let config = RunConfig::resolve(input).expect("valid config");
        runs::create_run(&self.db.pool, &config, None)
            .await
            .expect("create run")
            .run_id
    }

    /// Mark a run running (as a claim would) without a worker process.
    pub async fn set_running(&self, run_id: Uuid) {
        sqlx::query("update run set status = 'running', started_at = now() where run_id = $1")
            .bind(run_id)
            .execute(&self.db.pool)
            .await
            .expect("running");
    }

    pub async fn epoch(&self, run_id: Uuid, epoch: i32, loss: f64, acc1: Option<f64>) {
        sqlx::query(
            "insert into epoch_metric (run_id, epoch, train_lr, train_loss, test_acc1,
                                       epoch_seconds, images_per_second, psnr)
             values ($1, $2, 1e-4, $3, $4, 10, 1000, 20)",
        )
        .bind(run_id)
        .bind(epoch)
        .bind(loss)
        .bind(acc1)
        .execute(&self.db.pool)
        .await
        .expect("epoch row");
    }

    /// Step rows `from..to` in one statement (one NOTIFY per row, one commit).
    pub async fn steps(&self, run_id: Uuid, epoch: i32, from: i32, to: i32) {
        sqlx::query(
            "insert into step_metric (run_id, epoch, step, progress, train_loss, lr,
                                      images_per_second)
             select $1, $2, s, (s - $3)::float8 / greatest($4 - $3, 1), 1.0 / (1 + s), 1e-4, 900
             from generate_series($3, $4 - 1) s",
        )
        .bind(run_id)
        .bind(epoch)
        .bind(from)
        .bind(to)
        .execute(&self.db.pool)
        .await
        .expect("step rows");
    }

    pub async fn artifact(
        &self,
        run_id: Uuid,
        kind: &str,
        epoch: Option<i32>,
        name: &str,
        media: &str,
        bytes: &[u8],
    ) -> i64 {
        sqlx::query_scalar(
            "insert into artifact (run_id, kind, epoch, name, media_type, bytes, sha256, size_bytes)
             values ($1, $2, $3, $4, $5, $6, $7, $8) returning artifact_id",
        )
        .bind(run_id)
        .bind(kind)
        .bind(epoch)
        .bind(name)
        .bind(media)
        .bind(bytes)
        .bind(maelab_core::db::artifacts::sha256_hex(bytes))
        .bind(i64::try_from(bytes.len()).expect("size"))
        .fetch_one(&self.db.pool)
        .await
        .expect("artifact")
    }
}

/// A valid 1x1 PNG.
pub const PNG_1X1: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0xf0,
    0x1f, 0x00, 0x05, 0x00, 0x01, 0xff, 0x89, 0x99, 0x3d, 0x1d, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

/// A system sample as a GPU worker sends it with a heartbeat: `cpu` %,
/// 1.5 GiB resident, GPU 0 at 97 %, `gpu_used_gib` of 80 GiB, 71 °C, 402.4 W.
pub fn gpu_sample(cpu: f64, gpu_used_gib: i64) -> maelab_core::db::worker_metrics::SystemSample {
    use maelab_core::db::worker_metrics::{GpuSample, SystemSample};
    SystemSample {
        cpu_percent: Some(cpu),
        rss_bytes: Some(3 << 29),
        gpus: vec![GpuSample {
            index: 0,
            name: Some("Fake H100".into()),
            utilization_percent: Some(97.0),
            memory_used_bytes: Some(gpu_used_gib << 30),
            memory_total_bytes: Some(80 << 30),
            temperature_c: Some(71.0),
            power_watts: Some(402.4),
        }],
    }
}

/// Register a worker row as `maelab-worker run` does at start.
pub async fn register_worker(pool: &sqlx::PgPool, name: &str, device: &str) -> Uuid {
    maelab_core::db::workers::register(
        pool,
        &maelab_core::db::workers::WorkerInfo {
            name: name.into(),
            host: "gpu-host".into(),
            device: device.into(),
            gpu_name: None,
            torch_version: "2.11.0".into(),
            pid: None,
        },
    )
    .await
    .expect("register")
}
