//! Tokens and browser sessions: writes need a valid, unrevoked token; reads
//! are open unless closed; sign-in sets HttpOnly SameSite=Strict cookies and
//! cookie writes must be same-origin and double-submitted.

mod api_support;

use api_support::{spawn, spawn_with, tiny_config};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use maelab_server::auth::tokens;
use maelab_server::settings::ServeSettings;

fn create_with(auth: Option<String>) -> Request<Body> {
    let mut r = Request::post("/api/v1/runs").header("content-type", "application/json");
    if let Some(a) = auth {
        r = r.header("authorization", a);
    }
    r.body(Body::from(tiny_config().to_string())).unwrap()
}

#[tokio::test]
async fn writes_without_with_revoked_and_with_garbage_tokens_are_refused() {
    let app = spawn().await;
    let (secret, _) = tokens::create(&app.db.pool, "ci").await.unwrap();
    let before = app.counts().await;

    let none = app.send(create_with(None)).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert!(none.json()["reason"].as_str().unwrap().contains("token"));
    let garbage = app
        .send(create_with(Some("Bearer not-a-token".into())))
        .await;
    assert_eq!(garbage.status, StatusCode::UNAUTHORIZED);
    let wrong = app
        .send(create_with(Some(format!("Bearer {secret}x"))))
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.counts().await, before);

    let ok = app
        .send(create_with(Some(format!("Bearer {secret}"))))
        .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.text());
    assert_eq!(ok.json()["created_by"], "ci");

    tokens::revoke(&app.db.pool, "ci").await.unwrap();
    let after = app.counts().await;
    let revoked = app
        .send(create_with(Some(format!("Bearer {secret}"))))
        .await;
    assert_eq!(revoked.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.counts().await, after);
    // Cancel is a write too.
    let id = ok.json()["run_id"].as_str().unwrap().to_string();
    let cancel = app
        .send(
            Request::post(format!("/api/v1/runs/{id}/cancel"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(cancel.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn tokens_are_stored_hashed_listed_without_secrets_and_names_unique() {
    let app = spawn().await;
    let (secret, info) = tokens::create(&app.db.pool, "ci").await.unwrap();
    assert!(secret.starts_with("mlb_") && secret.len() == 68);
    assert!(secret.starts_with(&info.prefix));
    let stored: String = sqlx::query_scalar("select token_hash from api_token where name = 'ci'")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(stored, tokens::hash_secret(&secret));
    assert!(!stored.contains(&secret[4..]));
    assert!(matches!(
        tokens::create(&app.db.pool, "ci").await,
        Err(tokens::TokenError::NameTaken(_))
    ));
    assert!(matches!(
        tokens::create(&app.db.pool, "").await,
        Err(tokens::TokenError::BadName(0))
    ));
    tokens::revoke(&app.db.pool, "ci").await.unwrap();
    assert!(matches!(
        tokens::revoke(&app.db.pool, "ci").await,
        Err(tokens::TokenError::NotFound(_))
    ));
    // A revoked name can be reused.
    tokens::create(&app.db.pool, "ci").await.unwrap();
    assert_eq!(tokens::list(&app.db.pool).await.unwrap().len(), 3);
}

#[tokio::test]
async fn reads_are_open_by_default_and_closed_on_request() {
    let open = spawn().await;
    assert_eq!(open.get("/api/v1/runs").await.status, StatusCode::OK);

    let closed = spawn_with(ServeSettings {
        require_auth_for_reads: true,
        ..ServeSettings::default()
    })
    .await;
    assert_eq!(
        closed.get("/api/v1/runs").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        closed.get("/api/v1/queue").await.status,
        StatusCode::UNAUTHORIZED
    );
    let with_token = closed
        .send(
            Request::get("/api/v1/runs")
                .header("authorization", format!("Bearer {}", closed.token))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(with_token.status, StatusCode::OK);
    // The document holds no data and stays readable.
    assert_eq!(
        closed.get("/api/v1/openapi.json").await.status,
        StatusCode::OK
    );
}

/// Sign in; returns the `Cookie` header value and the CSRF value.
async fn sign_in(app: &api_support::TestApp) -> (String, String) {
    let a = app
        .send(
            Request::post("/signin")
                .header("content-type", "application/x-www-form-urlencoded")
                .header("host", "maelab.test")
                .header("origin", "http://maelab.test")
                .header("sec-fetch-site", "same-origin")
                .body(Body::from(format!("token={}&next=%2Fruns", app.token)))
                .unwrap(),
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.text());
    assert_eq!(a.headers["location"], "/runs");
    let cookies: Vec<String> = a
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let session = cookies
        .iter()
        .find(|c| c.starts_with("maelab_session="))
        .unwrap();
    assert!(session.contains("HttpOnly"), "{session}");
    assert!(session.contains("SameSite=Strict"), "{session}");
    let csrf = cookies
        .iter()
        .find(|c| c.starts_with("maelab_csrf="))
        .unwrap();
    assert!(csrf.contains("SameSite=Strict"), "{csrf}");
    let pair = |c: &String| c.split(';').next().unwrap().to_string();
    let csrf_value = pair(csrf).split_once('=').unwrap().1.to_string();
    (format!("{}; {}", pair(session), pair(csrf)), csrf_value)
}

fn cookie_post(cookie: &str, origin: &str, site: &str, csrf: Option<&str>) -> Request<Body> {
    let mut r = Request::post("/api/v1/runs")
        .header("content-type", "application/json")
        .header("host", "maelab.test")
        .header("origin", origin)
        .header("sec-fetch-site", site)
        .header("cookie", cookie);
    if let Some(c) = csrf {
        r = r.header("x-csrf-token", c);
    }
    r.body(Body::from(tiny_config().to_string())).unwrap()
}

#[tokio::test]
async fn a_signed_in_browser_writes_only_same_origin_with_the_csrf_value() {
    let app = spawn().await;
    let (cookie, csrf) = sign_in(&app).await;
    let before = app.counts().await;
    let cross = app
        .send(cookie_post(
            &cookie,
            "http://evil.test",
            "cross-site",
            Some(&csrf),
        ))
        .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN, "{}", cross.text());
    let no_token = app
        .send(cookie_post(
            &cookie,
            "http://maelab.test",
            "same-origin",
            None,
        ))
        .await;
    assert_eq!(no_token.status, StatusCode::FORBIDDEN);
    let wrong = app
        .send(cookie_post(
            &cookie,
            "http://maelab.test",
            "same-origin",
            Some("0000"),
        ))
        .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    assert_eq!(app.counts().await, before);
    let ok = app
        .send(cookie_post(
            &cookie,
            "http://maelab.test",
            "same-origin",
            Some(&csrf),
        ))
        .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.text());

    // Revoking the token ends the session.
    tokens::revoke(&app.db.pool, "test").await.unwrap();
    let revoked = app
        .send(cookie_post(
            &cookie,
            "http://maelab.test",
            "same-origin",
            Some(&csrf),
        ))
        .await;
    assert_eq!(revoked.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn sign_in_refuses_bad_tokens_and_cross_site_posts() {
    let app = spawn().await;
    let post = |token: &str, origin: &str| {
        Request::post("/signin")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("host", "maelab.test")
            .header("origin", origin.to_string())
            .body(Body::from(format!("token={token}")))
            .unwrap()
    };
    let bad = app.send(post("mlb_nope", "http://maelab.test")).await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    assert!(bad.headers.get("set-cookie").is_none());
    let cross = app.send(post(&app.token, "http://evil.test")).await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);
    assert!(cross.headers.get("set-cookie").is_none());
}
