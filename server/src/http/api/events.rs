//! `GET /api/v1/runs/{run_id}/events`: server-sent events for one run, for
//! clients that follow a run live (the CLI's `watch`, scripts).
//!
//! Events: `status` (data: `{"run_id": …, "status": …}`) whenever the run's
//! status changes, and `epoch` (data: the epoch row, id: the epoch number) for
//! each epoch row. A client that reconnects with `Last-Event-ID: <epoch>` gets
//! only later epochs, so it sees no gap and no duplicate. The stream ends after
//! the run reaches a final status.
//!
//! The stream follows the server's one LISTEN hub ([`crate::live`]), like the
//! run page: no timer. It subscribes before it reads the history, then wakes
//! on the hub's events for its run. The hub broadcasts the read model's rows,
//! so status changes and the next epoch are sent as the hub read them; an
//! epoch past the next one (a gap), a lagged receiver or a hub resync reads
//! what it missed from the tables, as a page does.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use super::paths::RunPath;
use crate::auth::ReadAccess;
use crate::http::{AppError, AppState};
use crate::live::LiveEvent;
use crate::read_model::metrics::{self, EpochRow};

struct Follow {
    db: PgPool,
    /// Subscribed to the hub before the first look at the tables, so nothing
    /// committed in between is missed (a copy is dropped by the cursor).
    rx: broadcast::Receiver<LiveEvent>,
    run_id: Uuid,
    last_epoch: Option<i32>,
    last_status: Option<String>,
    pending: VecDeque<Event>,
    finished: bool,
    /// Read the run's status and the epochs after `last_epoch` from the
    /// tables before waiting on the hub again (start, new epoch, lag, resync).
    look_again: bool,
}

fn terminal(status: &str) -> bool {
    matches!(status, "succeeded" | "failed" | "cancelled")
}

impl Follow {
    fn push_epoch(&mut self, row: &EpochRow) {
        self.last_epoch = Some(row.epoch);
        if let Ok(ev) = Event::default()
            .event("epoch")
            .id(row.epoch.to_string())
            .json_data(row)
        {
            self.pending.push_back(ev);
        }
    }

    fn push_status(&mut self, status: &str) {
        if self.last_status.as_deref() == Some(status) {
            return;
        }
        let data = serde_json::json!({ "run_id": self.run_id, "status": status });
        self.pending
            .push_back(Event::default().event("status").data(data.to_string()));
        self.last_status = Some(status.to_string());
    }

    /// What a hub event means for this stream.
    fn apply(&mut self, ev: &LiveEvent) {
        match ev {
            // A final status: read the epochs written before it (the hub may
            // broadcast the run's row ahead of an epoch of the same wake-up),
            // then the status, then end.
            LiveEvent::Run(run) if run.run_id == self.run_id && terminal(&run.status) => {
                self.look_again = true;
            }
            LiveEvent::Run(run) if run.run_id == self.run_id => self.push_status(&run.status),
            LiveEvent::Epoch(e) if e.run_id == self.run_id => {
                let next = self.last_epoch.map_or(0, |last| last + 1);
                if e.row.epoch == next {
                    self.push_epoch(&e.row);
                } else if e.row.epoch > next {
                    self.look_again = true;
                }
            }
            LiveEvent::Resync => self.look_again = true,
            _ => {}
        }
    }

    /// Queue the events that happened since the last look. Errors end the
    /// stream with an `error` event (the client may reconnect).
    async fn look(&mut self) {
        let status: Result<Option<String>, sqlx::Error> =
            sqlx::query_scalar("select status::text from run where run_id = $1")
                .bind(self.run_id)
                .fetch_optional(&self.db)
                .await;
        let epochs = metrics::epochs(&self.db, self.run_id, self.last_epoch).await;
        match (status, epochs) {
            (Ok(Some(status)), Ok(rows)) => {
                for row in &rows {
                    self.push_epoch(row);
                }
                self.push_status(&status);
                self.finished = terminal(&status);
            }
            (Ok(None), _) => {
                self.pending
                    .push_back(Event::default().event("error").data("run deleted"));
                self.finished = true;
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, run_id = %self.run_id, "event stream: database error");
                self.pending
                    .push_back(Event::default().event("error").data("database unavailable"));
                self.finished = true;
            }
        }
    }
}

fn follow(state: Follow) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(ev) = st.pending.pop_front() {
                return Some((Ok(ev), st));
            }
            if st.finished {
                return None;
            }
            if st.look_again {
                st.look_again = false;
                st.look().await;
                continue;
            }
            match st.rx.recv().await {
                Ok(ev) => st.apply(&ev),
                Err(RecvError::Lagged(n)) => {
                    tracing::debug!(run_id = %st.run_id, missed = n, "event stream lagged");
                    st.look_again = true;
                }
                Err(RecvError::Closed) => return None,
            }
        }
    })
}

/// `GET /api/v1/runs/{run_id}/events`.
pub async fn events(
    _: ReadAccess,
    State(state): State<AppState>,
    RunPath(run_id): RunPath,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    if !crate::read_model::runs::run_exists(&state.db, run_id).await? {
        return Err(AppError::NotFound(format!("run {run_id}")));
    }
    let last_epoch = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i32>().ok());
    let stream = follow(Follow {
        db: state.db.clone(),
        rx: state.live.subscribe(),
        run_id,
        last_epoch,
        last_status: None,
        pending: VecDeque::new(),
        finished: false,
        look_again: true,
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
