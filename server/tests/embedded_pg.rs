//! The embedded PostgreSQL default: starts, serves, stops, restarts on the same
//! data folder with its data intact, copes with a stale pid file; /healthz
//! answers 503 when the database is gone. It is private: another account on
//! the host can neither connect nor read its password, and a cluster made the
//! old way (trust) is upgraded in place, once.

mod embedded_pg_support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use embedded_pg_support::{DataDir, OtherAccount, old_trust_cluster, stop_cluster, text};
use maelab_server::embedded_pg::{EmbeddedPostgres, PASSWORD_FILE, PORT_FILE};
use maelab_server::http::{AppState, app};
use maelab_server::serve::Server;
use maelab_server::settings::ServeSettings;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use tower::ServiceExt;

const BIN: &str = env!("CARGO_BIN_EXE_maelab");

async fn healthz(pool: sqlx::PgPool) -> StatusCode {
    let store = maelab_core::artifact_store::testing::TempStore::new().expect("store");
    let state = AppState::new(pool, ServeSettings::default(), store.store.clone());
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

fn port_of(url: &str) -> u16 {
    url.parse::<PgConnectOptions>().expect("url").get_port()
}

/// Connection options to the embedded cluster with no password at all.
fn without_password(port: u16) -> PgConnectOptions {
    PgConnectOptions::new_without_pgpass()
        .host("127.0.0.1")
        .port(port)
        .username("maelab")
        .database("maelab")
}

/// Mode bits and owner of `path`.
fn mode_and_owner(path: &Path) -> (u32, u32) {
    let meta = std::fs::metadata(path).expect("metadata");
    (meta.mode() & 0o777, meta.uid())
}

/// Rules in pg_hba.conf that let a connection in without scram-sha-256.
async fn loose_rules(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "select count(*) from pg_hba_file_rules \
         where error is not null or auth_method <> 'scram-sha-256'",
    )
    .fetch_one(pool)
    .await
    .expect("pg_hba_file_rules")
}

/// The role's stored verifier (a fresh ALTER ROLE … PASSWORD salts anew).
async fn verifier(pool: &sqlx::PgPool) -> String {
    sqlx::query_scalar("select rolpassword from pg_authid where rolname = 'maelab'")
        .fetch_one(pool)
        .await
        .expect("pg_authid")
}

/// `maelab token list` on the embedded cluster of `dir`: no URL, no password typed.
fn token_list(dir: &Path) -> std::process::Output {
    Command::new(BIN)
        .args(["token", "list", "--data-dir"])
        .arg(dir)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .output()
        .expect("maelab token list")
}

#[tokio::test]
async fn starts_stops_restarts_and_survives_a_stale_pid_file() {
    let dir = DataDir::new();

    // First start: initdb, start, create the database, migrate.
    let pg = EmbeddedPostgres::start(&dir.0).await.expect("first start");
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
    let hba = dir.cluster().join("pg_hba.conf");
    let hba_before = std::fs::read(&hba).expect("pg_hba.conf");
    let password_before = std::fs::read(dir.0.join(PASSWORD_FILE)).expect("password file");

    // The database going away turns /healthz into a 503, not a panic.
    pool.close().await;
    let first_url = pg.url();
    let first_port = pg.port();
    pg.stop().expect("stop");
    let lazy = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_millis(500))
        .connect_lazy(&first_url)
        .expect("lazy pool");
    assert_eq!(healthz(lazy).await, StatusCode::SERVICE_UNAVAILABLE);

    // A pid file left by a crash, naming a live process that is not postgres.
    let cluster = dir.cluster();
    std::fs::write(
        cluster.join("postmaster.pid"),
        format!(
            "{}\n{}\n0\n{first_port}\n",
            std::process::id(),
            cluster.display()
        ),
    )
    .expect("stale pid file");

    // Restart on the same folder: the data is still there, the password, the
    // rules and the port (so URLs handed out before still work) unchanged.
    let pg = EmbeddedPostgres::start(&dir.0).await.expect("restart");
    assert_eq!(pg.port(), first_port, "a restart takes its free port again");
    let pool = maelab_core::db::connect(&pg.url(), 2)
        .await
        .expect("reconnect");
    let kept: i64 = sqlx::query_scalar("select count(*) from api_token where name = 'kept'")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(kept, 1);
    assert_eq!(std::fs::read(&hba).expect("pg_hba.conf"), hba_before);
    assert_eq!(
        std::fs::read(dir.0.join(PASSWORD_FILE)).expect("password file"),
        password_before
    );

    // A second start while it runs reuses the running cluster.
    let again = EmbeddedPostgres::start(&dir.0).await.expect("reuse");
    assert_eq!(again.port(), pg.port());
    drop(again); // did not start it, so does not stop it
    assert_eq!(healthz(pool.clone()).await, StatusCode::OK);

    pool.close().await;
    pg.stop().expect("final stop");
    assert!(!cluster.join("postmaster.pid").exists(), "stopped cleanly");
}

#[tokio::test]
async fn a_restart_whose_port_is_taken_moves_to_another() {
    let dir = DataDir::new();
    let pg = EmbeddedPostgres::start(&dir.0).await.expect("first start");
    let first_port = pg.port();
    let remembered = std::fs::read_to_string(dir.0.join(PORT_FILE)).expect("port file");
    assert_eq!(remembered.trim(), first_port.to_string());
    pg.stop().expect("stop");

    // Another program listens there now.
    let squatter = std::net::TcpListener::bind(("127.0.0.1", first_port)).expect("take the port");
    let pg = EmbeddedPostgres::start(&dir.0).await.expect("restart");
    assert_ne!(pg.port(), first_port);
    let pool = maelab_core::db::connect(&pg.url(), 1)
        .await
        .expect("reachable on its new port");
    assert_eq!(healthz(pool.clone()).await, StatusCode::OK);
    let remembered = std::fs::read_to_string(dir.0.join(PORT_FILE)).expect("port file");
    assert_eq!(
        remembered.trim(),
        pg.port().to_string(),
        "the new port is remembered"
    );
    drop(squatter);
    pool.close().await;
    pg.stop().expect("final stop");
}

#[tokio::test]
async fn another_account_can_neither_connect_nor_read_the_password() {
    let dir = DataDir::new();
    let settings = ServeSettings {
        bind: "127.0.0.1:0".parse().expect("bind"),
        data_dir: dir.0.clone(),
        ..ServeSettings::default()
    };
    let server = Server::build(settings)
        .await
        .expect("serve on an embedded cluster");
    let url = server.database_url().expect("an embedded cluster");
    let port = port_of(&url);
    let other = OtherAccount::create();

    // The secret's files are 0600 and belong to the account running maelab;
    // the cluster's folder is 0700.
    let me = nix::unistd::geteuid().as_raw();
    let url_file = dir.0.join("database-url");
    let password_file = dir.0.join(PASSWORD_FILE);
    assert_eq!(mode_and_owner(&url_file), (0o600, me));
    assert_eq!(mode_and_owner(&password_file), (0o600, me));
    assert_eq!(mode_and_owner(&dir.cluster()).0, 0o700);
    let password = std::fs::read_to_string(&password_file).expect("owner reads the password");
    let password = password.trim();
    assert!(password.len() >= 43, "32 random bytes or more, URL-safe");
    assert_eq!(
        std::fs::read_to_string(&url_file)
            .expect("owner reads the URL")
            .trim(),
        url
    );
    assert!(url.contains(password), "the URL carries the password");
    for path in [
        &url_file,
        &password_file,
        &dir.cluster().join("pg_hba.conf"),
    ] {
        let out = other.run(Path::new("/bin/cat"), &[&path.display().to_string()], &[]);
        assert!(
            !out.status.success() && text(&out).contains("Permission denied"),
            "{} is readable by another account: {}",
            path.display(),
            text(&out)
        );
    }

    // TCP on the known port: no password, a wrong one, a near miss, another role.
    let tcp = format!("host=127.0.0.1 port={port} user=maelab dbname=maelab");
    let near_miss = &password[..password.len() - 1];
    let attempts = [
        (tcp.clone(), vec![]),
        (tcp.clone(), vec![("PGPASSWORD", "wrong")]),
        (tcp.clone(), vec![("PGPASSWORD", near_miss)]),
        (
            format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
            vec![],
        ),
    ];
    for (conninfo, env) in &attempts {
        let out = other.psql(conninfo, env);
        assert!(
            !out.status.success() && text(&out).contains("password"),
            "{conninfo} {env:?} was not refused for want of the password: {}",
            text(&out)
        );
    }
    for options in [
        without_password(port),
        without_password(port).password("wrong"),
    ] {
        let err = PgConnection::connect_with(&options)
            .await
            .expect_err("sqlx without the password");
        assert!(err.to_string().contains("password"), "{err}");
    }

    // No Unix socket anywhere: none configured, none in the usual folders.
    let pool = maelab_core::db::connect(&url, 1)
        .await
        .expect("owner connects");
    let sockets: String = sqlx::query_scalar("show unix_socket_directories")
        .fetch_one(&pool)
        .await
        .expect("show");
    assert_eq!(sockets, "");
    assert_eq!(loose_rules(&pool).await, 0);
    pool.close().await;
    let socket_dirs = [
        "/var/run/postgresql".into(),
        "/tmp".into(),
        dir.0.display().to_string(),
        dir.cluster().display().to_string(),
    ];
    for socket_dir in &socket_dirs {
        let socket = Path::new(socket_dir).join(format!(".s.PGSQL.{port}"));
        assert!(!socket.exists(), "{} exists", socket.display());
        let conninfo = format!("host={socket_dir} port={port} user=maelab dbname=maelab");
        let out = other.psql(&conninfo, &[]);
        assert!(!out.status.success(), "{conninfo}: {}", text(&out));
    }

    // The password is all it takes (so the refusals above are its doing).
    let out = other.psql(&tcp, &[("PGPASSWORD", password)]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "maelab");

    // The owner's CLI finds the password by itself, on the running cluster.
    let out = token_list(&dir.0);
    assert!(out.status.success(), "maelab token list: {}", text(&out));

    drop(server); // stops the cluster
}

#[tokio::test]
async fn an_old_trust_cluster_is_upgraded_in_place_once_and_keeps_its_runs() {
    let dir = DataDir::new();
    let (port, runs) = old_trust_cluster(&dir, 2).await;
    let other = OtherAccount::create();
    let tcp = format!("host=127.0.0.1 port={port} user=maelab dbname=maelab");

    // The hole: any account on the host gets in without a password.
    let out = other.psql(&tcp, &[]);
    assert!(out.status.success(), "trust lets anyone in: {}", text(&out));

    // The next start (here while the old server still runs) upgrades it.
    let pg = EmbeddedPostgres::start(&dir.0)
        .await
        .expect("start upgrades");
    assert_eq!(pg.port(), port, "reused the running cluster");
    let out = other.psql(&tcp, &[]);
    assert!(
        !out.status.success() && text(&out).contains("password"),
        "still open after the upgrade: {}",
        text(&out)
    );
    let err = PgConnection::connect_with(&without_password(port))
        .await
        .expect_err("no password");
    assert!(err.to_string().contains("password"), "{err}");

    let pool = maelab_core::db::connect(&pg.url(), 2)
        .await
        .expect("connect with the password");
    for run_id in &runs {
        let run = maelab_core::db::runs::get_run(&pool, *run_id)
            .await
            .expect("get run");
        assert!(run.is_some(), "run {run_id} survived the upgrade");
    }
    assert_eq!(loose_rules(&pool).await, 0);
    let verifier_before = verifier(&pool).await;
    assert!(
        verifier_before.starts_with("SCRAM-SHA-256$"),
        "{verifier_before}"
    );
    let me = nix::unistd::geteuid().as_raw();
    let password_file = dir.0.join(PASSWORD_FILE);
    assert_eq!(mode_and_owner(&password_file), (0o600, me));
    let hba = dir.cluster().join("pg_hba.conf");
    let hba_before = std::fs::read(&hba).expect("pg_hba.conf");
    let hba_mtime = std::fs::metadata(&hba)
        .expect("hba")
        .modified()
        .expect("mtime");
    let password_before = std::fs::read(&password_file).expect("password");
    pool.close().await;
    drop(pg); // reused, so it leaves the cluster running
    stop_cluster(&dir);

    // The CLI starts it by itself with the saved password.
    let out = token_list(&dir.0);
    assert!(out.status.success(), "maelab token list: {}", text(&out));

    // A second start changes nothing: same rules, same file, same verifier.
    let pg = EmbeddedPostgres::start(&dir.0).await.expect("second start");
    let pool = maelab_core::db::connect(&pg.url(), 2)
        .await
        .expect("reconnect");
    assert_eq!(std::fs::read(&hba).expect("pg_hba.conf"), hba_before);
    assert_eq!(
        std::fs::metadata(&hba)
            .expect("hba")
            .modified()
            .expect("mtime"),
        hba_mtime,
        "pg_hba.conf rewritten again"
    );
    assert_eq!(
        std::fs::read(&password_file).expect("password"),
        password_before
    );
    assert_eq!(verifier(&pool).await, verifier_before, "password set again");
    let kept: i64 = sqlx::query_scalar("select count(*) from run")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(kept, 2);
    pool.close().await;
    pg.stop().expect("stop");
}
