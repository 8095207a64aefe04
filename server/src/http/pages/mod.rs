//! The browser pages: server-rendered askama templates, live over SSE
//! (`crate::live`). Each page is one module with its handlers; they share the
//! HTML error page and the same-origin check for form posts here.

mod compare;
mod form;
mod new_run;
mod new_study;
mod queue;
mod run;
mod runs;
mod signin;
mod studies;
mod study;

use askama::Template;
use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::de::DeserializeOwned;

use super::api::extract::StrictQuery;
use super::{AppError, AppState};
use crate::auth::ReadAccess;
use crate::auth::csrf;

/// Every page route.
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(runs::router())
        .merge(new_run::router())
        .merge(run::router())
        .merge(compare::router())
        .merge(queue::router())
        .merge(studies::router())
        .merge(new_study::router())
        .merge(study::router())
        .merge(signin::router())
}

/// Why a page could not be shown; answered as an HTML page, never JSON.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// 404: the thing named in the URL does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// 400: the URL or form cannot be read.
    #[error("{0}")]
    BadRequest(String),
    /// 401: changing something (or, on a closed server, reading) needs a
    /// sign-in; answered with the sign-in form.
    #[error("{0}")]
    Unauthorized(String),
    /// 401: the browser's session ended; the sign-in form, and its cookies
    /// cleared.
    #[error("{0}")]
    SignedOut(String),
    /// 403: a form post from another site, or without its CSRF value.
    #[error("{0}")]
    Forbidden(String),
    /// 409: e.g. cancelling a finished run.
    #[error("{0}")]
    Conflict(String),
    /// 413: a form post past the body limit.
    #[error("{0}")]
    TooLarge(String),
    /// 415: a form post that is not `application/x-www-form-urlencoded`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 500: logged, shown generically.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("template error: {0}")]
    Render(#[from] askama::Error),
}

impl From<crate::read_model::ReadError> for PageError {
    fn from(e: crate::read_model::ReadError) -> Self {
        use crate::read_model::ReadError;
        match e {
            ReadError::Invalid { .. } => Self::BadRequest(e.to_string()),
            ReadError::Db(e) => Self::Db(e),
        }
    }
}

impl From<maelab_core::db::runs::RunError> for PageError {
    fn from(e: maelab_core::db::runs::RunError) -> Self {
        use maelab_core::db::runs::RunError;
        match e {
            RunError::NotFound(id) => Self::NotFound(format!("run {id}")),
            RunError::Conflict(m) => Self::Conflict(m),
            RunError::Invalid(errors) => Self::BadRequest(errors.to_string()),
            RunError::Db(e) => Self::Db(e),
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    title: String,
    message: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, message) = match &self {
            Self::NotFound(what) => (
                StatusCode::NOT_FOUND,
                "Not found",
                format!("{what} does not exist."),
            ),
            Self::BadRequest(m) => (StatusCode::BAD_REQUEST, "Bad request", m.clone()),
            Self::Unauthorized(m) => {
                return (StatusCode::UNAUTHORIZED, signin::page(m, "/runs")).into_response();
            }
            Self::SignedOut(m) => {
                let mut response =
                    (StatusCode::UNAUTHORIZED, signin::page(m, "/runs")).into_response();
                crate::auth::session::clear_cookies(response.headers_mut());
                return response;
            }
            Self::Forbidden(m) => (StatusCode::FORBIDDEN, "Forbidden", m.clone()),
            Self::Conflict(m) => (StatusCode::CONFLICT, "Not possible now", m.clone()),
            Self::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, "Too large", m.clone()),
            Self::UnsupportedMediaType(m) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "Not a form", m.clone())
            }
            Self::Db(_) | Self::Render(_) => {
                tracing::error!(error = %self, "page failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Server error",
                    "Something went wrong; the server log has the details.".to_string(),
                )
            }
        };
        let page = ErrorPage {
            title: title.to_string(),
            message,
        };
        match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(_) => (status, title.to_string()).into_response(),
        }
    }
}

/// Render a template into a 200 HTML answer.
fn render(page: &impl Template) -> Result<Response, PageError> {
    Ok(Html(page.render()?).into_response())
}

impl From<AppError> for PageError {
    /// The auth extractors answer in the API's terms; pages answer in HTML.
    fn from(e: AppError) -> Self {
        match e {
            AppError::Unauthorized(m) => Self::Unauthorized(m),
            AppError::SignedOut(m) => Self::SignedOut(m),
            AppError::Forbidden(m) => Self::Forbidden(m),
            AppError::NotFound(m) => Self::NotFound(m),
            AppError::Conflict(m) => Self::Conflict(m),
            AppError::Internal(cause) => {
                tracing::error!(error = ?cause, "page failed");
                Self::BadRequest("the server could not do that; its log has the details".into())
            }
            e @ (AppError::PayloadTooLarge(_) | AppError::TooManyItems(_)) => {
                Self::TooLarge(e.to_string())
            }
            AppError::UnsupportedMediaType(m) => Self::UnsupportedMediaType(m),
            AppError::BadRequest { field, reason } if !field.is_empty() => {
                Self::BadRequest(format!("{field}: {reason}"))
            }
            other => Self::BadRequest(other.to_string()),
        }
    }
}

/// A page's query string read like the API's ([`StrictQuery`]): a value of
/// the wrong type (`page=abc`, a number past i64) or a repeated parameter is
/// a 400 page naming the parameter, where axum's `Query` answers plain text.
/// Unknown parameters are ignored (links with tracking parameters still open).
pub(crate) struct PageQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for PageQuery<T> {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, PageError> {
        StrictQuery::from_request_parts(parts, state)
            .await
            .map(|StrictQuery(q)| Self(q))
            .map_err(PageError::from)
    }
}

/// Reads of the pages: open by default; on a server started with
/// `--require-auth-for-reads`, a browser without a session is sent to sign in.
pub struct Reader;

impl FromRequestParts<AppState> for Reader {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match ReadAccess::from_request_parts(parts, state).await {
            Ok(_) => Ok(Self),
            Err(e @ (AppError::Unauthorized(_) | AppError::SignedOut(_))) => {
                let here = parts.uri.path_and_query().map_or("/runs", |p| p.as_str());
                let to = format!(
                    "/signin?{}",
                    serde_urlencoded::to_string([("next", here)]).unwrap_or_default()
                );
                let mut response = Redirect::to(&to).into_response();
                if let AppError::SignedOut(_) = e {
                    crate::auth::session::clear_cookies(response.headers_mut());
                }
                Err(response)
            }
            Err(e) => Err(PageError::from(e).into_response()),
        }
    }
}

/// The double-submit value our forms repeat in their hidden `csrf_token`
/// field (empty before sign-in; the post is then refused with the sign-in form).
pub(crate) fn csrf_value(headers: &axum::http::HeaderMap) -> String {
    csrf::form_token(headers).unwrap_or_default()
}

/// The 404 page for any URL no route knows.
pub async fn not_found() -> Response {
    PageError::NotFound("this page".into()).into_response()
}
