//! `maelab-worker queue-bench`: how fast the queue moves, in a scratch
//! database it creates on the given server and drops at the end.
//!
//! 1. Throughput: `--jobs` run-less load-test jobs, `--workers` tasks in this
//!    process, each with its own connection and worker row, each claiming
//!    ([`queue::claim_next`]) and completing ([`queue::complete`]) until the
//!    queue is empty.
//! 2. Enqueue-to-start latency with one idle in-process worker (LISTEN on),
//!    from the job's `enqueued_at` to its `started_at`, both the database's clock.
//! 3. The same with LISTEN off: only the poll backstop picks jobs up.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use maelab_core::db::queue::{self, NewJob};
use maelab_core::db::testing::with_database;
use maelab_core::db::workers::{self, WorkerInfo};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};

use crate::queue::{Settings, Shutdown, Worker};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A PostgreSQL server URL; the benchmark creates and drops its own database there.
    #[arg(long, env = "MAELAB_DATABASE_URL")]
    pub database_url: String,
    #[arg(long, default_value_t = 50)]
    pub workers: usize,
    #[arg(long, default_value_t = 20_000)]
    pub jobs: usize,
    /// Jobs enqueued one at a time for the latency measurement (LISTEN on).
    #[arg(long, default_value_t = 300)]
    pub latency_samples: usize,
    /// Jobs for the latency measurement with LISTEN off.
    #[arg(long, default_value_t = 30)]
    pub lost_samples: usize,
    /// The idle worker's poll interval, seconds.
    #[arg(long, default_value_t = 1.0)]
    pub poll_interval: f64,
}

pub fn main(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(bench(args))?;
    Ok(ExitCode::SUCCESS)
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let name = format!("maelab_bench_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&args.database_url)
        .await
        .context("connecting to the server")?;
    sqlx::query(&format!("create database {name}"))
        .execute(&mut admin)
        .await
        .context("creating the scratch database")?;
    let url = with_database(&args.database_url, &name);
    let result = measure(&args, &url).await;
    let drop = sqlx::query(&format!("drop database if exists {name} with (force)"))
        .execute(&mut admin)
        .await;
    if let Err(e) = drop {
        eprintln!("warning: could not drop {name}: {e}");
    }
    result
}

async fn measure(args: &Args, url: &str) -> anyhow::Result<()> {
    let pool = maelab_core::db::connect(url, 4).await?;
    maelab_core::db::migrate(&pool).await?;
    throughput(args, url, &pool).await?;
    let poll = Duration::try_from_secs_f64(args.poll_interval).context("--poll-interval")?;
    latency(url, &pool, args.latency_samples, true, poll).await?;
    latency(url, &pool, args.lost_samples, false, poll).await?;
    Ok(())
}

async fn throughput(args: &Args, url: &str, pool: &PgPool) -> anyhow::Result<()> {
    let ids: Vec<i64> = sqlx::query_scalar(
        "insert into job (job_type, payload) select 'load_test', '{}' from generate_series(1, $1)
         returning job_id",
    )
    .bind(i64::try_from(args.jobs)?)
    .fetch_all(pool)
    .await?;
    let options = maelab_core::db::parse_url(url)?;
    let mut tasks = Vec::new();
    let mut pools = Vec::new();
    for i in 0..args.workers {
        let own = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        let id = workers::register(
            &own,
            &WorkerInfo {
                name: format!("bench-{i}"),
                host: "bench".into(),
                device: "cpu".into(),
                gpu_name: None,
                torch_version: "none".into(),
                pid: None,
            },
        )
        .await?;
        pools.push((own, id));
    }
    let started = Instant::now();
    for (own, id) in pools {
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            while let Some(job) = queue::claim_next(&own, id, Duration::from_secs(30)).await? {
                queue::complete(&own, &job.lease).await?;
                done += 1;
            }
            anyhow::Ok(done)
        }));
    }
    let mut done = 0;
    for t in tasks {
        done += t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    let succeeded: i64 = sqlx::query_scalar(
        "select count(*) from job where state = 'succeeded' and attempt = 1 and job_id = any($1)",
    )
    .bind(&ids)
    .fetch_one(pool)
    .await?;
    println!(
        "throughput: {} workers, {} jobs claimed+completed in {secs:.2} s = {:.0} jobs/s \
         ({succeeded} succeeded once each)",
        args.workers,
        done,
        done as f64 / secs
    );
    anyhow::ensure!(
        done as usize == args.jobs && succeeded as usize == args.jobs,
        "lost or repeated jobs"
    );
    sqlx::query("delete from job").execute(pool).await?;
    Ok(())
}

async fn latency(
    url: &str,
    pool: &PgPool,
    samples: usize,
    listen: bool,
    poll: Duration,
) -> anyhow::Result<()> {
    if samples == 0 {
        return Ok(());
    }
    let shutdown = Shutdown::default();
    let settings = Settings {
        database_url: url.to_string(),
        device: "cpu".into(),
        name: "latency".into(),
        poll_interval: poll,
        lease: Duration::from_secs(30),
        heartbeat_interval: Duration::from_secs(2),
        rescue_backoff: Duration::from_secs(1),
        once: false,
        listen,
        cache_dir: std::env::temp_dir(),
        threads: None,
        loader_threads: 1,
        artifact_store: Some(
            std::env::temp_dir()
                .join("maelab-queue-bench-artifacts")
                .display()
                .to_string(),
        ),
        data_dir: std::env::temp_dir(),
    };
    let worker = Worker::start(settings, shutdown.clone()).await?;
    let task = tokio::spawn(worker.run());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut ids = Vec::new();
    for i in 0..samples {
        // Spread enqueues over the poll cycle so the backstop case samples all phases.
        let gap = if listen {
            20
        } else {
            37 + (i as u64 * 211) % 300
        };
        tokio::time::sleep(Duration::from_millis(gap)).await;
        let id = queue::enqueue(pool, &NewJob::load_test(serde_json::json!({}))).await?;
        let deadline = Instant::now() + poll * 3 + Duration::from_secs(5);
        loop {
            let state: String = sqlx::query_scalar("select state::text from job where job_id = $1")
                .bind(id)
                .fetch_one(pool)
                .await?;
            if state == "succeeded" {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "job {id} not done in time (state {state})"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        ids.push(id);
    }
    shutdown.trigger();
    task.await??;
    let mut ms: Vec<f64> = sqlx::query_scalar(
        "select extract(epoch from started_at - enqueued_at)::float8 * 1000 from job where job_id = any($1)",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "enqueue-to-start ({}): n={} p50={:.1} ms p99={:.1} ms max={:.1} ms (poll interval {} ms)",
        if listen {
            "idle worker, LISTEN on"
        } else {
            "notifications lost, poll only"
        },
        ms.len(),
        pct(0.5),
        pct(0.99),
        ms[ms.len() - 1],
        poll.as_millis()
    );
    sqlx::query("delete from job").execute(pool).await?;
    Ok(())
}
