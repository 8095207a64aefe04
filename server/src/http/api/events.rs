//! `GET /api/v1/runs/{run_id}/events`: server-sent events for one run, for
//! clients that follow a run live (the CLI's `watch`, scripts).
//!
//! Events: `status` (data: `{"status": …}`) whenever the run's status changes,
//! and `epoch` (data: the epoch row, id: the epoch number) for each epoch row.
//! A client that reconnects with `Last-Event-ID: <epoch>` gets only later
//! epochs, so it sees no gap and no duplicate. The stream ends after the run
//! reaches a final status.
//!
//! Until the server's shared LISTEN fan-out (`live.rs`) is wired in, the
//! stream looks for changes once a second; it reads only the run's status and
//! the epochs after the last one sent.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use sqlx::PgPool;
use uuid::Uuid;

use super::paths::RunPath;
use crate::auth::ReadAccess;
use crate::http::{AppError, AppState};
use crate::read_model::metrics;

/// How often the stream looks for new rows.
const POLL: Duration = Duration::from_secs(1);

struct Follow {
    db: PgPool,
    run_id: Uuid,
    last_epoch: Option<i32>,
    last_status: Option<String>,
    pending: VecDeque<Event>,
    finished: bool,
    first: bool,
}

fn terminal(status: &str) -> bool {
    matches!(status, "succeeded" | "failed" | "cancelled")
}

impl Follow {
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
                for row in rows {
                    self.last_epoch = Some(row.epoch);
                    if let Ok(ev) = Event::default()
                        .event("epoch")
                        .id(row.epoch.to_string())
                        .json_data(&row)
                    {
                        self.pending.push_back(ev);
                    }
                }
                if self.last_status.as_deref() != Some(status.as_str()) {
                    let data = serde_json::json!({ "run_id": self.run_id, "status": status });
                    self.pending
                        .push_back(Event::default().event("status").data(data.to_string()));
                    self.last_status = Some(status.clone());
                }
                self.finished = terminal(&status);
            }
            (Ok(None), _) => {
                self.pending
                    .push_back(Event::default().event("error").data("run deleted"));
                self.finished = true;
            }
            (Err(e), _) | (_, Err(crate::read_model::ReadError::Db(e))) => {
                tracing::warn!(error = %e, run_id = %self.run_id, "event stream: database error");
                self.pending
                    .push_back(Event::default().event("error").data("database unavailable"));
                self.finished = true;
            }
            (_, Err(e)) => {
                tracing::warn!(error = %e, "event stream");
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
            if !st.first {
                tokio::time::sleep(POLL).await;
            }
            st.first = false;
            st.look().await;
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
        run_id,
        last_epoch,
        last_status: None,
        pending: VecDeque::new(),
        finished: false,
        first: true,
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
