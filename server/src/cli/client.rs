//! A thin HTTP client for the API (reqwest with rustls): JSON in and out, the
//! server's `{"error", "field", "reason"}` turned into an error that says it.

use anyhow::Context;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Conn;
use crate::http::ErrorBody;

/// The server refused a request.
#[derive(Debug, thiserror::Error)]
#[error("{status}: {}{}", .body.field.as_deref().map(|f| format!("{f}: ")).unwrap_or_default(), .body.reason)]
pub struct ApiError {
    pub status: u16,
    pub body: ErrorBody,
}

/// Talks to one server.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(conn: &Conn) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("maelab-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .context("building the HTTP client")?;
        let base = conn.url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            anyhow::bail!("--url / MAELAB_URL must start with http:// or https://, got `{base}`");
        }
        Ok(Self {
            http,
            base,
            token: conn.token.clone().filter(|t| !t.is_empty()),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let response = req
            .send()
            .await
            .with_context(|| format!("cannot reach the maelab server at {}", self.base))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str::<ErrorBody>(&text).unwrap_or(ErrorBody {
            error: status.canonical_reason().unwrap_or("error").to_string(),
            field: None,
            reason: text,
        });
        Err(ApiError {
            status: status.as_u16(),
            body,
        }
        .into())
    }

    /// GET `path` and decode JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let r = self.send(self.request(reqwest::Method::GET, path)).await?;
        r.json().await.with_context(|| format!("decoding {path}"))
    }

    /// GET `path` as text (CSV, log.txt).
    pub async fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let r = self.send(self.request(reqwest::Method::GET, path)).await?;
        r.text().await.with_context(|| format!("reading {path}"))
    }

    /// GET `path` as bytes, unchanged (an export written to a file).
    pub async fn get_bytes(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let r = self.send(self.request(reqwest::Method::GET, path)).await?;
        Ok(r.bytes()
            .await
            .with_context(|| format!("reading {path}"))?
            .to_vec())
    }

    /// GET `path` as a stream of server-sent events, resuming after
    /// `last_event_id` when given.
    pub async fn events(
        &self,
        path: &str,
        last_event_id: Option<&str>,
    ) -> anyhow::Result<super::sse::EventStream> {
        let mut req = self
            .request(reqwest::Method::GET, path)
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let r = self.send(req).await?;
        Ok(super::sse::EventStream::new(r))
    }

    /// POST JSON to `path` and decode the JSON answer.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&B>,
    ) -> anyhow::Result<T> {
        let mut req = self.request(reqwest::Method::POST, path);
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = self.send(req).await?;
        r.json().await.with_context(|| format!("decoding {path}"))
    }

    /// POST JSON to `path`; the answer's status (200 and 201 tell a found
    /// from a created resource) and its decoded JSON.
    pub async fn post_status<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<(u16, T)> {
        let r = self
            .send(self.request(reqwest::Method::POST, path).json(body))
            .await?;
        let status = r.status().as_u16();
        let body = r.json().await.with_context(|| format!("decoding {path}"))?;
        Ok((status, body))
    }

    /// PUT a streamed body of `len` bytes to `path` and decode the JSON answer.
    pub async fn put_stream<T: DeserializeOwned>(
        &self,
        path: &str,
        body: reqwest::Body,
        len: u64,
        media_type: &str,
    ) -> anyhow::Result<T> {
        let req = self
            .request(reqwest::Method::PUT, path)
            .header(reqwest::header::CONTENT_TYPE, media_type)
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(body);
        let r = self.send(req).await?;
        r.json().await.with_context(|| format!("decoding {path}"))
    }
}
