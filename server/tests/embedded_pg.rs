//! The embedded PostgreSQL default: starts, serves, stops, restarts on the same
//! data folder with its data intact, copes with a stale pid file; /healthz
//! answers 503 when the database is gone.

use std::path::PathBuf;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use maelab_server::embedded_pg::EmbeddedPostgres;
use maelab_server::http::{AppState, app};
use maelab_server::settings::ServeSettings;
use tower::ServiceExt;

fn data_dir() -> PathBuf {
    // Under /tmp with the default umask, so the `postgres` user can reach it.
    let dir =
        std::env::temp_dir().join(format!("maelab-embedded-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("data dir");
    dir
}

async fn healthz(pool: sqlx::PgPool) -> StatusCode {
    let state = AppState::new(pool, ServeSettings::default());
    let response = app(state)
        .oneshot(
            Request::get("/healthz")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("response");
    response.status()
}

#[tokio::test]
async fn starts_stops_restarts_and_survives_a_stale_pid_file() {
    let dir = data_dir();

    // First start: initdb, start, create the database, migrate.
    let pg = EmbeddedPostgres::start(&dir).await.expect("first start");
    let pool = maelab_core::db::connect(&pg.url(), 2)
        .await
        .expect("connect");
    maelab_core::db::migrate(&pool).await.expect("migrate");
    assert_eq!(healthz(pool.clone()).await, StatusCode::OK);
    sqlx::query(
        "insert into api_token (name, token_hash, prefix) values ('kept', repeat('a', 64), 'a')",
    )
    .execute(&pool)
    .await
    .expect("insert");

    // The database going away turns /healthz into a 503, not a panic.
    pool.close().await;
    let first_port = pg.port();
    pg.stop().expect("stop");
    let lazy = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_millis(500))
        .connect_lazy(&format!("postgres://maelab@127.0.0.1:{first_port}/maelab"))
        .expect("lazy pool");
    assert_eq!(healthz(lazy).await, StatusCode::SERVICE_UNAVAILABLE);

    // A pid file left by a crash, naming a live process that is not postgres.
    let cluster = dir.join("postgres");
    std::fs::write(
        cluster.join("postmaster.pid"),
        format!(
            "{}\n{}\n0\n{first_port}\n",
            std::process::id(),
            cluster.display()
        ),
    )
    .expect("stale pid file");

    // Restart on the same folder: the data is still there.
    let pg = EmbeddedPostgres::start(&dir).await.expect("restart");
    let pool = maelab_core::db::connect(&pg.url(), 2)
        .await
        .expect("reconnect");
    let kept: i64 = sqlx::query_scalar("select count(*) from api_token where name = 'kept'")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(kept, 1);

    // A second start while it runs reuses the running cluster.
    let again = EmbeddedPostgres::start(&dir).await.expect("reuse");
    assert_eq!(again.port(), pg.port());
    drop(again); // did not start it, so does not stop it
    assert_eq!(healthz(pool.clone()).await, StatusCode::OK);

    pool.close().await;
    pg.stop().expect("final stop");
    assert!(!cluster.join("postmaster.pid").exists(), "stopped cleanly");
    let _ = std::fs::remove_dir_all(&dir);
}
