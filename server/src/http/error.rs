//! One error type for every handler. Client mistakes carry the field and the
//! reason and answer `{"error", "field", "reason"}` with their 4xx status;
//! anything else is logged with its cause and answered with a generic 500.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maelab_core::ConfigErrors;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// 400: the request cannot be read (malformed JSON, bad query string).
    #[error("{reason}")]
    BadRequest { field: String, reason: String },
    /// 422: well-formed, but a field breaks a rule.
    #[error("{0}")]
    Invalid(ConfigErrors),
    /// 401: no usable credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// 401: the browser's session ended (signed out, expired, its token
    /// revoked); the answer also clears its cookies.
    #[error("{0}")]
    SignedOut(String),
    /// 403: credentials, but not allowed (e.g. a cross-site form post).
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("{0} not found")]
    NotFound(String),
    /// 409: an impossible transition (cancelling a finished run).
    #[error("{0}")]
    Conflict(String),
    /// 413.
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// 413: a batch with more items than a request may carry.
    #[error("{0}")]
    TooManyItems(String),
    /// 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 503: the database is down.
    #[error("{0}")]
    Unavailable(String),
    /// 500: our fault; the cause is logged, never sent.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// The JSON body of every error answer.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct ErrorBody {
    pub error: String,
    pub field: Option<String>,
    pub reason: String,
}

impl AppError {
    pub fn bad_request(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::BadRequest {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthorized(_) | Self::SignedOut(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) | Self::TooManyItems(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The body sent to the client (never the cause of a 500).
    pub fn body(&self) -> ErrorBody {
        let status = self.status();
        let error = status
            .canonical_reason()
            .unwrap_or("error")
            .to_lowercase()
            .replace(' ', "_");
        match self {
            Self::BadRequest { field, reason } => ErrorBody {
                error,
                field: (!field.is_empty()).then(|| field.clone()),
                reason: reason.clone(),
            },
            Self::Invalid(errors) => {
                let first = errors.first();
                ErrorBody {
                    error,
                    field: (!first.field.is_empty()).then(|| first.field.clone()),
                    reason: first.reason.clone(),
                }
            }
            Self::Internal(_) => ErrorBody {
                error,
                field: None,
                reason: "internal error; the server log has the details".into(),
            },
            other => ErrorBody {
                error,
                field: None,
                reason: other.to_string(),
            },
        }
    }
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                Self::Unavailable("the database is unavailable; try again shortly".into())
            }
            other => Self::Internal(other.into()),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let Self::Internal(cause) = &self {
            tracing::error!(error = ?cause, "request failed");
        }
        let mut body = serde_json::to_value(self.body()).unwrap_or_default();
        if let (Self::Invalid(errors), Some(obj)) = (&self, body.as_object_mut()) {
            // Every rejected field, for forms and clients that show them all.
            obj.insert(
                "errors".into(),
                serde_json::to_value(&errors.0).unwrap_or_default(),
            );
        }
        let mut response = (status, Json(body)).into_response();
        if let Self::SignedOut(_) = &self {
            crate::auth::session::clear_cookies(response.headers_mut());
        }
        response
    }
}
