//! Extractors that say what a handler needs: [`Access<S>`] (a valid token of
//! scope `S` or above, and for a cookie session a same-origin,
//! double-submitted request), [`ReadAccess`] (a token only when the server
//! closes reads), and [`CsrfForm<T, S>`] for HTML form posts, which carry the
//! double-submit value in their body. Scope and expiry are checked here and
//! only here; what a `submit` token may change is [`super::ownership`]'s.

use std::marker::PhantomData;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use sqlx::PgPool;
use uuid::Uuid;

use super::scope::{Needs, Scope};
use super::session_store::{self, SessionError};
use super::tokens::{self, TokenInfo, VerifyError};
use super::{csrf, ownership};
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
        self.token().map(|t| t.name.as_str())
    }

    /// The token, unless anonymous.
    pub fn token(&self) -> Option<&TokenInfo> {
        match self {
            Self::Bearer(t) | Self::Session(t) => Some(t),
            Self::Anonymous => None,
        }
    }
}

/// Establish the caller. A present but unusable credential is a 401, never
/// silently anonymous: a CI job with a revoked or expired token must learn it,
/// and a browser whose session ended is signed out.
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
        return Ok(Caller::Bearer(tokens::verify(&state.db, secret).await?));
    }
    if let Some(secret) = csrf::cookie(&parts.headers, csrf::SESSION_COOKIE) {
        return match session_store::find(&state.db, secret).await {
            Ok(t) => Ok(Caller::Session(t)),
            Err(SessionError::Ended(why)) => {
                Err(AppError::SignedOut(format!("{why}; sign in again")))
            }
            Err(SessionError::Db(e)) => Err(e.into()),
        };
    }
    Ok(Caller::Anonymous)
}

/// An unknown, revoked or expired token is a 401 saying which.
impl From<VerifyError> for AppError {
    fn from(e: VerifyError) -> Self {
        match e {
            VerifyError::Refused(why) => AppError::Unauthorized(why.to_string()),
            VerifyError::Db(e) => e.into(),
        }
    }
}

/// Refuse (403) a token whose scope is below `needed`, naming both.
pub fn require(token: &TokenInfo, needed: Scope) -> Result<(), AppError> {
    if token.scope.covers(needed) {
        return Ok(());
    }
    Err(AppError::Forbidden(format!(
        "the token `{}` has scope `{}`; this needs scope `{needed}` or above",
        token.name, token.scope
    )))
}

/// The token of a caller allowed to write with scope `needed`, or a 401
/// saying how to get one. A cookie session must also pass the origin check
/// and double-submit `submitted` (from the `X-CSRF-Token` header or the
/// form's field); a bearer token cannot be attached by another site.
fn authorize(
    caller: Caller,
    headers: &HeaderMap,
    submitted: Option<&str>,
    needed: Scope,
) -> Result<TokenInfo, AppError> {
    let token = match caller {
        Caller::Bearer(t) => t,
        Caller::Session(t) => {
            csrf::check_origin(headers)?;
            csrf::check_double_submit(headers, submitted)?;
            t
        }
        Caller::Anonymous => {
            return Err(AppError::Unauthorized(
                "writing needs a token: send `Authorization: Bearer <token>` \
                 (create one with `maelab token create --name <name>`) or sign in"
                    .into(),
            ));
        }
    };
    require(&token, needed)?;
    Ok(token)
}

/// A caller whose token has scope `S` or above. For a cookie session the
/// request must also pass the origin check and carry the double-submit value
/// in `X-CSRF-Token` (form posts use [`CsrfForm`] instead, which reads it
/// from the body).
#[derive(Debug, Clone)]
pub struct Access<S: Needs> {
    pub token: TokenInfo,
    needs: PhantomData<S>,
}

impl<S: Needs> Access<S> {
    /// Refuse (403) unless this caller may change run `run_id` (404 if none).
    pub async fn may_change_run(&self, db: &PgPool, run_id: Uuid) -> Result<(), AppError> {
        ownership::check_run(&self.token, db, run_id).await
    }

    /// Refuse (403) unless this caller may change study `study_id` (404 if none).
    pub async fn may_change_study(&self, db: &PgPool, study_id: Uuid) -> Result<(), AppError> {
        ownership::check_study(&self.token, db, study_id).await
    }
}

impl<S: Needs> FromRequestParts<AppState> for Access<S> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let caller = identify(parts, state).await?;
        let submitted = parts
            .headers
            .get(csrf::CSRF_HEADER)
            .and_then(|v| v.to_str().ok());
        let token = authorize(caller, &parts.headers, submitted, S::SCOPE)?;
        Ok(Self {
            token,
            needs: PhantomData,
        })
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
            caller => {
                if let Some(t) = caller.token() {
                    require(t, Scope::Read)?;
                }
                Ok(Self(caller))
            }
        }
    }
}

/// An `application/x-www-form-urlencoded` post from one of our pages, from a
/// signed-in browser (or a bearer client) whose token has scope `S` or above:
/// origin checked, the `csrf_token` field matched against the cookie and
/// removed, the rest deserialised into `T`. Use it for every form that
/// changes something.
#[derive(Debug, Clone)]
pub struct CsrfForm<T, S: Needs> {
    pub token: TokenInfo,
    pub form: T,
    needs: PhantomData<S>,
}

impl<T, S: Needs> CsrfForm<T, S> {
    /// Refuse (403) unless this caller may change run `run_id` (404 if none).
    pub async fn may_change_run(&self, db: &PgPool, run_id: Uuid) -> Result<(), AppError> {
        ownership::check_run(&self.token, db, run_id).await
    }

    /// Refuse (403) unless this caller may change study `study_id` (404 if none).
    pub async fn may_change_study(&self, db: &PgPool, study_id: Uuid) -> Result<(), AppError> {
        ownership::check_study(&self.token, db, study_id).await
    }
}

impl<T: DeserializeOwned + Send, S: Needs> FromRequest<AppState> for CsrfForm<T, S> {
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
        if matches!(caller, Caller::Anonymous) {
            return Err(AppError::Unauthorized(
                "sign in with a token to change anything".into(),
            ));
        }
        let token = authorize(caller, &parts.headers, submitted.as_deref(), S::SCOPE)?;
        let encoded = serde_urlencoded::to_string(&pairs)
            .map_err(|e| AppError::bad_request("", format!("malformed form: {e}")))?;
        let form = serde_urlencoded::from_str(&encoded)
            .map_err(|e| AppError::bad_request("", format!("form: {e}")))?;
        Ok(Self {
            token,
            form,
            needs: PhantomData,
        })
    }
}
