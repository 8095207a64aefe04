//! Live updates: the LISTEN hub and the SSE streams, read through `oneshot`.
//! A stream resumes exactly after its cursor (no gap, no duplicate), follows
//! new rows as they are committed, and frees its subscription when dropped.

mod pages_support;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use maelab_server::live::LiveEvent;
use pages_support::{PNG_1X1, Pages, gpu_sample, register_worker, spawn};
use tower::ServiceExt;

/// One server-sent event.
#[derive(Debug, Clone)]
struct Sse {
    event: String,
    id: String,
    data: serde_json::Value,
}

/// An open event stream, parsed as it arrives.
struct Stream {
    body: axum::body::Body,
    buf: String,
}

impl Stream {
    async fn open(p: &Pages, uri: &str, last_event_id: Option<&str>) -> Stream {
        let mut req = Request::get(uri);
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let res = p
            .app
            .clone()
            .oneshot(req.body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        assert_eq!(res.status(), StatusCode::OK);
        assert!(
            res.headers()["content-type"]
                .to_str()
                .expect("ascii")
                .starts_with("text/event-stream")
        );
        Stream {
            body: res.into_body(),
            buf: String::new(),
        }
    }

    /// The next named event (keep-alive comments skipped), or None after 5 s.
    async fn next(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut ev = Sse {
                    event: String::new(),
                    id: String::new(),
                    data: serde_json::Value::Null,
                };
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        ev.event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        ev.id = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if ev.event.is_empty() {
                    continue;
                }
                ev.data = serde_json::from_str(&data).expect("json data");
                return Some(ev);
            }
            let frame = tokio::time::timeout(Duration::from_secs(5), self.body.frame())
                .await
                .ok()??
                .expect("frame");
            if let Ok(bytes) = frame.into_data() {
                self.buf.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }

    /// Events until one named `until` (inclusive).
    async fn until(&mut self, until: &str) -> Vec<Sse> {
        let mut seen = Vec::new();
        while let Some(ev) = self.next().await {
            let done = ev.event == until;
            seen.push(ev);
            if done {
                return seen;
            }
        }
        panic!("no `{until}` event; got {seen:?}");
    }
}

/// Start the hub and wait until it LISTENs (it announces itself with a resync).
async fn listening(p: &Pages) {
    let mut rx = p.state.live.subscribe();
    p.state.live.spawn_listener(p.db.pool.clone());
    loop {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Ok(LiveEvent::Resync)) => return,
            Ok(_) => continue,
            Err(_) => panic!("the listener did not start"),
        }
    }
}

fn steps_of(events: &[Sse]) -> Vec<i64> {
    events
        .iter()
        .filter(|e| e.event == "steps")
        .flat_map(|e| e.data.as_array().expect("rows").clone())
        .map(|r| r["step"].as_i64().expect("step"))
        .collect()
}

fn epochs_of(events: &[Sse]) -> Vec<i64> {
    events
        .iter()
        .filter(|e| e.event == "epoch")
        .map(|e| e.data["epoch"].as_i64().expect("epoch"))
        .collect()
}

#[tokio::test]
async fn a_run_stream_resumes_after_its_cursor_then_follows_new_rows() {
    let p = spawn().await;
    let id = p.create("live", "mae", &[]).await;
    p.set_running(id).await;
    p.epoch(id, 0, 0.9, None).await;
    p.epoch(id, 1, 0.8, None).await;
    p.steps(id, 1, 0, 10).await;
    listening(&p).await;

    // The page had epoch 0 and steps up to 4: the stream sends the rest.
    let mut s = Stream::open(&p, &format!("/runs/{id}/events"), Some("0.4.-1")).await;
    let first = s.until("steps").await;
    assert_eq!(first[0].event, "status");
    assert_eq!(first[0].data["status"], "running");
    assert_eq!(epochs_of(&first), [1]);
    assert_eq!(steps_of(&first), [5, 6, 7, 8, 9]);
    assert_eq!(first.last().expect("last").id, "1.9.-1");

    // New rows arrive as they are committed, each exactly once.
    p.steps(id, 2, 10, 13).await;
    p.epoch(id, 2, 0.7, Some(33.0)).await;
    let recon = p
        .artifact(
            id,
            "reconstruction",
            Some(2),
            "recon_e0002.png",
            "image/png",
            PNG_1X1,
        )
        .await;
    let mut live = Vec::new();
    while !live.iter().any(|e: &Sse| e.event == "recons") {
        live.push(s.next().await.expect("a live event"));
    }
    assert_eq!(steps_of(&live), [10, 11, 12]);
    assert_eq!(epochs_of(&live), [2]);
    let recons = live.iter().find(|e| e.event == "recons").expect("recons");
    assert_eq!(recons.data[0]["artifact_id"], recon);
    assert_eq!(recons.id, format!("2.12.{recon}"));

    // A status change reaches the page too.
    sqlx::query("update run set status = 'succeeded', finished_at = now() where run_id = $1")
        .bind(id)
        .execute(&p.db.pool)
        .await
        .expect("finish");
    let ev = s.until("status").await;
    assert_eq!(ev.last().expect("status").data["status"], "succeeded");
}

#[tokio::test]
async fn a_stream_that_sees_a_gap_reads_what_it_missed() {
    let p = spawn().await;
    let id = p.create("gap", "mae", &[]).await;
    listening(&p).await;
    let mut s = Stream::open(&p, &format!("/runs/{id}/events"), None).await;
    assert_eq!(s.until("status").await.len(), 1);
    // Two epochs in one transaction: the hub may see them in any order, the
    // stream must still deliver 0 then 1, once each.
    let mut tx = p.db.pool.begin().await.expect("tx");
    for epoch in [0, 1] {
        sqlx::query(
            "insert into epoch_metric (run_id, epoch, train_lr, train_loss, epoch_seconds)
             values ($1, $2, 1e-4, 1.0, 1)",
        )
        .bind(id)
        .bind(epoch)
        .execute(&mut *tx)
        .await
        .expect("epoch");
    }
    tx.commit().await.expect("commit");
    let mut got = Vec::new();
    while got.len() < 2 {
        let ev = s.next().await.expect("epoch event");
        if ev.event == "epoch" {
            got.push(ev.data["epoch"].as_i64().expect("epoch"));
        }
    }
    assert_eq!(got, [0, 1]);
    // Nothing more: no duplicate of either epoch.
    p.epoch(id, 2, 0.5, None).await;
    let ev = s.until("epoch").await;
    assert_eq!(epochs_of(&ev), [2]);
}

#[tokio::test]
async fn closed_streams_free_their_subscription() {
    let p = spawn().await;
    let id = p.create("drop", "mae", &[]).await;
    assert_eq!(p.state.live.subscribers(), 0);
    let mut streams = Vec::new();
    for _ in 0..5 {
        let mut s = Stream::open(&p, &format!("/runs/{id}/events"), None).await;
        s.until("status").await;
        streams.push(s);
    }
    let mut list = Stream::open(&p, "/runs/events", None).await;
    let _ = tokio::time::timeout(Duration::from_millis(50), list.body.frame()).await;
    assert_eq!(p.state.live.subscribers(), 6);
    drop(streams);
    drop(list);
    assert_eq!(p.state.live.subscribers(), 0);
}

#[tokio::test]
async fn the_list_stream_announces_new_runs_and_epochs() {
    let p = spawn().await;
    listening(&p).await;
    let mut s = Stream::open(&p, "/runs/events", None).await;
    let id = p.create("<i>listed</i>", "wave_mae", &[]).await;
    let ev = s.until("run").await;
    let run = &ev.last().expect("run").data;
    assert_eq!(run["run_id"], id.to_string());
    assert_eq!(run["name"], "<i>listed</i>");
    assert_eq!(run["status"], "queued");
    p.epoch(id, 0, 0.42, Some(12.5)).await;
    let ev = s.until("epoch").await;
    let tick = &ev.last().expect("epoch").data;
    assert_eq!(tick["run_id"], id.to_string());
    assert_eq!(tick["train_loss"], 0.42);
    assert_eq!(tick["test_acc1"], 12.5);
}

/// Architecture.md: pages follow the hub, never a timer. A worker's sample
/// reaches the stream of the run its job trains (in the chart's units) and
/// the queue page's stream; an idle worker's sample reaches only the queue.
#[tokio::test]
async fn worker_samples_reach_their_run_stream_and_the_queue_stream() {
    let p = spawn().await;
    listening(&p).await;
    let pool = p.db.pool.clone();
    let run = p.create("sampled", "mae", &[]).await;
    let job: i64 = sqlx::query_scalar("select job_id from job where run_id = $1")
        .bind(run)
        .fetch_one(&pool)
        .await
        .expect("job");
    let mut queue = Stream::open(&p, "/queue/events", None).await;
    let mut stream = Stream::open(&p, &format!("/runs/{run}/events"), None).await;
    stream.until("status").await;

    let worker = register_worker(&pool, "gpu-worker", "cuda:0").await;
    let why = |ev: Vec<Sse>| ev.last().expect("changed").data["why"].clone();
    let mut first = why(queue.until("changed").await);
    if first == "run" {
        // The hub may hear the run created above only after the queue stream
        // opened (seen under a loaded `scripts/test`): that one, then ours.
        first = why(queue.until("changed").await);
    }
    assert_eq!(first, "worker");

    // Idle first (no job): the queue hears it, the run's stream does not.
    maelab_core::db::worker_metrics::record(&pool, worker, None, &gpu_sample(11.0, 1))
        .await
        .expect("idle sample");
    maelab_core::db::worker_metrics::record(&pool, worker, Some(job), &gpu_sample(150.0, 42))
        .await
        .expect("sample");
    let ev = stream.until("system").await;
    let systems: Vec<&Sse> = ev.iter().filter(|e| e.event == "system").collect();
    assert_eq!(systems.len(), 1, "{ev:?}");
    let point = &systems[0].data;
    assert_eq!(point["cpu_percent"], 150.0);
    assert_eq!(point["rss_mib"], 1536.0);
    assert_eq!(point["gpu_memory_used_mib"], 42.0 * 1024.0);
    assert_eq!(point["gpu_memory_total_mib"], 80.0 * 1024.0);
    assert_eq!(point["gpu_utilization_percent"], 97.0);
    assert!(point["sampled_at"].is_string(), "{point}");
    let mut whys = Vec::new();
    while whys.len() < 2 {
        let ev = queue.until("changed").await;
        whys.push(ev.last().expect("changed").data["why"].clone());
    }
    assert_eq!(whys, ["worker_sample", "worker_sample"]);

    // The worker stops: the queue page hears that too.
    maelab_core::db::workers::mark_stopped(&pool, worker)
        .await
        .expect("stop");
    let ev = queue.until("changed").await;
    assert_eq!(ev.last().expect("changed").data["why"], "worker");
}

/// An ingest batch of only logged keys (no epoch row) sends `points` to its
/// run's stream, so the logged-metric charts follow without a timer.
#[tokio::test]
async fn a_batch_of_other_keys_sends_points_to_its_run_only() {
    let p = spawn().await;
    listening(&p).await;
    let run = p.create("logged", "mae", &[]).await;
    let other = p.create("other", "mae", &[]).await;
    let mut stream = Stream::open(&p, &format!("/runs/{run}/events"), None).await;
    stream.until("status").await;
    maelab_core::db::ingest::notify_batches(&p.db.pool, &[(other, None)])
        .await
        .expect("notify other");
    maelab_core::db::ingest::notify_batches(&p.db.pool, &[(run, None)])
        .await
        .expect("notify");
    let ev = stream.until("points").await;
    assert_eq!(ev.len(), 1, "only this run's batch: {ev:?}");
}
