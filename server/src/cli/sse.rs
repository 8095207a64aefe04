//! Server-sent events for the CLI (`submit --wait`, `watch`, `study submit
//! --wait`): a line parser that follows the WHATWG EventSource rules the
//! server's streams use, a stream of events over a reqwest response, and
//! [`Follow`], which reconnects a dropped stream a bounded number of times
//! (resuming after `Last-Event-ID`) and then falls back to a slow poll.
//!
//! The caller keeps the state and reads it from the API when [`Follow`]
//! says [`Step::Look`]: after every drop (so nothing is missed while it
//! reconnects), and every `poll` once the stream is given up on.

use std::collections::VecDeque;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;

use super::{ApiError, Client};

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `event:`; `message` when the server named none.
    pub event: String,
    /// The `data:` lines, joined by `\n`.
    pub data: String,
    /// The last `id:` seen on this connection (it carries over to later events).
    pub id: Option<String>,
}

/// Turns bytes, in chunks cut anywhere, into events: lines end with CRLF, LF
/// or CR; `:` starts a comment (the server's keep-alive); an empty line
/// dispatches the event.
#[derive(Debug, Default)]
pub struct SseParser {
    /// An unfinished line.
    line: Vec<u8>,
    /// The last chunk ended with CR: a LF starting the next one belongs to it.
    after_cr: bool,
    event: String,
    data: Option<String>,
    last_id: Option<String>,
}

impl SseParser {
    /// Feed a chunk; returns the events it completes.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        let mut rest = chunk;
        if self.after_cr {
            self.after_cr = false;
            if let Some(tail) = rest.strip_prefix(b"\n") {
                rest = tail;
            }
        }
        while let Some(i) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&rest[..i]);
            let line = std::mem::take(&mut self.line);
            self.field(&String::from_utf8_lossy(&line), &mut out);
            let cr = rest[i] == b'\r';
            rest = &rest[i + 1..];
            if cr {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
        }
        self.line.extend_from_slice(rest);
        out
    }

    fn field(&mut self, line: &str, out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            if let Some(data) = self.data.take() {
                out.push(SseEvent {
                    event: if event.is_empty() {
                        "message".into()
                    } else {
                        event
                    },
                    data,
                    id: self.last_id.clone(),
                });
            }
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (name, value) = match line.split_once(':') {
            Some((n, v)) => (n, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match name {
            "event" => self.event = value.to_string(),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            "id" if !value.contains('\0') => self.last_id = Some(value.to_string()),
            // `retry:` and unknown fields: ignored.
            _ => {}
        }
    }
}

/// Longest silence before a stream counts as dropped (the server sends a
/// keep-alive comment every 15 s).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(45);

/// The events of one connection.
pub struct EventStream {
    body: BoxStream<'static, Result<Vec<u8>, String>>,
    parser: SseParser,
    ready: VecDeque<SseEvent>,
    idle: Duration,
}

impl EventStream {
    /// Read events from a response.
    pub fn new(response: reqwest::Response) -> Self {
        let body = response
            .bytes_stream()
            .map(|c| c.map(|b| b.to_vec()).map_err(|e| e.to_string()))
            .boxed();
        Self::from_chunks(body, IDLE_TIMEOUT)
    }

    /// Read events from any stream of chunks (tests).
    pub fn from_chunks(body: BoxStream<'static, Result<Vec<u8>, String>>, idle: Duration) -> Self {
        Self {
            body,
            parser: SseParser::default(),
            ready: VecDeque::new(),
            idle,
        }
    }

    /// The next event; None when the server ended the stream; an error when
    /// it broke or was silent too long. Cancel-safe: a dropped call loses
    /// nothing.
    pub async fn next(&mut self) -> Option<anyhow::Result<SseEvent>> {
        loop {
            if let Some(ev) = self.ready.pop_front() {
                return Some(Ok(ev));
            }
            match tokio::time::timeout(self.idle, self.body.next()).await {
                Ok(Some(Ok(chunk))) => self.ready.extend(self.parser.feed(&chunk)),
                Ok(Some(Err(e))) => {
                    return Some(Err(anyhow::anyhow!("the event stream broke: {e}")));
                }
                Ok(None) => return None,
                Err(_) => {
                    return Some(Err(anyhow::anyhow!(
                        "the event stream was silent for {} s",
                        self.idle.as_secs()
                    )));
                }
            }
        }
    }
}

/// What to do next while following a stream.
#[derive(Debug)]
pub enum Step {
    /// An event arrived.
    Event(SseEvent),
    /// The stream is down (it dropped, cannot be opened, or was given up on):
    /// read the state from the API, report [`Follow::looked`], and go on.
    Look,
}

/// Connections in a row that may fail (or end before any event) before the
/// stream is given up for a poll.
pub const MAX_RECONNECTS: u32 = 5;
/// Failed looks in a row before following gives up (the server is gone).
pub const MAX_FAILED_LOOKS: u32 = 10;

/// Follows one stream: reconnects with backoff, resuming after the last
/// event id, and falls back to a look every `poll`.
pub struct Follow {
    client: Client,
    path: String,
    poll: Duration,
    stream: Option<EventStream>,
    /// Connections in a row that failed or ended before an event.
    failures: u32,
    failed_looks: u32,
    /// The stream was given up on; `Look` every `poll`.
    polling: bool,
    last_event_id: Option<String>,
}

impl Follow {
    pub fn new(client: Client, path: impl Into<String>, poll: Duration) -> Self {
        Self {
            client,
            path: path.into(),
            poll,
            stream: None,
            failures: 0,
            failed_looks: 0,
            polling: false,
            last_event_id: None,
        }
    }

    /// Resume after this id on the next connection.
    pub fn resume_after(&mut self, id: Option<String>) {
        self.last_event_id = id;
    }

    /// The next step. Errors: the server refused the stream (4xx), which no
    /// retry will change. Cancel-safe.
    pub async fn next(&mut self) -> anyhow::Result<Step> {
        loop {
            if let Some(stream) = &mut self.stream {
                match stream.next().await {
                    Some(Ok(ev)) => {
                        self.failures = 0;
                        if ev.id.is_some() {
                            self.last_event_id.clone_from(&ev.id);
                        }
                        return Ok(Step::Event(ev));
                    }
                    Some(Err(e)) => {
                        tracing::debug!(path = %self.path, error = %e, "stream dropped")
                    }
                    None => tracing::debug!(path = %self.path, "stream ended"),
                }
                self.stream = None;
                self.failures += 1;
                if self.failures > MAX_RECONNECTS {
                    self.polling = true;
                    eprintln!(
                        "the event stream keeps dropping; looking every {:.1} s instead",
                        self.poll.as_secs_f64()
                    );
                }
                return Ok(Step::Look);
            }
            if self.polling {
                tokio::time::sleep(self.poll).await;
                return Ok(Step::Look);
            }
            if self.failures > 0 {
                tokio::time::sleep(backoff(self.failures)).await;
            }
            match self
                .client
                .events(&self.path, self.last_event_id.as_deref())
                .await
            {
                // Nothing to look at yet: wait for the first event.
                Ok(stream) => self.stream = Some(stream),
                Err(e) if refused(&e) => return Err(e),
                Err(e) => {
                    self.failures += 1;
                    if self.failures > MAX_RECONNECTS {
                        self.polling = true;
                        eprintln!(
                            "the event stream is unavailable ({e:#}); looking every {:.1} s instead",
                            self.poll.as_secs_f64()
                        );
                    }
                    return Ok(Step::Look);
                }
            }
        }
    }

    /// Report how a look went: a refusal (4xx) or too many failures in a row
    /// end following with the error.
    pub fn looked(&mut self, result: anyhow::Result<()>) -> anyhow::Result<()> {
        match result {
            Ok(()) => {
                self.failed_looks = 0;
                Ok(())
            }
            Err(e) if refused(&e) => Err(e),
            Err(e) => {
                self.failed_looks += 1;
                if self.failed_looks >= MAX_FAILED_LOOKS {
                    Err(e)
                } else {
                    tracing::debug!(error = %e, "look failed; trying again");
                    Ok(())
                }
            }
        }
    }
}

/// 0.5 s, 1 s, 2 s … at most 10 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << failures.saturating_sub(1).min(5)))
        .min(Duration::from_secs(10))
}

/// The server answered and said no (not found, forbidden): retrying won't help.
fn refused(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ApiError>()
        .is_some_and(|a| (400..500).contains(&a.status) && a.status != 408 && a.status != 429)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: &str, data: &str, id: Option<&str>) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
            id: id.map(str::to_string),
        }
    }

    #[test]
    fn events_fields_and_comments() {
        let mut p = SseParser::default();
        let out = p.feed(b": keep-alive\n\nevent: status\ndata: {\"a\":1}\n\n");
        assert_eq!(out, vec![ev("status", "{\"a\":1}", None)]);
        // No `event:`: a message; `data:` without a space keeps its text.
        assert_eq!(p.feed(b"data:x\n\n"), vec![ev("message", "x", None)]);
        // An empty line without data dispatches nothing, and resets the name.
        assert!(p.feed(b"event: lone\n\n").is_empty());
        assert_eq!(p.feed(b"data: y\n\n"), vec![ev("message", "y", None)]);
        // Unknown fields and retry are ignored; a field without colon is a name.
        assert_eq!(
            p.feed(b"retry: 100\nfoo: bar\ndata\n\n"),
            vec![ev("message", "", None)]
        );
    }

    #[test]
    fn multi_line_data_is_joined_with_newlines() {
        let mut p = SseParser::default();
        let out = p.feed(b"event: epoch\ndata: line one\ndata: line two\ndata:\n\n");
        assert_eq!(out, vec![ev("epoch", "line one\nline two\n", None)]);
    }

    #[test]
    fn ids_carry_over_to_later_events() {
        let mut p = SseParser::default();
        let out = p.feed(b"id: 3\nevent: epoch\ndata: a\n\nevent: status\ndata: b\n\n");
        assert_eq!(
            out,
            vec![ev("epoch", "a", Some("3")), ev("status", "b", Some("3"))]
        );
        // An id with NUL is ignored.
        assert_eq!(
            p.feed(b"id: x\0y\ndata: c\n\n"),
            vec![ev("message", "c", Some("3"))]
        );
    }

    #[test]
    fn crlf_cr_and_chunks_cut_anywhere() {
        let text = b"event: status\r\ndata: one\r\n\r\n: c\revent: epoch\rid: 7\rdata: two\r\r";
        let whole = SseParser::default().feed(text);
        assert_eq!(
            whole,
            vec![ev("status", "one", None), ev("epoch", "two", Some("7"))]
        );
        // Every cut of the same bytes gives the same events (a CR at a chunk's
        // end, its LF at the next one's start, is one line end).
        for cut in 0..text.len() {
            let mut p = SseParser::default();
            let mut out = p.feed(&text[..cut]);
            out.extend(p.feed(&text[cut..]));
            assert_eq!(out, whole, "cut at {cut}");
        }
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for b in b"data: a\r\n\r\ndata: b\r\n\r\n" {
            out.extend(p.feed(&[*b]));
        }
        assert_eq!(
            out,
            vec![ev("message", "a", None), ev("message", "b", None)]
        );
    }

    #[test]
    fn utf8_split_across_chunks() {
        let text = "data: é\n\n".as_bytes();
        let mut p = SseParser::default();
        let mut out = p.feed(&text[..7]);
        out.extend(p.feed(&text[7..]));
        assert_eq!(out, vec![ev("message", "é", None)]);
    }

    #[tokio::test]
    async fn a_stream_ends_breaks_or_falls_silent() {
        let chunks: Vec<Result<Vec<u8>, String>> = vec![
            Ok(b"event: a\nda".to_vec()),
            Ok(b"ta: 1\n\nevent: b\ndata: 2\n\n".to_vec()),
        ];
        let mut s = EventStream::from_chunks(
            futures::stream::iter(chunks).boxed(),
            Duration::from_secs(5),
        );
        assert_eq!(s.next().await.unwrap().unwrap().event, "a");
        assert_eq!(s.next().await.unwrap().unwrap().data, "2");
        assert!(s.next().await.is_none());

        let broken: Vec<Result<Vec<u8>, String>> = vec![Err("reset".into())];
        let mut s = EventStream::from_chunks(
            futures::stream::iter(broken).boxed(),
            Duration::from_secs(5),
        );
        assert!(s.next().await.unwrap().is_err());

        let mut s = EventStream::from_chunks(
            futures::stream::pending().boxed(),
            Duration::from_millis(20),
        );
        let err = s.next().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("silent"), "{err}");
    }

    /// A dropped stream is reopened after a backoff, resuming after the last
    /// event id; a failed connection asks for a look; a refusal ends it.
    #[tokio::test]
    async fn follow_reconnects_resumes_and_stops_on_a_refusal() {
        use std::sync::{Arc, Mutex};

        use axum::http::{HeaderMap, StatusCode, header::CONTENT_TYPE};
        use axum::response::IntoResponse;

        let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
        let log = Arc::clone(&seen);
        let app = axum::Router::new().route(
            "/s",
            axum::routing::get(move |headers: HeaderMap| {
                let log = Arc::clone(&log);
                async move {
                    let mut calls = log.lock().unwrap();
                    calls.push(
                        headers
                            .get("last-event-id")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string),
                    );
                    match calls.len() {
                        1 => (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response(),
                        2 => (
                            [(CONTENT_TYPE, "text/event-stream")],
                            ": hi\n\nid: 1\nevent: epoch\ndata: a\n\n",
                        )
                            .into_response(),
                        _ => (StatusCode::NOT_FOUND, "gone").into_response(),
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = Client::new(&super::super::Conn {
            url: format!("http://{addr}"),
            token: None,
        })
        .unwrap();
        let mut f = Follow::new(client, "/s", Duration::from_secs(1));
        assert!(matches!(f.next().await.unwrap(), Step::Look));
        match f.next().await.unwrap() {
            Step::Event(e) => assert_eq!(e, ev("epoch", "a", Some("1"))),
            other => panic!("{other:?}"),
        }
        assert!(matches!(f.next().await.unwrap(), Step::Look));
        let refused = f.next().await.unwrap_err();
        assert!(refused.to_string().contains("404"), "{refused}");
        assert_eq!(*seen.lock().unwrap(), vec![None, None, Some("1".into())]);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(5), Duration::from_secs(8));
        assert_eq!(backoff(30), Duration::from_secs(10));
    }
}
