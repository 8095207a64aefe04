//! Browser sign-in: `POST /signin` with a token (form field `token`) sets the
//! HttpOnly, SameSite=Strict session cookie and the double-submit CSRF cookie;
//! `POST /signout` clears both. The sign-in form itself is origin-checked, so
//! another site cannot sign a browser in under the attacker's token.

use axum::extract::State;
use axum::http::header::{LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Router};
use serde::Deserialize;

use super::csrf::{self, CSRF_COOKIE, SESSION_COOKIE};
use super::tokens;
use crate::http::{AppError, AppState};

/// Browser sessions last this long (seconds); then the user signs in again.
const SESSION_MAX_AGE: u32 = 7 * 24 * 3600;

/// The sign-in form.
#[derive(Debug, Deserialize)]
pub struct SignIn {
    pub token: String,
    /// Where to go afterwards: a local path (default `/`).
    pub next: Option<String>,
}

/// `/signin` and `/signout`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/signin", post(sign_in))
        .route("/signout", post(sign_out))
}

/// Only local paths, so sign-in cannot be used as an open redirect.
fn local_path(next: Option<&str>) -> &str {
    match next {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') => p,
        _ => "/",
    }
}

fn see_other(to: &str, cookies: &[String]) -> Result<Response, AppError> {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    headers.insert(
        LOCATION,
        HeaderValue::from_str(to).map_err(|e| AppError::bad_request("next", e.to_string()))?,
    );
    for c in cookies {
        headers.append(
            SET_COOKIE,
            HeaderValue::from_str(c).map_err(|e| AppError::Internal(e.into()))?,
        );
    }
    Ok(response)
}

async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> Result<Response, AppError> {
    csrf::check_origin(&headers)?;
    let secret = form.token.trim();
    let Some(token) = tokens::verify(&state.db, secret).await? else {
        return Err(AppError::Unauthorized(
            "the token is unknown or revoked".into(),
        ));
    };
    tracing::info!(token = %token.name, "browser signed in");
    // The secret is URL-safe (`mlb_` + hex), so it needs no cookie encoding.
    let session = format!(
        "{SESSION_COOKIE}={secret}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_MAX_AGE}"
    );
    let csrf_cookie = format!(
        "{CSRF_COOKIE}={}; Path=/; SameSite=Strict; Max-Age={SESSION_MAX_AGE}",
        csrf::new_token()
    );
    see_other(local_path(form.next.as_deref()), &[session, csrf_cookie])
}

async fn sign_out(headers: HeaderMap) -> Result<Response, AppError> {
    csrf::check_origin(&headers)?;
    let clear = |name: &str| format!("{name}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    see_other("/", &[clear(SESSION_COOKIE), clear(CSRF_COOKIE)])
}

#[cfg(test)]
mod tests {
    use super::local_path;

    #[test]
    fn next_is_only_ever_a_local_path() {
        assert_eq!(local_path(Some("/runs/1")), "/runs/1");
        assert_eq!(local_path(Some("//evil.example")), "/");
        assert_eq!(local_path(Some("https://evil.example")), "/");
        assert_eq!(local_path(Some("/\\evil")), "/");
        assert_eq!(local_path(None), "/");
    }
}
