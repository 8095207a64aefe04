//! Tokens and browser sessions: writes need a valid, unrevoked token; reads
//! are open unless closed; sign-in starts a server-side session and sets
//! HttpOnly SameSite=Strict cookies; cookie writes must be same-origin and
//! double-submitted; sign-out, revocation and expiry end the session, and its
//! cookie is then signed out (never a 500). `maelab token create` refuses bad
//! scopes and expiries naming the option. (Scopes: auth_scopes.rs.)

mod api_support;

use api_support::{Answer, TestApp, spawn, spawn_with, tiny_config};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use maelab_server::auth::tokens;
use maelab_server::settings::ServeSettings;

const BIN: &str = env!("CARGO_BIN_EXE_maelab");

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

    // Revoking the token ends the session: signed out, cookies cleared.
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
    assert!(
        revoked.json()["reason"]
            .as_str()
            .unwrap()
            .contains("`test` was revoked at"),
        "{}",
        revoked.text()
    );
    assert_cleared(&revoked);
    let ended: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("select revoked_at from browser_session")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert!(ended.is_some(), "the revoke ended the session row too");
}

/// The answer removes both sign-in cookies.
fn assert_cleared(a: &Answer) {
    let set: Vec<&str> = a
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    for name in ["maelab_session=;", "maelab_csrf=;"] {
        assert!(
            set.iter()
                .any(|c| c.starts_with(name) && c.contains("Max-Age=0")),
            "{name} not cleared: {set:?}"
        );
    }
}

/// A form post from a signed-in page.
fn page_post(uri: &str, cookie: &str, csrf: &str) -> Request<Body> {
    Request::post(uri)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "same-origin")
        .header("cookie", cookie)
        .body(Body::from(format!("csrf_token={csrf}")))
        .unwrap()
}

async fn session_rows(app: &TestApp) -> Vec<(String, bool)> {
    sqlx::query_as(
        "select session_hash, revoked_at is not null from browser_session order by session_id",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_cookie_holds_a_session_not_the_token_and_sign_out_ends_it() {
    let app = spawn().await;
    let (cookie, csrf) = sign_in(&app).await;
    let session = cookie
        .split("; ")
        .find_map(|c| c.strip_prefix("maelab_session="))
        .unwrap()
        .to_string();
    assert!(session.starts_with("mls_"), "{session}");
    assert!(
        !cookie.contains(&app.token[4..]),
        "the token's secret is in the cookie"
    );
    assert_eq!(
        session_rows(&app).await,
        vec![(tokens::hash_secret(&session), false)],
        "only the session's hash is stored"
    );
    let ok = app
        .send(cookie_post(
            &cookie,
            "http://maelab.test",
            "same-origin",
            Some(&csrf),
        ))
        .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.text());

    // Sign-out from another site is refused and ends nothing.
    let cross = app
        .send(
            Request::post("/signout")
                .header("host", "maelab.test")
                .header("origin", "http://evil.test")
                .header("cookie", &cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);
    assert!(!session_rows(&app).await[0].1);

    let out = app
        .send(
            Request::post("/signout")
                .header("sec-fetch-site", "same-origin")
                .header("cookie", &cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_cleared(&out);
    assert!(
        session_rows(&app).await[0].1,
        "the session ended on the server"
    );

    // A copy of the cookie kept after sign-out no longer works, for the API
    // (401 JSON) and the pages (the sign-in form), and is cleared again.
    let before = app.counts().await;
    let api = app
        .send(cookie_post(
            &cookie,
            "http://maelab.test",
            "same-origin",
            Some(&csrf),
        ))
        .await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED, "{}", api.text());
    assert!(
        api.json()["reason"]
            .as_str()
            .unwrap()
            .contains("signed out")
    );
    assert_cleared(&api);
    let run_id = ok.json()["run_id"].as_str().unwrap().to_string();
    let page = app
        .send(page_post(&format!("/runs/{run_id}/cancel"), &cookie, &csrf))
        .await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{}", page.text());
    assert!(page.text().contains("name=\"token\""), "the sign-in form");
    assert_cleared(&page);
    assert_eq!(app.counts().await, before);
    // The token itself still works.
    let bearer = app
        .send(create_with(Some(format!("Bearer {}", app.token))))
        .await;
    assert_eq!(bearer.status, StatusCode::CREATED);
}

#[tokio::test]
async fn ended_expired_and_foreign_session_cookies_are_signed_out_never_a_500() {
    let closed = spawn_with(ServeSettings {
        require_auth_for_reads: true,
        ..ServeSettings::default()
    })
    .await;
    let (cookie, csrf) = sign_in(&closed).await;
    let page = |cookie: &str| {
        Request::get("/runs?status=queued")
            .header("cookie", cookie.to_string())
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(
        closed.send(page(cookie.as_str())).await.status,
        StatusCode::OK
    );

    // The session outlives its week.
    sqlx::query(
        "update browser_session set created_at = now() - interval '8 days',
                                    expires_at = now() - interval '1 day'",
    )
    .execute(&closed.db.pool)
    .await
    .unwrap();
    let expired = closed.send(page(cookie.as_str())).await;
    assert_eq!(expired.status, StatusCode::SEE_OTHER);
    assert_eq!(
        expired.headers["location"],
        "/signin?next=%2Fruns%3Fstatus%3Dqueued"
    );
    assert_cleared(&expired);
    let api = closed
        .send(cookie_post(
            &cookie,
            "http://maelab.test",
            "same-origin",
            Some(&csrf),
        ))
        .await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);
    assert!(
        api.json()["reason"]
            .as_str()
            .unwrap()
            .contains("sign-in expired at"),
        "{}",
        api.text()
    );

    // A cookie from before sessions (the raw token), an unknown session and
    // garbage: signed out alike.
    for stale in [
        format!("maelab_session={}; maelab_csrf={csrf}", closed.token),
        format!("maelab_session=mls_{}; maelab_csrf={csrf}", "0".repeat(64)),
        format!(
            "maelab_session=%00%ff{}; maelab_csrf={csrf}",
            "x".repeat(5000)
        ),
    ] {
        let a = closed.send(page(stale.as_str())).await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{stale:.40}");
        assert_cleared(&a);
        let form = closed.send(page_post("/runs/new", &stale, &csrf)).await;
        assert_eq!(form.status, StatusCode::UNAUTHORIZED, "{}", form.text());
        assert_cleared(&form);
    }
}

/// `maelab token ARGS` against the test database.
fn token_cli(app: &TestApp, args: &[&str]) -> std::process::Output {
    std::process::Command::new(BIN)
        .arg("token")
        .args(args)
        .env("DATABASE_URL", &app.db.url)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[tokio::test]
async fn token_create_refuses_bad_scopes_and_expiries_naming_the_option() {
    let app = spawn().await;
    let before = app.counts().await;
    for (args, option, why) in [
        (&["--scope", "root"][..], "--scope", "`root` is not a scope"),
        (&["--scope", ""][..], "--scope", "is not a scope"),
        (&["--expires", "0d"][..], "--expires", "zero"),
        (&["--expires", "2020-01-01"][..], "--expires", "in the past"),
        (&["--expires", "30m"][..], "--expires", "neither a lifetime"),
        (&["--expires=-3d"][..], "--expires", "neither a lifetime"),
        (&["--expires", "99999999999w"][..], "--expires", "100 years"),
    ] {
        let mut all = vec!["create", "--name", "bad"];
        all.extend_from_slice(args);
        let out = token_cli(&app, &all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {stderr}");
        assert!(
            stderr.contains(option) && stderr.contains(why),
            "{args:?}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?}: no secret printed");
    }
    assert_eq!(app.counts().await, before, "nothing was created");

    let out = token_cli(
        &app,
        &[
            "create",
            "--name",
            "ci",
            "--scope",
            "submit",
            "--expires",
            "30d",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("scope submit, expires 20"), "{stderr}");
    let out = token_cli(&app, &["create", "--name", "forever"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("scope write, never expires"), "{stderr}");

    let list = token_cli(&app, &["list"]);
    let listing = String::from_utf8_lossy(&list.stdout);
    let line = |name: &str| {
        listing
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("{name} not listed: {listing}"))
            .to_string()
    };
    assert!(
        listing.lines().next().unwrap().contains("SCOPE"),
        "{listing}"
    );
    let ci = line("ci");
    let in_30d = (chrono::Utc::now() + chrono::TimeDelta::days(30))
        .format("%Y-%m-%d")
        .to_string();
    assert!(ci.contains(" submit ") && ci.contains(&in_30d), "{ci}");
    assert!(line("forever").contains(" write ") && line("forever").contains(" never "));

    // LAST USED: empty until the token is used.
    let test_line = || {
        let out = token_cli(&app, &["list"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some("test"))
            .unwrap()
            .to_string()
    };
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert_eq!(test_line().matches(&today).count(), 1, "created only");
    let used = app
        .send(create_with(Some(format!("Bearer {}", app.token))))
        .await;
    assert_eq!(used.status, StatusCode::CREATED);
    assert_eq!(
        test_line().matches(&today).count(),
        2,
        "created and last used"
    );
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
