//! PostgreSQL restarted mid-run: the worker rides it out (heartbeats and
//! writes retry connection errors, the lease outlasts the restart) and the
//! run completes with every epoch once. Uses a PRIVATE cluster (initdb as the
//! `postgres` user on a free port) so the shared server is never touched.

mod queue_support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use maelab_core::db::testing::TestDb;
use queue_support::*;

/// A throwaway cluster, stopped and removed on drop.
struct PrivateCluster {
    dir: PathBuf,
    port: u16,
}

fn as_postgres(args: &[&str]) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .args(args)
        .output()
        .expect("runuser")
}

impl PrivateCluster {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("port")
            .local_addr()
            .expect("addr")
            .port();
        let dir = std::env::temp_dir().join(format!("maelab-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        let chown = Command::new("chown")
            .args(["postgres:postgres", dir.to_str().expect("utf8")])
            .status();
        assert!(chown.is_ok_and(|s| s.success()), "chown");
        let data = dir.join("data");
        let out = as_postgres(&[
            "initdb",
            "-A",
            "trust",
            "-U",
            "postgres",
            "-D",
            data.to_str().expect("utf8"),
        ]);
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Self { dir, port };
        cluster.pg_ctl("start");
        cluster
    }

    fn pg_ctl(&self, action: &str) {
        let data = self.dir.join("data");
        let log = self.dir.join("log");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let out = as_postgres(&[
            "pg_ctl",
            action,
            "-w",
            "-m",
            "fast",
            "-D",
            data.to_str().expect("utf8"),
            "-l",
            log.to_str().expect("utf8"),
            "-o",
            &opts,
        ]);
        assert!(
            out.status.success(),
            "pg_ctl {action}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = as_postgres(&[
            "pg_ctl",
            "stop",
            "-m",
            "immediate",
            "-D",
            data.to_str().unwrap_or(""),
        ]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn postgres_restarted_mid_run_and_the_run_still_completes() {
    let cluster = PrivateCluster::start();
    // SAFETY of the env var: this test binary runs this one test only.
    unsafe { std::env::set_var("MAELAB_TEST_DATABASE_URL", cluster.admin_url()) };
    let db = TestDb::new().await.expect("db on the private cluster");
    let epochs = 10;
    let run = load_test_run(&db.pool, epochs, 250).await;
    let _worker = WorkerProcess::spawn(
        &db.url,
        &["--lease-seconds", "15", "--poll-interval", "0.5"],
    );
    wait_for(
        &db.pool,
        "select count(*) from epoch_metric where run_id = $1",
        run.run_id,
        Duration::from_secs(30),
        |n| n >= 2,
    )
    .await;
    cluster.pg_ctl("restart");
    wait_status(&db.pool, run.run_id, "succeeded", Duration::from_secs(60)).await;
    let rows = queue_support::epochs(&db.pool, run.run_id).await;
    let got: Vec<i32> = rows.iter().map(|r| r.0).collect();
    assert_eq!(got, (0..epochs as i32).collect::<Vec<_>>());
    let attempt: i32 = sqlx::query_scalar("select attempt from job where run_id = $1")
        .bind(run.run_id)
        .fetch_one(&db.pool)
        .await
        .expect("attempt");
    assert_eq!(
        attempt, 1,
        "the same attempt finished: the lease survived the restart"
    );
    db.pool.close().await;
    drop(db);
}
