//! Live updates: ONE `LISTEN maelab_events` connection per server, fanned out
//! to every open page through a [`tokio::sync::broadcast`] channel, and the
//! server-sent-event streams built on it (architecture.md, "Live updates").
//!
//! The database triggers only say *which* row changed. The hub fetches that
//! row once and broadcasts it, so 200 browsers on one run cost one query per
//! change, not 200. Every event carries a cursor (last epoch, last step, last
//! reconstruction id) as its SSE id: a page that loaded its history up to a
//! cursor, or a browser that reconnects with `Last-Event-ID`, resumes exactly
//! after it. Gaps are detected, never guessed: epochs are numbered without
//! holes, and step/reconstruction batches say which range they complete
//! (`after`); a stream that sees a gap, a lagged receiver or a listener
//! reconnect reads what it missed from the tables before going on.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use crate::change_clock::ChangeClock;
use crate::read_model::RunSummary;
use crate::read_model::artifacts::{self, ArtifactInfo};
use crate::read_model::metrics::{self, EpochRow, STEP_CHUNK, StepRow};
use crate::read_model::runs;
use crate::read_model::system_samples::SystemPoint;
use maelab_core::db::worker_metrics::{self, SampleOf};

/// The channel the schema's triggers notify on.
pub const CHANNEL: &str = "maelab_events";

/// Events buffered per subscriber before it lags (and catches up from the tables).
const BUFFER: usize = 4096;

/// Most rows the hub fetches for one run and table per wake-up.
const HUB_BATCH: i64 = 1000;

/// How often an idle stream sends a comment, so proxies keep it open and a
/// vanished client is noticed.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Rows that complete a range: every row of the run with a key in
/// `(after, last key of rows]` is in `rows`.
#[derive(Debug, Clone)]
pub struct Batch<T> {
    pub run_id: Uuid,
    pub after: i64,
    pub rows: Vec<T>,
}

/// An epoch row and the run it belongs to.
#[derive(Debug, Clone)]
pub struct RunEpoch {
    pub run_id: Uuid,
    pub row: EpochRow,
}

/// What the hub broadcasts: the read model's rows, as the API shows them.
#[derive(Debug, Clone)]
pub enum LiveEvent {
    /// A run was created or changed status.
    Run(Arc<RunSummary>),
    /// An epoch row was written (inserted or upserted again).
    Epoch(Arc<RunEpoch>),
    Steps(Arc<Batch<StepRow>>),
    /// Reconstruction images.
    Recons(Arc<Batch<ArtifactInfo>>),
    /// A study changed without a run changing (an arm was calibrated).
    StudyChanged(Uuid),
    /// An ingest batch wrote points of other keys than the epoch columns
    /// and no epoch row (the run page's logged-metrics charts read them).
    Points(Uuid),
    /// A worker reported its system figures (with each heartbeat).
    WorkerSample(Arc<SampleOf>),
    /// A worker started or stopped.
    WorkerChanged(Uuid),
    /// Notifications may have been lost (the LISTEN connection dropped):
    /// every stream re-reads what it missed.
    Resync,
}

/// The sending side of the fan-out, kept in `AppState`.
#[derive(Clone)]
pub struct Live {
    tx: broadcast::Sender<LiveEvent>,
    /// Advanced for every run and epoch change heard (read caches check it).
    clock: Arc<ChangeClock>,
}

impl Default for Live {
    fn default() -> Self {
        Self::new()
    }
}

impl Live {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(BUFFER);
        Self {
            tx,
            clock: Arc::default(),
        }
    }

    /// The count of run and epoch changes heard; None while not listening.
    pub fn changes(&self) -> &ChangeClock {
        &self.clock
    }

    pub fn subscribe(&self) -> broadcast::Receiver<LiveEvent> {
        self.tx.subscribe()
    }

    /// Open streams right now (tests check that closed ones are freed).
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Start the LISTEN task; it runs until the pool is closed.
    pub fn spawn_listener(&self, db: PgPool) -> tokio::task::JoinHandle<()> {
        let tx = self.tx.clone();
        let clock = Arc::clone(&self.clock);
        tokio::spawn(async move {
            listen_loop(db, tx, &clock).await;
            clock.set_listening(false);
        })
    }
}

/// A trigger's payload.
#[derive(Debug, Deserialize)]
struct Note {
    /// None for a worker's own rows (an idle worker's sample, its start).
    #[serde(default)]
    run_id: Option<Uuid>,
    table: String,
    #[serde(default)]
    epoch: Option<i32>,
    /// An ingest batch (`metric_point`) names the range of epochs it wrote.
    #[serde(default)]
    last_epoch: Option<i32>,
    #[serde(default)]
    study_id: Option<Uuid>,
    #[serde(default)]
    worker_id: Option<Uuid>,
    #[serde(default)]
    sample_id: Option<i64>,
}

/// Most epoch rows one ingest notification fans out; a longer range reads
/// only its end (streams that miss rows catch up from the table by gap).
const MAX_BATCH_EPOCHS: i32 = 1000;

/// Listen, reconnecting with backoff; a reconnect broadcasts [`LiveEvent::Resync`].
async fn listen_loop(db: PgPool, tx: broadcast::Sender<LiveEvent>, clock: &ChangeClock) {
    let mut backoff = Duration::from_millis(250);
    let mut cursors: HashMap<(Uuid, &'static str), i64> = HashMap::new();
    loop {
        let mut listener = match connect(&db).await {
            Ok(l) => l,
            Err(sqlx::Error::PoolClosed) => return,
            Err(e) => {
                tracing::warn!(error = %e, "live: cannot LISTEN; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        backoff = Duration::from_millis(250);
        // Whatever was committed while we were not listening is unknown.
        clock.set_listening(true);
        let _ = tx.send(LiveEvent::Resync);
        tracing::info!("live: listening on {CHANNEL}");
        loop {
            match listener.try_recv().await {
                Ok(Some(first)) => {
                    let mut batch = vec![first];
                    while let Some(n) = listener.next_buffered() {
                        batch.push(n);
                    }
                    let notes = batch
                        .iter()
                        .filter_map(|n| match serde_json::from_str::<Note>(n.payload()) {
                            Ok(note) => Some(note),
                            Err(e) => {
                                tracing::warn!(payload = n.payload(), error = %e, "live: odd payload");
                                None
                            }
                        })
                        .collect::<Vec<Note>>();
                    if batch.len() != notes.len()
                        || notes.iter().any(|n| {
                            matches!(n.table.as_str(), "run" | "epoch_metric" | "metric_point")
                        })
                    {
                        clock.tick();
                    }
                    if let Err(e) = fan_out(&db, &tx, &mut cursors, notes).await {
                        tracing::warn!(error = %e, "live: reading changed rows failed");
                        let _ = tx.send(LiveEvent::Resync);
                    }
                }
                Ok(None) => {
                    tracing::warn!("live: LISTEN connection lost and re-opened");
                    clock.set_listening(true);
                    let _ = tx.send(LiveEvent::Resync);
                }
                Err(sqlx::Error::PoolClosed) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "live: LISTEN failed; reconnecting");
                    clock.set_listening(false);
                    break;
                }
            }
        }
    }
}

async fn connect(db: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(db).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Fetch each changed row once and broadcast it.
async fn fan_out(
    db: &PgPool,
    tx: &broadcast::Sender<LiveEvent>,
    cursors: &mut HashMap<(Uuid, &'static str), i64>,
    notes: Vec<Note>,
) -> Result<(), sqlx::Error> {
    if tx.receiver_count() == 0 {
        // Nobody watches: forget the cursors rather than chase old rows later.
        cursors.clear();
        return Ok(());
    }
    let mut runs = Vec::new();
    let mut epochs = Vec::new();
    let mut ranges = Vec::new();
    let mut steps = Vec::new();
    let mut recons = Vec::new();
    let mut samples = Vec::new();
    let mut seen = HashSet::new();
    for n in notes {
        let key = (
            n.run_id,
            n.table.clone(),
            n.epoch,
            n.study_id,
            n.worker_id,
            n.sample_id,
        );
        if !seen.insert(key) {
            continue;
        }
        match (n.table.as_str(), n.run_id) {
            ("run", Some(run_id)) => runs.push(run_id),
            ("epoch_metric", Some(run_id)) => epochs.extend(n.epoch.map(|e| (run_id, e))),
            // An ingest batch: one notification for all the epochs it wrote.
            ("metric_point", Some(run_id)) => match (n.epoch, n.last_epoch) {
                (Some(first), Some(last)) => {
                    let first = first.max(last.saturating_sub(MAX_BATCH_EPOCHS - 1));
                    ranges.push((run_id, first, last));
                }
                _ => {
                    let _ = tx.send(LiveEvent::Points(run_id));
                }
            },
            ("step_metric", Some(run_id)) if !steps.contains(&run_id) => steps.push(run_id),
            ("artifact", Some(run_id)) if !recons.contains(&run_id) => recons.push(run_id),
            ("study_calibration", _) => {
                if let Some(id) = n.study_id {
                    let _ = tx.send(LiveEvent::StudyChanged(id));
                }
            }
            ("worker_sample", _) => samples.extend(n.sample_id),
            ("worker", _) => {
                if let Some(id) = n.worker_id {
                    let _ = tx.send(LiveEvent::WorkerChanged(id));
                }
            }
            _ => {}
        }
    }
    for sample_id in samples {
        if let Some(sample) = worker_metrics::by_id(db, sample_id).await? {
            let _ = tx.send(LiveEvent::WorkerSample(Arc::new(sample)));
        }
    }
    for run_id in runs {
        if let Some(row) = runs::summary(db, run_id).await? {
            let _ = tx.send(LiveEvent::Run(Arc::new(row)));
        }
    }
    for (run_id, epoch) in epochs {
        if let Some(row) = metrics::epoch(db, run_id, epoch).await? {
            let _ = tx.send(LiveEvent::Epoch(Arc::new(RunEpoch { run_id, row })));
        }
    }
    // An ingest batch's epochs, read in one query.
    for (run_id, first, last) in ranges {
        for row in metrics::epochs(db, run_id, Some(first - 1)).await? {
            if row.epoch > last {
                break;
            }
            let _ = tx.send(LiveEvent::Epoch(Arc::new(RunEpoch { run_id, row })));
        }
    }
    for run_id in steps {
        let after = cursors.get(&(run_id, "step")).copied().unwrap_or(-1);
        let after_i32 = i32::try_from(after).unwrap_or(-1);
        let rows = metrics::latest_steps(db, run_id, Some(after_i32), HUB_BATCH).await?;
        let Some(last) = rows.last().map(|r| i64::from(r.step)) else {
            continue;
        };
        let full = i64::try_from(rows.len()).unwrap_or(0) >= HUB_BATCH;
        let after = if full {
            rows.first().map_or(after, |r| i64::from(r.step) - 1)
        } else {
            after
        };
        cursors.insert((run_id, "step"), last);
        let _ = tx.send(LiveEvent::Steps(Arc::new(Batch {
            run_id,
            after,
            rows,
        })));
    }
    for run_id in recons {
        let after = cursors.get(&(run_id, "recon")).copied().unwrap_or(-1);
        let rows = artifacts::reconstructions(db, run_id, Some(after)).await?;
        let Some(last) = rows.last().and_then(|r| r.artifact_id) else {
            continue;
        };
        cursors.insert((run_id, "recon"), last);
        let _ = tx.send(LiveEvent::Recons(Arc::new(Batch {
            run_id,
            after,
            rows,
        })));
    }
    Ok(())
}

/// Where a run page's stream stands: the last epoch, step and reconstruction
/// artifact it has. Written as the SSE id `epoch.step.artifact`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Cursor {
    pub epoch: i32,
    pub step: i32,
    pub recon: i64,
}

impl Default for Cursor {
    /// Before anything: a stream from here sends the whole history.
    fn default() -> Self {
        Self {
            epoch: -1,
            step: -1,
            recon: -1,
        }
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.epoch, self.step, self.recon)
    }
}

impl Cursor {
    /// `epoch.step.artifact`; None when malformed (the caller starts over).
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().split('.');
        let epoch = parts.next()?.parse().ok()?;
        let step = parts.next()?.parse().ok()?;
        let recon = parts.next()?.parse().ok()?;
        if parts.next().is_some() || epoch < -1 || step < -1 || recon < -1 {
            return None;
        }
        Some(Self { epoch, step, recon })
    }
}

/// What one run page's stream keeps between events.
struct RunStream {
    db: PgPool,
    rx: broadcast::Receiver<LiveEvent>,
    run_id: Uuid,
    cursor: Cursor,
    pending: VecDeque<Event>,
    /// Read the tables before the next broadcast event (start, gap, lag).
    catch_up: bool,
    /// The current status is sent once at the start and after a catch-up.
    send_status: bool,
}

/// The run page's stream: what happened after `cursor`, then live events.
/// Subscribing comes before reading the tables, so a row committed between
/// the two arrives twice at most, and the cursor drops the second copy.
pub fn run_events(
    db: PgPool,
    live: &Live,
    run_id: Uuid,
    cursor: Cursor,
) -> Sse<impl Stream<Item = Result<Event, Infallible>> + use<>> {
    let state = RunStream {
        db,
        rx: live.subscribe(),
        run_id,
        cursor,
        pending: VecDeque::new(),
        catch_up: true,
        send_status: true,
    };
    let stream = futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(ev) = st.pending.pop_front() {
                return Some((Ok(ev), st));
            }
            if st.catch_up {
                if let Err(e) = st.read_missed().await {
                    // End the stream: the browser reconnects with its last id.
                    tracing::warn!(run_id = %st.run_id, error = %e, "live: catch-up failed");
                    return None;
                }
                continue;
            }
            match st.rx.recv().await {
                Ok(ev) => st.apply(&ev),
                Err(RecvError::Lagged(n)) => {
                    tracing::debug!(run_id = %st.run_id, missed = n, "live: stream lagged");
                    st.catch_up = true;
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

impl RunStream {
    fn event(&self, name: &str, data: &impl Serialize) -> Option<Event> {
        match serde_json::to_string(data) {
            Ok(json) => Some(
                Event::default()
                    .event(name)
                    .id(self.cursor.to_string())
                    .data(json),
            ),
            Err(e) => {
                tracing::error!(error = %e, "live: cannot encode an event");
                None
            }
        }
    }

    fn push(&mut self, name: &str, data: &impl Serialize) {
        if let Some(ev) = self.event(name, data) {
            self.pending.push_back(ev);
        }
    }

    fn push_epoch(&mut self, row: &EpochRow) {
        self.cursor.epoch = row.epoch;
        self.push("epoch", row);
    }

    fn push_steps(&mut self, rows: &[StepRow]) {
        let fresh: Vec<&StepRow> = rows.iter().filter(|r| r.step > self.cursor.step).collect();
        if let Some(last) = fresh.last() {
            self.cursor.step = last.step;
            self.push("steps", &fresh);
        }
    }

    fn push_recons(&mut self, rows: &[ArtifactInfo]) {
        let fresh: Vec<&ArtifactInfo> = rows
            .iter()
            .filter(|r| r.artifact_id.is_some_and(|id| id > self.cursor.recon))
            .collect();
        if let Some(last) = fresh.last().and_then(|r| r.artifact_id) {
            self.cursor.recon = last;
            self.push("recons", &fresh);
        }
    }

    /// Everything after the cursor, from the tables.
    async fn read_missed(&mut self) -> Result<(), sqlx::Error> {
        self.catch_up = false;
        if self.send_status {
            self.send_status = false;
            if let Some(run) = runs::summary(&self.db, self.run_id).await? {
                self.push("status", &run);
            }
        }
        for row in metrics::epochs(&self.db, self.run_id, Some(self.cursor.epoch)).await? {
            self.push_epoch(&row);
        }
        loop {
            let chunk =
                metrics::steps_after(&self.db, self.run_id, Some(self.cursor.step), STEP_CHUNK)
                    .await?;
            self.push_steps(&chunk);
            if i64::try_from(chunk.len()).unwrap_or(0) < STEP_CHUNK {
                break;
            }
        }
        let recons =
            artifacts::reconstructions(&self.db, self.run_id, Some(self.cursor.recon)).await?;
        self.push_recons(&recons);
        Ok(())
    }

    fn apply(&mut self, ev: &LiveEvent) {
        match ev {
            LiveEvent::Run(run) if run.run_id == self.run_id => self.push("status", &**run),
            LiveEvent::Epoch(e) if e.run_id == self.run_id => {
                if e.row.epoch == self.cursor.epoch + 1 {
                    self.push_epoch(&e.row);
                } else if e.row.epoch > self.cursor.epoch + 1 {
                    self.catch_up = true;
                }
            }
            LiveEvent::Steps(b) if b.run_id == self.run_id => {
                if b.after <= i64::from(self.cursor.step) {
                    self.push_steps(&b.rows);
                } else {
                    self.catch_up = true;
                }
            }
            LiveEvent::Recons(b) if b.run_id == self.run_id => {
                if b.after <= self.cursor.recon {
                    self.push_recons(&b.rows);
                } else {
                    self.catch_up = true;
                }
            }
            LiveEvent::Points(run_id) if *run_id == self.run_id => self.push("points", &()),
            LiveEvent::WorkerSample(s) if s.run_id == Some(self.run_id) => {
                self.push("system", &SystemPoint::from(&s.sample));
            }
            LiveEvent::Resync => {
                self.catch_up = true;
                self.send_status = true;
            }
            _ => {}
        }
    }
}

/// What the runs table needs to update a row when an epoch lands.
#[derive(Debug, Serialize)]
struct EpochTick {
    run_id: Uuid,
    epoch: i32,
    train_loss: Option<f64>,
    test_acc1: Option<f64>,
}

/// The runs list's stream: `run` (created or changed status), `epoch` (a new
/// epoch of any run) and `resync` (something may be missed: reload).
pub fn list_events(live: &Live) -> Sse<impl Stream<Item = Result<Event, Infallible>> + use<>> {
    let rx = live.subscribe();
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        loop {
            let ev = match rx.recv().await {
                Ok(LiveEvent::Run(run)) => encode("run", &*run),
                Ok(LiveEvent::Epoch(e)) => encode(
                    "epoch",
                    &EpochTick {
                        run_id: e.run_id,
                        epoch: e.row.epoch,
                        train_loss: e.row.train_loss,
                        test_acc1: e.row.test_acc1,
                    },
                ),
                Ok(LiveEvent::Resync) | Err(RecvError::Lagged(_)) => {
                    Some(Event::default().event("resync").data("{}"))
                }
                Ok(_) => None,
                Err(RecvError::Closed) => return None,
            };
            if let Some(ev) = ev {
                return Some((Ok(ev), rx));
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

/// Why the queue page should read itself again.
#[derive(Debug, Serialize)]
struct QueueTick {
    why: &'static str,
}

/// The queue page's stream: one `changed` event whenever what the page shows
/// may have changed: a run's status (a job queued, claimed, finished), a
/// worker's heartbeat sample (its figures, its heartbeat age), a worker
/// starting or stopping, or notifications possibly missed. The page reads
/// itself again (the server formats the tables), at most about once a second.
pub fn queue_events(live: &Live) -> Sse<impl Stream<Item = Result<Event, Infallible>> + use<>> {
    let rx = live.subscribe();
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        loop {
            let why = match rx.recv().await {
                Ok(LiveEvent::Run(_)) => "run",
                Ok(LiveEvent::WorkerSample(_)) => "worker_sample",
                Ok(LiveEvent::WorkerChanged(_)) => "worker",
                Ok(LiveEvent::Resync) | Err(RecvError::Lagged(_)) => "resync",
                Ok(_) => continue,
                Err(RecvError::Closed) => return None,
            };
            if let Some(ev) = encode("changed", &QueueTick { why }) {
                return Some((Ok(ev), rx));
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

fn encode(name: &str, data: &impl Serialize) -> Option<Event> {
    serde_json::to_string(data)
        .map(|json| Event::default().event(name).data(json))
        .map_err(|e| tracing::error!(error = %e, "live: cannot encode an event"))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::Cursor;

    #[test]
    fn cursor_round_trips_and_rejects_junk() {
        let c = Cursor {
            epoch: 3,
            step: 1200,
            recon: 17,
        };
        assert_eq!(Cursor::parse(&c.to_string()), Some(c));
        assert_eq!(Cursor::parse("-1.-1.-1"), Some(Cursor::default()));
        for bad in ["", "1.2", "1.2.3.4", "a.b.c", "-5.0.0", "1.2.x"] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
    }
}
