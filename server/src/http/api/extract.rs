//! Strict request extraction for the API. axum's own extractors answer
//! rejections as plain text; these answer every mistake as the JSON error
//! body with the field: 415 for a wrong content type, 413 past the body limit
//! (`--body-limit`), 400 for malformed JSON or query strings and ids that are
//! not UUIDs, 422 for well-formed JSON of the wrong shape (unknown keys, wrong
//! types, numbers out of range), naming the field.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::request::Parts;
use futures::StreamExt;
use maelab_core::ConfigErrors;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::http::{AppError, AppState};

/// Read a whole body, refusing (413) as soon as it passes `limit` bytes, so
/// an oversized upload is never buffered.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, AppError> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| AppError::bad_request("", format!("cannot read the body: {e}")))?;
        if buf.len() + chunk.len() > limit {
            return Err(AppError::PayloadTooLarge(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// Whether a Content-Type names JSON (`application/json`, `…+json`, with or
/// without parameters).
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// serde names an unknown key only in its message (the path points at the
/// enclosing object); lift it into the field so clients see which key.
pub(crate) fn field_of(path: &str, reason: &str) -> String {
    let path = if path == "." { "" } else { path };
    if let Some(rest) = reason.strip_prefix("unknown field `")
        && let Some(end) = rest.find('`')
    {
        let key = &rest[..end];
        // Some deserializers already put the key in the path.
        if path == key || path.ends_with(&format!(".{key}")) {
            return path.to_string();
        }
        return if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        };
    }
    path.to_string()
}

/// Give every validation error a field: serde names an unknown key only in
/// its message.
pub fn with_fields(errors: ConfigErrors) -> ConfigErrors {
    ConfigErrors(
        errors
            .0
            .into_iter()
            .map(|mut e| {
                e.field = field_of(&e.field, &e.reason);
                e
            })
            .collect(),
    )
}

/// serde_json appends " at line L column C", meaningless for a parsed value.
fn without_position(message: &str) -> &str {
    message.find(" at line ").map_or(message, |i| &message[..i])
}

/// The body as a JSON value: content type, limit and syntax checked.
pub async fn json_value(req: Request, limit: usize) -> Result<serde_json::Value, AppError> {
    let bytes = json_bytes(req, limit).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| AppError::bad_request("", format!("malformed JSON: {e}")))
}

/// The body's bytes with the content type, limit and emptiness checked, for
/// a caller that parses JSON itself (a study's arms keep their order and a
/// repeated key is caught only when parsed from the text).
pub async fn json_bytes(req: Request, limit: usize) -> Result<Bytes, AppError> {
    let (parts, body) = req.into_parts();
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !is_json(content_type) {
        return Err(AppError::UnsupportedMediaType(format!(
            "expected Content-Type: application/json, got `{content_type}`"
        )));
    }
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(AppError::PayloadTooLarge(limit));
    }
    let bytes = read_body(body, limit).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(AppError::bad_request(
            "",
            "the body is empty; expected a JSON object",
        ));
    }
    Ok(bytes)
}

/// Deserialize `value` into `T`, answering 422 with the field on a mismatch.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, AppError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let reason = without_position(&e.inner().to_string()).to_string();
        let field = field_of(&e.path().to_string(), &reason);
        AppError::Invalid(ConfigErrors::one(field, reason))
    })
}

/// A JSON body deserialised strictly into `T` (see the module docs).
#[derive(Debug, Clone)]
pub struct StrictJson<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequest<AppState> for StrictJson<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, AppError> {
        let value = json_value(req, state.settings.body_limit).await?;
        Ok(Self(from_value(value)?))
    }
}

/// A query string deserialised strictly into `T`: 400 naming the parameter.
#[derive(Debug, Clone)]
pub struct StrictQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for StrictQuery<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AppError> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de).map(Self).map_err(|e| {
            let reason = e.inner().to_string();
            let field = field_of(&e.path().to_string(), &reason);
            AppError::bad_request(field, reason)
        })
    }
}

/// Parse a path segment as a run id: 400 naming the parameter when it is not
/// a UUID (the route exists; the id is malformed).
pub fn run_id(raw: &str) -> Result<Uuid, AppError> {
    Uuid::parse_str(raw)
        .map_err(|_| AppError::bad_request("run_id", format!("`{}` is not a UUID", truncated(raw))))
}

/// At most 64 characters of client text echoed back in an error.
fn truncated(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if s.chars().nth(64).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("Application/JSON"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/x-www-form-urlencoded"));
        assert!(!is_json(""));
    }

    #[test]
    fn unknown_keys_become_the_field() {
        assert_eq!(
            field_of(".", "unknown field `foo`, expected one of `a`"),
            "foo"
        );
        assert_eq!(field_of("a", "unknown field `b`, expected `c`"), "a.b");
        assert_eq!(field_of("epochs", "invalid type: string"), "epochs");
        assert_eq!(field_of("foo", "unknown field `foo`, expected `a`"), "foo");
    }

    #[test]
    fn non_uuid_ids_are_400_naming_run_id() {
        let err = run_id("../../etc/passwd").unwrap_err();
        assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST);
        assert_eq!(err.body().field.as_deref(), Some("run_id"));
        assert!(run_id("6f1c7c1e-8a5b-4b7e-9a43-2f3c1c0d9e11").is_ok());
    }
}
