//! Browser sign-in: `POST /signin` with a token (form field `token`) starts a
//! server-side session ([`super::session_store`]) and sets its HttpOnly,
//! SameSite=Strict cookie and the double-submit CSRF cookie; `POST /signout`
//! ends the session on the server and clears both. The sign-in form itself is
//! origin-checked, so another site cannot sign a browser in under the
//! attacker's token.

use axum::extract::State;
use axum::http::header::{LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Router};
use serde::Deserialize;

use super::csrf::{self, CSRF_COOKIE, SESSION_COOKIE};
use super::session_store;
use super::tokens;
use crate::http::{AppError, AppState};

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
    let token = tokens::verify(&state.db, form.token.trim()).await?;
    // Signing in again replaces this browser's earlier session.
    if let Some(old) = csrf::cookie(&headers, SESSION_COOKIE) {
        session_store::end(&state.db, old).await?;
    }
    let started = session_store::start(&state.db, &token).await?;
    tracing::info!(token = %token.name, expires_at = %started.expires_at, "browser signed in");
    // Both cookies end with the session (whole seconds, at least one).
    let max_age = (started.expires_at - chrono::Utc::now())
        .num_seconds()
        .max(1);
    // The secret is URL-safe (`mls_` + hex), so it needs no cookie encoding.
    let session = format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}",
        started.secret
    );
    let csrf_cookie = format!(
        "{CSRF_COOKIE}={}; Path=/; SameSite=Strict; Max-Age={max_age}",
        csrf::new_token()
    );
    see_other(local_path(form.next.as_deref()), &[session, csrf_cookie])
}

/// Append the `Set-Cookie` headers that remove the session and CSRF
/// cookies: sign-out, and any answer to a cookie whose session has ended.
pub fn clear_cookies(headers: &mut HeaderMap) {
    for name in [SESSION_COOKIE, CSRF_COOKIE] {
        let clear = format!("{name}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
        if let Ok(value) = HeaderValue::from_str(&clear) {
            headers.append(SET_COOKIE, value);
        }
    }
}

/// End the session on the server, then clear the cookies; a cookie of an
/// unknown or ended session is simply cleared.
async fn sign_out(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, AppError> {
    csrf::check_origin(&headers)?;
    if let Some(secret) = csrf::cookie(&headers, SESSION_COOKIE) {
        session_store::end(&state.db, secret).await?;
        tracing::info!("browser signed out");
    }
    let mut response = see_other("/", &[])?;
    clear_cookies(response.headers_mut());
    Ok(response)
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
