//! Scopes and expiry (issue 15): every scope against every write route of the
//! API and of the pages' forms, on what the caller created itself and on what
//! another token created; refusals name the scopes and change nothing. An
//! expired token is refused with the moment it expired.

mod api_support;

use api_support::{TestApp, spawn, spawn_with, tiny_config};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use maelab_server::auth::Scope;
use maelab_server::auth::tokens::{self, NewToken};
use maelab_server::settings::ServeSettings;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// A small study: two arms, one seed, finetune only.
fn study() -> Value {
    json!({
        "name": "scoped", "stages": "finetune", "seeds": 1, "baseline": "mae",
        "base": {"preset": "vit-micro/4"}, "budget": {"epochs": 1},
        "arms": {"mae": {"model": "mae"}, "wave": {"model": "wave_mae", "wave_in": "encoder"}},
    })
}

const STUDY_TOML: &str = r#"name = "scoped page study"
stages = "finetune"
seeds = 1
baseline = "mae"
[base]
preset = "vit-micro/4"
[budget]
epochs = 1
[arms.mae]
model = "mae"
[arms.wave]
model = "wave_mae"
wave_in = "encoder"
"#;

const RUN_FORM: &[(&str, &str)] = &[
    ("name", "from the form"),
    ("kind", "pretrain"),
    ("model", "mae"),
    ("preset", "vit-micro/4"),
    ("epochs", "2"),
    ("warmup_epochs", "1"),
];

/// What a route acts on, made by its owner before the request.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    /// A create: nothing.
    Nothing,
    QueuedRun,
    CancelledRun,
    ExternalRun,
    Study,
    CancelledStudy,
}

#[derive(Debug, Clone, Copy)]
enum Payload {
    Empty,
    Json(fn() -> Value),
    Bytes(&'static [u8]),
    Form(&'static [(&'static str, &'static str)]),
}

/// One write route: `{id}` in the path is the target's id.
struct Route {
    method: Method,
    path: &'static str,
    target: Target,
    payload: Payload,
    /// A page form, posted from a signed-in browser; else a bearer API call.
    page: bool,
    ok: StatusCode,
}

fn api(method: Method, path: &'static str, target: Target, payload: Payload, ok: u16) -> Route {
    Route {
        method,
        path,
        target,
        payload,
        page: false,
        ok: StatusCode::from_u16(ok).expect("status"),
    }
}

fn page(path: &'static str, target: Target, payload: Payload) -> Route {
    Route {
        method: Method::POST,
        path,
        target,
        payload,
        page: true,
        ok: StatusCode::SEE_OTHER,
    }
}

fn write_routes() -> Vec<Route> {
    use Payload::*;
    use Target::*;
    vec![
        api(
            Method::POST,
            "/api/v1/runs",
            Nothing,
            Json(tiny_config),
            201,
        ),
        api(
            Method::POST,
            "/api/v1/runs/{id}/cancel",
            QueuedRun,
            Empty,
            200,
        ),
        api(
            Method::POST,
            "/api/v1/runs/{id}/retry",
            CancelledRun,
            Empty,
            200,
        ),
        api(Method::POST, "/api/v1/studies", Nothing, Json(study), 201),
        api(
            Method::POST,
            "/api/v1/studies/{id}/cancel",
            Study,
            Empty,
            200,
        ),
        api(
            Method::POST,
            "/api/v1/studies/{id}/retry",
            CancelledStudy,
            Empty,
            200,
        ),
        api(
            Method::POST,
            "/api/v1/runs/external",
            Nothing,
            Json(|| json!({"name": "ext"})),
            201,
        ),
        api(
            Method::POST,
            "/api/v1/runs/{id}/metrics",
            ExternalRun,
            Json(|| json!({"points": [{"key": "train_loss", "step": 0, "value": 1.5}]})),
            200,
        ),
        api(
            Method::PUT,
            "/api/v1/runs/{id}/artifacts/notes.txt",
            ExternalRun,
            Bytes(b"hello"),
            201,
        ),
        api(
            Method::POST,
            "/api/v1/runs/{id}/heartbeat",
            ExternalRun,
            Empty,
            200,
        ),
        api(
            Method::POST,
            "/api/v1/runs/{id}/finish",
            ExternalRun,
            Json(|| json!({"status": "succeeded"})),
            200,
        ),
        page("/runs/new", Nothing, Form(RUN_FORM)),
        page("/runs/{id}/cancel", QueuedRun, Form(&[])),
        page("/runs/{id}/retry", CancelledRun, Form(&[])),
        page("/studies/new", Nothing, Form(&[("document", STUDY_TOML)])),
        page("/studies/{id}/cancel", Study, Form(&[])),
        page("/studies/{id}/retry", CancelledStudy, Form(&[])),
    ]
}

/// A token of one scope, signed in from a browser too.
struct Caller {
    scope: Scope,
    secret: String,
    cookie: String,
    csrf: String,
}

/// A token that never expires; its secret.
async fn new_token(app: &TestApp, name: &str, scope: Scope) -> String {
    let new = NewToken {
        name,
        scope,
        expires_at: None,
    };
    let (secret, _) = tokens::create_with(&app.db.pool, &new)
        .await
        .expect("token");
    secret
}

async fn caller(app: &TestApp, name: &str, scope: Scope) -> Caller {
    let secret = new_token(app, name, scope).await;
    let (cookie, csrf) = sign_in(app, &secret).await;
    Caller {
        scope,
        secret,
        cookie,
        csrf,
    }
}

/// The sign-in form posted with `secret`.
fn sign_in_request(secret: &str) -> Request<Body> {
    Request::post("/signin")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "same-origin")
        .body(Body::from(format!("token={secret}")))
        .expect("request")
}

/// Sign in with `secret`; the `Cookie` header and the CSRF value.
async fn sign_in(app: &TestApp, secret: &str) -> (String, String) {
    let a = app.send(sign_in_request(secret)).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "sign-in: {}", a.text());
    let pairs: Vec<String> = a
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|c| c.split(';').next())
        .map(str::to_string)
        .collect();
    let csrf = pairs
        .iter()
        .find_map(|c| c.strip_prefix("maelab_csrf="))
        .expect("csrf cookie")
        .to_string();
    (pairs.join("; "), csrf)
}

fn bearer(method: Method, uri: &str, secret: &str, payload: Payload) -> Request<Body> {
    let r = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {secret}"));
    match payload {
        Payload::Empty => r.body(Body::empty()),
        Payload::Json(body) => r
            .header("content-type", "application/json")
            .body(Body::from(body().to_string())),
        Payload::Bytes(b) => r.header("content-type", "text/plain").body(Body::from(b)),
        Payload::Form(_) => unreachable!("forms are page routes"),
    }
    .expect("request")
}

fn form_post(uri: &str, who: &Caller, payload: Payload) -> Request<Body> {
    let Payload::Form(fields) = payload else {
        unreachable!("page routes post forms")
    };
    let mut all = vec![("csrf_token", who.csrf.as_str())];
    all.extend_from_slice(fields);
    Request::post(uri)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "same-origin")
        .header("cookie", &who.cookie)
        .body(Body::from(serde_urlencoded::to_string(&all).expect("form")))
        .expect("request")
}

/// POST `body` (or nothing) with the bearer `secret`.
async fn post_as(
    app: &TestApp,
    uri: &str,
    secret: &str,
    body: Option<Value>,
) -> api_support::Answer {
    let mut req = Request::post(uri).header("authorization", format!("Bearer {secret}"));
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
    app.send(req.body(body).expect("request")).await
}

/// Make the route's target as `owner` (through the API); its id.
async fn make(app: &TestApp, target: Target, owner: &str) -> Option<String> {
    let id = |a: api_support::Answer, key: &str| {
        assert!(a.status.is_success(), "making {target:?}: {}", a.text());
        a.json()[key].as_str().expect("id").to_string()
    };
    let run = || post_as(app, "/api/v1/runs", owner, Some(tiny_config()));
    let new_study = || post_as(app, "/api/v1/studies", owner, Some(study()));
    Some(match target {
        Target::Nothing => return None,
        Target::QueuedRun => id(run().await, "run_id"),
        Target::CancelledRun => {
            let run = id(run().await, "run_id");
            let c = post_as(app, &format!("/api/v1/runs/{run}/cancel"), owner, None).await;
            assert_eq!(c.status, StatusCode::OK, "{}", c.text());
            run
        }
        Target::ExternalRun => {
            let ext = Some(json!({"name": "ext"}));
            id(
                post_as(app, "/api/v1/runs/external", owner, ext).await,
                "run_id",
            )
        }
        Target::Study => id(new_study().await, "study_id"),
        Target::CancelledStudy => {
            let s = id(new_study().await, "study_id");
            let c = post_as(app, &format!("/api/v1/studies/{s}/cancel"), owner, None).await;
            assert_eq!(c.status, StatusCode::OK, "{}", c.text());
            s
        }
    })
}

/// Everything a refused request must leave as it was: row counts and the
/// targets' last change.
async fn snapshot(app: &TestApp) -> (Vec<(&'static str, i64)>, Vec<String>) {
    let changed: Vec<String> = sqlx::query_scalar(
        "select format('%s %s %s', run_id, status, updated_at) from run
         union all select format('%s %s', study_id, updated_at) from study
         union all select format('%s %s', run_id, count(*)) from metric_point group by run_id
         order by 1",
    )
    .fetch_all(&app.db.pool)
    .await
    .expect("snapshot");
    (app.counts().await, changed)
}

fn expected(scope: Scope, route: &Route, own: bool) -> StatusCode {
    match scope {
        Scope::Read => StatusCode::FORBIDDEN,
        Scope::Submit if route.target != Target::Nothing && !own => StatusCode::FORBIDDEN,
        Scope::Submit | Scope::Write | Scope::Admin => route.ok,
    }
}

#[tokio::test]
async fn each_scope_against_each_write_route() {
    let app = spawn().await;
    // Owns the "someone else's" targets: a submit token, like a colleague's CI.
    let other = new_token(&app, "colleague", Scope::Submit).await;
    let mut callers = Vec::new();
    for scope in Scope::ALL {
        callers.push(caller(&app, &format!("{scope}-token"), scope).await);
    }
    let mut table = Vec::new();
    for route in write_routes() {
        for who in &callers {
            // A read token cannot create anything to own.
            let owners: &[bool] = if who.scope == Scope::Read {
                &[false]
            } else {
                &[true, false]
            };
            for &own in owners {
                let owner = if own { &who.secret } else { &other };
                let id = make(&app, route.target, owner).await;
                let uri = match &id {
                    Some(id) => route.path.replace("{id}", id),
                    None => route.path.to_string(),
                };
                let uri = if route.method == Method::PUT {
                    format!("{uri}?sha256={}", hex::encode(Sha256::digest(b"hello")))
                } else {
                    uri
                };
                let req = if route.page {
                    form_post(&uri, who, route.payload)
                } else {
                    bearer(route.method.clone(), &uri, &who.secret, route.payload)
                };
                let before = snapshot(&app).await;
                let a = app.send(req).await;
                let want = expected(who.scope, &route, own);
                let cell = format!(
                    "{} {} as {} on {}",
                    route.method,
                    route.path,
                    who.scope,
                    if route.target == Target::Nothing {
                        "a create"
                    } else if own {
                        "its own"
                    } else {
                        "another token's"
                    }
                );
                table.push(format!("{cell}: {}", a.status.as_u16()));
                assert_eq!(a.status, want, "{cell}: {}", a.text());
                if want == StatusCode::FORBIDDEN {
                    // Pages answer HTML: compare without the quoting.
                    let reason = a.text().replace(['`'], "").replace("&#96;", "");
                    assert!(
                        reason.contains(&format!("has scope {}", who.scope)),
                        "{cell}: the refusal names the scope it has: {reason}"
                    );
                    let needs = if who.scope == Scope::Read {
                        "submit"
                    } else {
                        "write"
                    };
                    assert!(
                        reason.contains(&format!("needs scope {needs}")),
                        "{cell}: the refusal names the scope it needs: {reason}"
                    );
                    assert_eq!(snapshot(&app).await, before, "{cell} changed something");
                }
            }
        }
    }
    // 17 routes: read tried once, the others on their own and another's.
    assert_eq!(table.len(), 17 * 7, "{table:#?}");
}

#[tokio::test]
async fn an_expired_token_is_refused_with_the_moment_it_expired() {
    let app = spawn_with(ServeSettings {
        require_auth_for_reads: true,
        ..ServeSettings::default()
    })
    .await;
    let (secret, info) = tokens::create_with(
        &app.db.pool,
        &NewToken {
            name: "short",
            scope: Scope::Write,
            expires_at: Some(chrono::Utc::now() + chrono::TimeDelta::hours(1)),
        },
    )
    .await
    .expect("token");
    let read = |secret: String| {
        Request::get("/api/v1/runs")
            .header("authorization", format!("Bearer {secret}"))
            .body(Body::empty())
            .expect("request")
    };
    assert_eq!(app.send(read(secret.clone())).await.status, StatusCode::OK);
    let (cookie, csrf) = sign_in(&app, &secret).await;

    sqlx::query("update api_token set expires_at = now() - interval '1 hour' where token_id = $1")
        .bind(info.token_id)
        .execute(&app.db.pool)
        .await
        .expect("expire");
    let before = app.counts().await;
    for req in [
        read(secret.clone()),
        bearer(
            Method::POST,
            "/api/v1/runs",
            &secret,
            Payload::Json(tiny_config),
        ),
    ] {
        let a = app.send(req).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.text());
        let reason = a.json()["reason"].as_str().expect("reason").to_string();
        assert!(
            reason.contains("`short` expired at "),
            "the reason says when: {reason}"
        );
    }
    // Its browser session ends with it: signed out, cookies cleared.
    let a = app
        .send(
            Request::post("/api/v1/runs")
                .header("content-type", "application/json")
                .header("sec-fetch-site", "same-origin")
                .header("x-csrf-token", &csrf)
                .header("cookie", &cookie)
                .body(Body::from(tiny_config().to_string()))
                .expect("request"),
        )
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.text());
    assert!(
        a.json()["reason"]
            .as_str()
            .expect("reason")
            .contains("expired at")
    );
    let cleared: Vec<&str> = a
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert!(
        cleared
            .iter()
            .any(|c| c.starts_with("maelab_session=;") && c.contains("Max-Age=0")),
        "{cleared:?}"
    );
    // And it cannot sign in again.
    let again = app.send(sign_in_request(&secret)).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
    assert!(again.headers.get("set-cookie").is_none());
    assert_eq!(app.counts().await, before);
}

#[tokio::test]
async fn a_read_token_reads_a_closed_server_and_old_rows_keep_their_owner() {
    let app = spawn_with(ServeSettings {
        require_auth_for_reads: true,
        ..ServeSettings::default()
    })
    .await;
    let reader = caller(&app, "dashboard", Scope::Read).await;
    let a = app
        .send(
            Request::get("/api/v1/runs")
                .header("authorization", format!("Bearer {}", reader.secret))
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let page = app
        .send(
            Request::get("/runs")
                .header("cookie", &reader.cookie)
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(page.status, StatusCode::OK);

    // A name reused after a revoke does not inherit the old token's runs.
    let first = new_token(&app, "ci", Scope::Submit).await;
    let run = make(&app, Target::QueuedRun, &first).await.expect("run");
    tokens::revoke(&app.db.pool, "ci").await.expect("revoke");
    let second = new_token(&app, "ci", Scope::Submit).await;
    let a = app
        .send(bearer(
            Method::POST,
            &format!("/api/v1/runs/{run}/cancel"),
            &second,
            Payload::Empty,
        ))
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text());
}
