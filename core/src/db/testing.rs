//! Fresh databases for tests: each test gets its own, migrated, on the real
//! PostgreSQL server named by `MAELAB_TEST_DATABASE_URL` (default: the local
//! server as `postgres`).

use sqlx::{Connection, PgConnection, PgPool};

use super::{DbError, connect, migrate};

/// The admin URL tests create their databases through.
pub fn admin_url() -> String {
    std::env::var("MAELAB_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A migrated database of its own, named `maelab_test_<uuid>`.
pub struct TestDb {
    pub pool: PgPool,
    pub url: String,
    pub name: String,
}

impl TestDb {
    /// Create and migrate a fresh database.
    pub async fn new() -> Result<Self, DbError> {
        let db = Self::empty().await?;
        migrate(&db.pool).await?;
        Ok(db)
    }

    /// Create a fresh database without applying migrations.
    pub async fn empty() -> Result<Self, DbError> {
        let admin = admin_url();
        let name = format!("maelab_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&admin)
            .await
            .map_err(|source| DbError::Connect {
                target: admin.clone(),
                source,
            })?;
        sqlx::query(&format!("create database {name}"))
            .execute(&mut conn)
            .await
            .map_err(|source| DbError::Connect {
                target: admin.clone(),
                source,
            })?;
        let url = with_database(&admin, &name);
        let pool = connect(&url, 10).await?;
        Ok(Self { pool, url, name })
    }
}

impl Drop for TestDb {
    /// Drop the database so test runs do not pile them up. Runs on its own
    /// thread and runtime because `Drop` may run inside a current-thread runtime;
    /// `with (force)` ends the pool's connections server-side.
    fn drop(&mut self) {
        if std::env::var_os("MAELAB_KEEP_TEST_DB").is_some() {
            return;
        }
        let name = self.name.clone();
        let dropper = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&admin_url()).await {
                    let _ = sqlx::query(&format!("drop database if exists {name} with (force)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        });
        let _ = dropper.join();
    }
}

impl TestDb {
    /// A new run of `config` whose job a fresh worker row (`test`) has
    /// claimed for `lease`: where tests of what a worker writes (epochs,
    /// artifacts, checkpoints under its lease) start.
    pub async fn claimed_run(
        &self,
        config: &crate::RunConfig,
        lease: std::time::Duration,
    ) -> Result<(uuid::Uuid, super::queue::ClaimedJob), Box<dyn std::error::Error + Send + Sync>>
    {
        let run = super::runs::create_run(&self.pool, config, None).await?;
        let worker = super::workers::register(
            &self.pool,
            &super::workers::WorkerInfo {
                name: "test".into(),
                host: "test".into(),
                device: "cpu".into(),
                gpu_name: None,
                torch_version: "none".into(),
                pid: None,
            },
        )
        .await?;
        let job = super::queue::claim_next(&self.pool, worker, lease)
            .await?
            .ok_or("no job to claim: another run is queued ahead")?;
        Ok((run.run_id, job))
    }

    /// `count` reconstruction images of the leased job's run stored inline
    /// (bytea), as an older maelab left them (`recon-0000.png`, ...; image
    /// `i` is `base_len + i` bytes of value `i`). Returns their bytes.
    pub async fn inline_reconstructions(
        &self,
        lease: &super::queue::Lease,
        count: u8,
        base_len: usize,
    ) -> Result<Vec<Vec<u8>>, super::queue::QueueError> {
        let contents: Vec<Vec<u8>> = (0..count)
            .map(|i| vec![i; base_len + usize::from(i)])
            .collect();
        for (i, bytes) in (0..count).zip(&contents) {
            super::artifacts::put_artifact(
                &self.pool,
                lease,
                &super::artifacts::NewArtifact {
                    kind: "reconstruction",
                    epoch: Some(i32::from(i)),
                    name: &format!("recon-{i:04}.png"),
                    media_type: "image/png",
                    bytes,
                },
            )
            .await?;
        }
        Ok(contents)
    }
}

/// `url` with its database replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let prefix_end = base.find("://").map_or(0, |i| i + 3);
    match base[prefix_end..].rfind('/') {
        Some(i) => format!("{}/{name}{query}", &base[..prefix_end + i]),
        None => format!("{base}/{name}{query}"),
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_the_database_part() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h/postgres?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
    }
}
