//! The sign-in form. Posting it goes to the auth module's `POST /signin`,
//! which checks the token and sets the session and CSRF cookies.

use askama::Template;
use axum::Router;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::PageQuery;
use crate::http::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/signin", get(show))
}

#[derive(Template)]
#[template(path = "signin.html")]
struct SignInPage {
    message: String,
    next: String,
}

/// The sign-in form with `message` above it, returning to `next` afterwards.
pub fn page(message: &str, next: &str) -> Response {
    let html = SignInPage {
        message: message.to_string(),
        next: next.to_string(),
    }
    .render();
    match html {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "sign-in page failed");
            "sign in: POST /signin with a token".into_response()
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Next {
    next: Option<String>,
}

async fn show(PageQuery(q): PageQuery<Next>) -> Response {
    page(
        "Sign in with an access token (`maelab token create --name NAME` prints one).",
        q.next.as_deref().unwrap_or("/runs"),
    )
}
