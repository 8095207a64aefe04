//! What a `submit` token may change: only the runs and studies it created
//! itself (by token id, `created_by_token_id`: names are reused after a
//! revoke). `write` and `admin` tokens change anything; the extractors have
//! already refused `read`.

use sqlx::PgPool;
use uuid::Uuid;

use super::scope::Scope;
use super::tokens::TokenInfo;
use crate::http::AppError;

/// Refuse (403) unless `token` may change run `run_id`; 404 if there is none.
pub async fn check_run(token: &TokenInfo, db: &PgPool, run_id: Uuid) -> Result<(), AppError> {
    let sql = "select created_by_token_id from run where run_id = $1";
    check(token, db, sql, run_id, &format!("run {run_id}")).await
}

/// Refuse (403) unless `token` may change study `study_id`; 404 if there is none.
pub async fn check_study(token: &TokenInfo, db: &PgPool, study_id: Uuid) -> Result<(), AppError> {
    let sql = "select created_by_token_id from study where study_id = $1";
    check(token, db, sql, study_id, &format!("study {study_id}")).await
}

/// `creator_sql` reads the creating token's id of the row `id`, `what`.
async fn check(
    token: &TokenInfo,
    db: &PgPool,
    creator_sql: &'static str,
    id: Uuid,
    what: &str,
) -> Result<(), AppError> {
    if token.scope.changes_anything() {
        return Ok(());
    }
    let creator: Option<Option<i64>> = sqlx::query_scalar(creator_sql)
        .bind(id)
        .fetch_optional(db)
        .await?;
    match creator {
        None => Err(AppError::NotFound(what.to_string())),
        Some(Some(creator)) if creator == token.token_id => Ok(()),
        Some(_) => Err(AppError::Forbidden(format!(
            "the token `{}` has scope `{}`, which changes only what it created; {what} was \
             created by another token (changing it needs scope `{}` or above)",
            token.name,
            token.scope,
            Scope::Write
        ))),
    }
}
