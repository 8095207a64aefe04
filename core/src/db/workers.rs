//! Worker registration. A worker gets a fresh id at every start, so a restarted
//! process never inherits the leases of its previous life; the queue decides
//! from leases, never from these rows, which are for people and pages.

use sqlx::PgPool;
use uuid::Uuid;

use super::queue::QueueError;

/// What a worker says about itself when it starts.
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    pub name: String,
    pub host: String,
    /// `cpu`, `cuda:0`, ...
    pub device: String,
    /// None on the CPU.
    pub gpu_name: Option<String>,
    pub torch_version: String,
    pub pid: Option<i32>,
}

/// Insert a worker row under a fresh id and return the id.
pub async fn register(pool: &PgPool, info: &WorkerInfo) -> Result<Uuid, QueueError> {
    let id = Uuid::new_v4();
    sqlx::query(
        "insert into worker (worker_id, name, host, device, gpu_name, torch_version, pid)
         values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(&info.name)
    .bind(&info.host)
    .bind(&info.device)
    .bind(&info.gpu_name)
    .bind(&info.torch_version)
    .bind(info.pid)
    .execute(pool)
    .await?;
    Ok(id)
}

/// Record a clean exit. Idempotent.
pub async fn mark_stopped(pool: &PgPool, worker_id: Uuid) -> Result<(), QueueError> {
    sqlx::query(
        "update worker set stopped_at = coalesce(stopped_at, now()), last_seen_at = now()
         where worker_id = $1",
    )
    .bind(worker_id)
    .execute(pool)
    .await?;
    Ok(())
}
