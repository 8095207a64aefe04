//! An artifact's bytes as an HTTP answer, for the API download and the run
//! page: streamed from the store (never held whole), with `Range` support
//! (206 and `Content-Range`, 416 for a range outside the object), `HEAD`, and
//! the sha256 checked on the way. A full download holds its last chunk back
//! until the hash matches, so a corrupt object never reaches a client whole;
//! ranges are served only from objects that hashed right once. Rows from
//! before the store (inline `bytea`) are served from memory, as before.

use std::ops::Range;

use axum::body::Body;
use axum::http::header::{ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, RANGE};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use maelab_core::artifact_store::{ArtifactStore, StoreError};

use super::AppError;
use crate::read_model::artifacts::ArtifactFile;

/// Where the bytes come from.
enum Source<'a> {
    Inline(Vec<u8>),
    Stored { key: &'a str, sha256: &'a str },
}

/// The body part of the answer (status, length, range headers, bytes);
/// callers add the content type, disposition and ETag.
pub async fn respond(
    store: &ArtifactStore,
    file: ArtifactFile,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response, AppError> {
    let ArtifactFile {
        info,
        bytes,
        store_key,
    } = file;
    let sha256 = info.sha256.unwrap_or_default();
    let source = match (&store_key, bytes) {
        (Some(key), _) => Source::Stored {
            key,
            sha256: &sha256,
        },
        (None, Some(bytes)) => Source::Inline(bytes),
        (None, None) => Source::Inline(Vec::new()),
    };
    let wanted = headers
        .get(RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_range);
    let size = match &source {
        Source::Inline(b) => b.len() as u64,
        // A range needs the object verified first (which also gives its size).
        Source::Stored { key, sha256 } if wanted.is_some() => {
            store.verify(key, sha256).await.map_err(store_error)?
        }
        Source::Stored { .. } => u64::try_from(info.size_bytes.unwrap_or(0)).unwrap_or(0),
    };
    let range = match wanted.map(|w| w.resolve(size)) {
        Some(None) => {
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [
                    (CONTENT_RANGE, format!("bytes */{size}")),
                    (ACCEPT_RANGES, "bytes".to_string()),
                ],
            )
                .into_response());
        }
        Some(Some(r)) => Some(r),
        None => None,
    };
    let (status, length) = match &range {
        Some(r) => (StatusCode::PARTIAL_CONTENT, r.end - r.start),
        None => (StatusCode::OK, size),
    };
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        match (source, &range) {
            (Source::Inline(bytes), Some(r)) => {
                Body::from(bytes[r.start as usize..r.end as usize].to_vec())
            }
            (Source::Inline(bytes), None) => Body::from(bytes),
            (Source::Stored { key, .. }, Some(r)) => {
                let (_, stream) = store
                    .get_stream(key, Some(r.clone()))
                    .await
                    .map_err(store_error)?;
                Body::from_stream(stream)
            }
            (Source::Stored { key, sha256 }, None) => Body::from_stream(
                store
                    .verified_stream(key, sha256)
                    .await
                    .map_err(store_error)?,
            ),
        }
    };
    let mut response = Response::builder()
        .status(status)
        .header(ACCEPT_RANGES, "bytes")
        .header(CONTENT_LENGTH, length);
    if let Some(r) = &range {
        response = response.header(
            CONTENT_RANGE,
            format!("bytes {}-{}/{size}", r.start, r.end - 1),
        );
    }
    response
        .body(body)
        .map_err(|e| AppError::Internal(anyhow::anyhow!("building the download: {e}")))
}

/// A store failure as an answer: a transient one is 503, a corrupt or
/// missing object our fault (500, logged by the error layer).
pub fn store_error(e: StoreError) -> AppError {
    if e.is_transient() {
        tracing::warn!(error = %e, "artifact store unavailable");
        return AppError::Unavailable("the artifact store is unavailable; try again".into());
    }
    AppError::Internal(anyhow::Error::new(e).context("reading an artifact"))
}

/// One `bytes=` range as asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wanted {
    /// `start-end` (inclusive end) or `start-`.
    From { start: u64, end: Option<u64> },
    /// `-n`: the last n bytes.
    Suffix(u64),
}

impl Wanted {
    /// The half-open range within `size` bytes; None when unsatisfiable.
    fn resolve(self, size: u64) -> Option<Range<u64>> {
        match self {
            Self::From { start, end } => {
                let end = end.map_or(size, |e| e.saturating_add(1).min(size));
                (start < size && start < end).then_some(start..end)
            }
            Self::Suffix(n) => (n > 0 && size > 0).then(|| size - n.min(size)..size),
        }
    }
}

/// A `Range` header with one `bytes` range; anything else (other units,
/// several ranges, bad syntax) is ignored and the whole file served, as
/// RFC 9110 allows.
fn parse_range(header: &str) -> Option<Wanted> {
    let spec = header.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    let (start, end) = (start.trim(), end.trim());
    if start.is_empty() {
        return end.parse().ok().map(Wanted::Suffix);
    }
    let start = start.parse().ok()?;
    let end = if end.is_empty() {
        None
    } else {
        let end: u64 = end.parse().ok()?;
        if end < start {
            return None;
        }
        Some(end)
    };
    Some(Wanted::From { start, end })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_resolve_like_rfc_9110() {
        let r = |h: &str, size| parse_range(h).map(|w| w.resolve(size));
        assert_eq!(r("bytes=0-9", 100), Some(Some(0..10)));
        assert_eq!(r("bytes=90-", 100), Some(Some(90..100)));
        assert_eq!(r("bytes=90-200", 100), Some(Some(90..100)));
        assert_eq!(r("bytes=-10", 100), Some(Some(90..100)));
        assert_eq!(r("bytes=-200", 100), Some(Some(0..100)));
        assert_eq!(r("bytes=100-", 100), Some(None), "past the end: 416");
        assert_eq!(r("bytes=-0", 100), Some(None));
        for ignored in [
            "items=0-1",
            "bytes=0-1,5-6",
            "bytes=a-b",
            "bytes=5-1",
            "bytes=",
        ] {
            assert_eq!(parse_range(ignored), None, "{ignored}");
        }
    }
}
