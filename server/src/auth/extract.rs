//! Extractors that say what a handler needs: [`WriteAccess`] (a valid token,
//! and for a cookie session a same-origin, double-submitted request),
//! [`ReadAccess`] (a token only when the server closes reads), and
//! [`CsrfForm`] for HTML form posts, which carry the double-submit value in
//! their body.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::csrf;
use super::tokens::{self, TokenInfo};
use crate::http::{AppError, AppState};

/// Who is calling, as established from the request.
#[derive(Debug, Clone)]
pub enum Caller {
    /// `Authorization: Bearer …` (CI, the CLI).
    Bearer(TokenInfo),
    /// The browser sign-in cookie.
    Session(TokenInfo),
    /// No credentials (allowed for reads unless they are closed).
    Anonymous,
}

impl Caller {
    /// The token's name, recorded as `created_by` on what the caller creates.
    pub fn name(&self) -> Option<&str> {
        match self {
            Self::Bearer(t) | Self::Session(t) => Some(&t.name),
            Self::Anonymous => None,
        }
    }
}

/// Establish the caller. A present but unusable credential is a 401, never
/// silently anonymous: a CI job with a revoked token must learn it.
pub async fn identify(parts: &Parts, state: &AppState) -> Result<Caller, AppError> {
    if let Some(value) = parts.headers.get(AUTHORIZATION) {
        let secret = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                AppError::Unauthorized("the Authorization header must be `Bearer <token>`".into())
            })?;
        return match tokens::verify(&state.db, secret).await? {
            Some(t) => Ok(Caller::Bearer(t)),
            None => Err(AppError::Unauthorized(
                "the token is unknown or revoked".into(),
            )),
        };
    }
    if let Some(secret) = csrf::cookie(&parts.headers, csrf::SESSION_COOKIE) {
        return match tokens::verify(&state.db, secret).await? {
            Some(t) => Ok(Caller::Session(t)),
            None => Err(AppError::Unauthorized(
                "your sign-in is no longer valid (the token was revoked); sign in again".into(),
            )),
        };
    }
    Ok(Caller::Anonymous)
}

/// A caller allowed to write. For a cookie session the request must also pass
/// the origin check and carry the double-submit value in `X-CSRF-Token`
/// (form posts use [`CsrfForm`] instead, which reads it from the body).
#[derive(Debug, Clone)]
pub struct WriteAccess(pub TokenInfo);

impl FromRequestParts<AppState> for WriteAccess {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        match identify(parts, state).await? {
            Caller::Bearer(t) => Ok(Self(t)),
            Caller::Session(t) => {
                csrf::check_origin(&parts.headers)?;
                let submitted = parts
                    .headers
                    .get(csrf::CSRF_HEADER)
                    .and_then(|v| v.to_str().ok());
                csrf::check_double_submit(&parts.headers, submitted)?;
                Ok(Self(t))
            }
            Caller::Anonymous => Err(AppError::Unauthorized(
                "writing needs a token: send `Authorization: Bearer <token>` \
                 (create one with `maelab token create --name <name>`) or sign in"
                    .into(),
            )),
        }
    }
}

/// A caller allowed to read: anyone, unless the server runs with
/// `--require-auth-for-reads`.
#[derive(Debug, Clone)]
pub struct ReadAccess(pub Caller);

impl FromRequestParts<AppState> for ReadAccess {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        if !state.settings.require_auth_for_reads {
            // Open reads skip the token lookup: no query per read.
            return Ok(Self(Caller::Anonymous));
        }
        match identify(parts, state).await? {
            Caller::Anonymous => Err(AppError::Unauthorized(
                "this server requires a token for reads: send `Authorization: Bearer <token>` \
                 or sign in"
                    .into(),
            )),
            caller => Ok(Self(caller)),
        }
    }
}

/// An `application/x-www-form-urlencoded` post from one of our pages, from a
/// signed-in browser (or a bearer client): origin checked, the `csrf_token`
/// field matched against the cookie and removed, the rest deserialised into
/// `T`. Use it for every form that changes something.
#[derive(Debug, Clone)]
pub struct CsrfForm<T> {
    pub token: TokenInfo,
    pub form: T,
}

impl<T: DeserializeOwned + Send> FromRequest<AppState> for CsrfForm<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, AppError> {
        let (parts, body) = req.into_parts();
        let caller = identify(&parts, state).await?;
        let form_type = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if !form_type {
            return Err(AppError::UnsupportedMediaType(
                "expected Content-Type: application/x-www-form-urlencoded".into(),
            ));
        }
        let bytes = crate::http::api::extract::read_body(body, state.settings.body_limit).await?;
        let mut pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| AppError::bad_request("", format!("malformed form: {e}")))?;
        let submitted = pairs
            .iter()
            .position(|(k, _)| k == csrf::CSRF_FIELD)
            .map(|i| pairs.remove(i).1);
        let token = match caller {
            Caller::Bearer(t) => t,
            Caller::Session(t) => {
                csrf::check_origin(&parts.headers)?;
                csrf::check_double_submit(&parts.headers, submitted.as_deref())?;
                t
            }
            Caller::Anonymous => {
                return Err(AppError::Unauthorized(
                    "sign in with a token to change anything".into(),
                ));
            }
        };
        let encoded = serde_urlencoded::to_string(&pairs)
            .map_err(|e| AppError::bad_request("", format!("malformed form: {e}")))?;
        let form = serde_urlencoded::from_str(&encoded)
            .map_err(|e| AppError::bad_request("", format!("form: {e}")))?;
        Ok(Self { token, form })
    }
}
