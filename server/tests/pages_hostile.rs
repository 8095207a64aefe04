//! The pages get the API's hostile-input treatment (issue 15, part 5): a
//! table of hostile URLs, queries and form posts over every page route and
//! form (`page_routes::PAGE_ROUTES`, checked against the routers' sources),
//! each with the status it must get. Never a 5xx; either a 4xx naming what
//! is wrong, or a clamped answer:
//!
//! - `/runs?page=N` below 1 or past the last page: 303 to the nearest page
//!   (deeper than `MAX_PAGE` is never queried); a page that is not an i64,
//!   or a repeated parameter, is a 400 naming `page`.
//! - An unknown sort column sorts newest first, any `dir` but `asc` is
//!   descending, and parameters a page does not know are ignored.
//! - Ids in the URL that are not ids are 404 (400 when not even UTF-8).
//! - Form posts: 401 without a sign-in, 403 cross-site or without the CSRF
//!   value, 415 when not a form, 413 past the body limit, 422 (the form again,
//!   with reasons) for values the run config or study refuses.

mod api_support;
mod page_routes;
mod pages_support;
mod study_support;

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use page_routes::Fixture;
use pages_support::{Pages, spawn};
use tower::ServiceExt;
use uuid::Uuid;

/// Who posts a form.
#[derive(Debug, Clone, Copy)]
enum Who {
    /// No session cookie.
    Anonymous,
    /// Signed in, on our own page, with the CSRF value.
    SignedIn,
    /// Signed in, without the `csrf_token` field.
    NoCsrf,
    /// Signed in, with another `csrf_token`.
    WrongCsrf,
    /// Signed in, with the CSRF value, but from another site.
    CrossSite,
}

/// One hostile request and the status it must get.
struct Case {
    method: &'static str,
    uri: String,
    /// For posts: who, the content type and the raw (already encoded) body.
    form: Option<(Who, &'static str, String)>,
    expect: u16,
    /// Text the answer must contain (for clamped pages and redirects: the
    /// `Location`).
    shows: Option<String>,
}

const FORM: &str = "application/x-www-form-urlencoded";

fn get(uri: impl Into<String>, expect: u16) -> Case {
    Case {
        method: "GET",
        uri: uri.into(),
        form: None,
        expect,
        shows: None,
    }
}

fn post(uri: impl Into<String>, who: Who, body: impl Into<String>, expect: u16) -> Case {
    Case {
        method: "POST",
        uri: uri.into(),
        form: Some((who, FORM, body.into())),
        expect,
        shows: None,
    }
}

fn post_as(uri: impl Into<String>, content_type: &'static str, body: &str, expect: u16) -> Case {
    Case {
        form: Some((Who::SignedIn, content_type, body.to_string())),
        ..post(uri, Who::SignedIn, "", expect)
    }
}

impl Case {
    fn showing(mut self, text: impl Into<String>) -> Self {
        self.shows = Some(text.into());
        self
    }
}

/// Odd text, percent-encoded as a browser or a script would send it.
const NUL: &str = "%00";
const RTL: &str = "%E2%80%AEevil";
/// A UTF-16 surrogate on its own, as (invalid) UTF-8.
const LONE_SURROGATE: &str = "%ED%A0%80";
const NOT_UTF8: &str = "%FF%FE";
const OVERFLOW: &str = "99999999999999999999999";
const BIG_I64: &str = "999999999999999999";

struct Answer {
    status: StatusCode,
    text: String,
}

async fn ask(p: &Pages, case: &Case) -> Answer {
    let mut req = Request::builder()
        .method(Method::from_bytes(case.method.as_bytes()).expect("method"))
        .uri(&case.uri);
    let body = match &case.form {
        None => String::new(),
        Some((who, content_type, body)) => {
            req = req.header("content-type", *content_type).header(
                "sec-fetch-site",
                if matches!(who, Who::CrossSite) {
                    "cross-site"
                } else {
                    "same-origin"
                },
            );
            if !matches!(who, Who::Anonymous) {
                req = req.header("cookie", &p.cookie);
            }
            let csrf = match who {
                Who::SignedIn | Who::CrossSite => Some(p.csrf.as_str()),
                Who::WrongCsrf => Some("0123456789abcdef"),
                Who::Anonymous | Who::NoCsrf => None,
            };
            match csrf {
                Some(c) if body.is_empty() => format!("csrf_token={c}"),
                Some(c) => format!("csrf_token={c}&{body}"),
                None => body.clone(),
            }
        }
    };
    let res = p
        .app
        .clone()
        .oneshot(req.body(Body::from(body)).expect("request"))
        .await
        .expect("infallible");
    let status = res.status();
    let location = res
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let streaming = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/event-stream"));
    // Event streams never end: their status is the answer.
    let text = if streaming {
        String::new()
    } else {
        let bytes = res.into_body().collect().await.expect("body").to_bytes();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    Answer {
        status,
        text: location.unwrap_or(text),
    }
}

/// Hostile ids in the URL: each a 404, or a 400 when not UTF-8.
fn hostile_ids() -> Vec<(String, u16)> {
    vec![
        (BIG_I64.to_string(), 404),
        (OVERFLOW.to_string(), 404),
        ("-1".to_string(), 404),
        (NUL.to_string(), 404),
        (RTL.to_string(), 404),
        ("x".repeat(5000), 404),
        (LONE_SURROGATE.to_string(), 400),
        (NOT_UTF8.to_string(), 400),
    ]
}

/// Queries every page but the runs table ignores: the answer must not change.
fn ignored_queries() -> Vec<String> {
    vec![
        format!("page={BIG_I64}"),
        format!("page={OVERFLOW}"),
        "page=-1".to_string(),
        format!("sort={NUL}&dir={RTL}"),
        format!("zzz={LONE_SURROGATE}&yyy={NOT_UTF8}"),
        format!("zzz={}", "a".repeat(50_000)),
    ]
}

/// The runs table's own parameters.
fn runs_cases() -> Vec<Case> {
    // `http` refuses URIs of 64 KiB and more.
    let long = "a".repeat(50_000);
    vec![
        get(format!("/runs?page={BIG_I64}"), 303).showing("page=1"),
        get("/runs?page=-5", 303).showing("page=1"),
        get("/runs?page=0", 303).showing("page=1"),
        get("/runs?page=2&status=queued", 303).showing("page=1"),
        get(format!("/runs?page={OVERFLOW}"), 400).showing("page"),
        get("/runs?page=abc", 400).showing("page"),
        get("/runs?page=1.5", 400).showing("page"),
        get("/runs?page=", 400).showing("page"),
        get("/runs?page=1&page=2", 400).showing("page"),
        get("/runs?page=1", 200).showing("page 1 of 1"),
        get("/runs?sort=nope&dir=sideways", 200).showing("fixture"),
        get("/runs?sort=name%3Bdrop%20table%20run", 200).showing("fixture"),
        get("/runs?sort=top1&dir=asc", 200).showing("fixture"),
        get("/runs?status=bogus", 400).showing("status"),
        get("/runs?model=bogus", 400).showing("model"),
        get("/runs?kind=bogus", 400).showing("kind"),
        get(format!("/runs?status={NUL}"), 400).showing("status"),
        get(format!("/runs?q={NUL}"), 400).showing("NUL"),
        get(format!("/runs?tag={NUL}"), 400).showing("NUL"),
        get(format!("/runs?q={RTL}"), 200).showing("No runs match"),
        get(format!("/runs?q={LONE_SURROGATE}"), 200).showing("No runs match"),
        get(format!("/runs?q={NOT_UTF8}"), 200).showing("No runs match"),
        get(format!("/runs?q={long}"), 200).showing("No runs match"),
        get(format!("/runs?tag={long}"), 200).showing("No runs match"),
        get("/runs?unknown=1", 200).showing("fixture"),
    ]
}

/// The other pages' query parameters.
fn query_cases(f: &Fixture) -> Vec<Case> {
    let run = f.run;
    let many: String = (0..40).map(|_| format!("run={run}&")).collect();
    vec![
        get("/runs/new?kind=bogus", 200).showing("field-error"),
        get(format!("/runs/new?preset={NUL}"), 200).showing("field-error"),
        get(format!("/runs/new?model={RTL}"), 200).showing("field-error"),
        get("/runs/new?clone=nope", 404),
        get(format!("/runs/new?clone={}", Uuid::new_v4()), 404),
        get(format!("/runs/new?clone={LONE_SURROGATE}"), 404),
        get(format!("/runs/new?clone={run}"), 200).showing("cloned from"),
        get("/runs/new?kind=pretrain&kind=finetune", 400).showing("kind"),
        get(format!("/studies/new?from={NUL}"), 200),
        get("/studies/new?from=a&from=b", 400).showing("from"),
        get("/signin?next=%2F%2Fevil.example", 200),
        get(format!("/signin?next={NUL}"), 200),
        get("/signin?next=a&next=b", 400).showing("next"),
        get("/compare?run=nope", 404),
        get(format!("/compare?run={}", Uuid::new_v4()), 404),
        get(format!("/compare?run={LONE_SURROGATE}"), 404),
        get(format!("/compare?run={run}&epoch={OVERFLOW}"), 200),
        get(format!("/compare?run={run}&epoch=-1&key={NUL}"), 200),
        get(format!("/compare?{many}epoch=0"), 200),
        get(format!("/runs/{run}/events?after=garbage"), 200),
        get(format!("/runs/{run}/events?after={NUL}"), 200),
        get(format!("/runs/{run}/events?after=a&after=b"), 400),
    ]
}

/// Every form that changes something, refused for each reason it can be.
fn refused_posts(f: &Fixture) -> Vec<Case> {
    let (run, study) = (f.run, f.study);
    let mut cases = Vec::new();
    let two_megabytes = format!("document={}", "a".repeat(2 * 1024 * 1024));
    for uri in [
        "/runs/new".to_string(),
        "/studies/new".to_string(),
        format!("/runs/{run}/cancel"),
        format!("/runs/{run}/retry"),
        format!("/studies/{study}/cancel"),
        format!("/studies/{study}/retry"),
    ] {
        cases.push(post(&uri, Who::Anonymous, "", 401));
        cases.push(post(&uri, Who::NoCsrf, "", 403).showing("CSRF"));
        cases.push(post(&uri, Who::WrongCsrf, "", 403).showing("CSRF"));
        cases.push(post(&uri, Who::CrossSite, "", 403).showing("cross-site"));
        cases.push(post_as(&uri, "text/plain", "a=1", 415));
        cases.push(post_as(&uri, "application/json", "{}", 415));
        cases.push(post_as(
            &uri,
            "multipart/form-data; boundary=x",
            "--x--",
            415,
        ));
        cases.push(post(&uri, Who::SignedIn, two_megabytes.clone(), 413));
    }
    cases
}

/// Signed-in posts with hostile values.
fn form_cases(f: &Fixture) -> Vec<Case> {
    let (run, study, victim) = (f.run, f.study, f.victim);
    let s = Who::SignedIn;
    let nul_name = study_support::TWO_ARMS.replace("pages study", "a\\u0000b");
    let encode = |doc: &str| serde_urlencoded::to_string([("document", doc)]).expect("form");
    let huge_seeds = study_support::TWO_ARMS.replace("seeds = 3", &format!("seeds = {OVERFLOW}"));
    let negative_seeds = study_support::TWO_ARMS.replace("seeds = 3", "seeds = -1");
    let long = "a".repeat(100_000);
    vec![
        // The new-run form: the run config's validation, the form again with reasons.
        post("/runs/new", s, format!("name=x&epochs={OVERFLOW}"), 422).showing("field-error"),
        post("/runs/new", s, "name=x&epochs=-1", 422).showing("field-error"),
        post("/runs/new", s, "name=x&blr=1e309", 422).showing("field-error"),
        post("/runs/new", s, "name=x&blr=NaN", 422).showing("field-error"),
        post("/runs/new", s, "name=x&norm_pix_loss=maybe", 422).showing("field-error"),
        post("/runs/new", s, format!("name={NUL}"), 422).showing("control characters"),
        post("/runs/new", s, format!("name=x&tags={NUL}"), 422).showing("field-error"),
        post("/runs/new", s, format!("name={long}"), 422).showing("field-error"),
        post("/runs/new", s, format!("name=x&parent_run={NUL}"), 422).showing("field-error"),
        post("/runs/new", s, "name=x&parent_epoch=-1", 422).showing("field-error"),
        post("/runs/new", s, format!("name=x&kind={LONE_SURROGATE}"), 422),
        // The study form and its preview: the study's checks, nothing queued.
        post("/studies/new", s, format!("document={NUL}"), 422).showing("document"),
        post("/studies/new", s, encode(&nul_name), 422).showing("name"),
        post("/studies/new", s, encode(&huge_seeds), 422).showing("seeds"),
        post("/studies/new", s, encode(&negative_seeds), 422).showing("seeds"),
        post("/studies/new", s, format!("document={RTL}"), 422),
        post("/studies/new", s, "", 422).showing("document"),
        post(
            "/studies/new/preview",
            Who::Anonymous,
            format!("document={NUL}"),
            422,
        ),
        post(
            "/studies/new/preview",
            Who::Anonymous,
            encode(&nul_name),
            422,
        ),
        post(
            "/studies/new/preview",
            Who::Anonymous,
            encode(&huge_seeds),
            422,
        ),
        post("/studies/new/preview", Who::Anonymous, "", 422),
        post_as("/studies/new/preview", "text/plain", "document=x", 415),
        post_as("/studies/new/preview", "application/json", "{}", 415),
        // Retry one chain: both fields, an arm name, a whole seed, a real chain.
        post(
            format!("/studies/{study}/retry"),
            s,
            format!("arm={NUL}&seed=1"),
            400,
        )
        .showing("arm"),
        post(
            format!("/studies/{study}/retry"),
            s,
            format!("arm={RTL}&seed=1"),
            400,
        )
        .showing("arm"),
        post(
            format!("/studies/{study}/retry"),
            s,
            format!("arm={long}&seed=1"),
            400,
        )
        .showing("arm"),
        post(
            format!("/studies/{study}/retry"),
            s,
            format!("arm=mae&seed={OVERFLOW}"),
            400,
        )
        .showing("seed"),
        post(format!("/studies/{study}/retry"), s, "arm=mae&seed=-1", 400).showing("seed"),
        post(format!("/studies/{study}/retry"), s, "arm=mae", 400).showing("both"),
        post(format!("/studies/{study}/retry"), s, "seed=1", 400).showing("both"),
        post(
            format!("/studies/{study}/retry"),
            s,
            "arm=nosuch&seed=1",
            400,
        )
        .showing("nosuch"),
        // Cancel and retry a run: unknown runs are 404, retrying a queued one a conflict.
        post(format!("/runs/{}/cancel", Uuid::new_v4()), s, "", 404),
        post(format!("/runs/{}/retry", Uuid::new_v4()), s, "", 404),
        post(format!("/runs/{run}/retry"), s, "", 409),
        post(
            format!("/runs/{victim}/cancel"),
            s,
            format!("x={NUL}&y={LONE_SURROGATE}"),
            303,
        )
        .showing(format!("/runs/{victim}")),
        // Sign-in: a wrong token is 401 (answered by the auth module in JSON).
        post("/signin", Who::Anonymous, format!("token={NUL}"), 401),
        post("/signin", Who::Anonymous, format!("token={long}"), 401),
        post(
            "/signin",
            Who::Anonymous,
            format!("token={LONE_SURROGATE}"),
            401,
        ),
        post("/signin", Who::Anonymous, "next=%2F", 422),
        post("/signin", Who::CrossSite, "token=x", 403),
        post_as("/signin", "text/plain", "token=x", 415),
        post("/signout", Who::CrossSite, "", 403),
        post("/signout", Who::Anonymous, "", 303),
    ]
}

#[tokio::test]
async fn hostile_urls_queries_and_forms_get_a_4xx_or_a_clamped_page_never_a_5xx() {
    page_routes::assert_complete();
    let p = spawn().await;
    let f = page_routes::fixture(&p).await;
    let (runs_before, studies_before) = (p.count("run").await, p.count("study").await);

    let mut cases = Vec::new();
    // Each route's answer as it is, and the same answer whatever it ignores.
    let mut methods: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (method, path) in page_routes::PAGE_ROUTES {
        methods.entry(*path).or_default().push(*method);
        if *method != "GET" {
            continue;
        }
        let uri = f.fill(path);
        let baseline = ask(&p, &get(&uri, 0)).await.status.as_u16();
        assert!(baseline < 400, "GET {uri}: {baseline}");
        if *path != "/runs" {
            for q in ignored_queries() {
                cases.push(get(format!("{uri}?{q}"), baseline));
            }
        }
    }
    // Ids that are not ids, on every route with one; methods no route has.
    for (path, served) in &methods {
        for (id, expect) in hostile_ids() {
            if path.contains("{id}") {
                let uri = f.fill_with(path, "{id}", &id);
                for method in served {
                    let case = if *method == "GET" {
                        get(&uri, expect)
                    } else {
                        post(&uri, Who::SignedIn, "", expect)
                    };
                    cases.push(case);
                }
            }
            if path.contains("{artifact_id}") {
                let uri = f.fill_with(path, "{artifact_id}", &id);
                cases.push(get(uri, expect));
            }
        }
        let uri = f.fill(path);
        for wrong in ["PUT", "DELETE", "PATCH", "GET", "POST"] {
            if !served.contains(&wrong) {
                cases.push(Case {
                    method: wrong,
                    ..get(&uri, 405)
                });
            }
        }
    }
    cases.extend(runs_cases());
    cases.extend(query_cases(&f));
    cases.extend(refused_posts(&f));
    cases.extend(form_cases(&f));

    let mut wrong = Vec::new();
    for case in &cases {
        let a = ask(&p, case).await;
        let shown = case.shows.as_deref().is_none_or(|t| a.text.contains(t));
        if a.status.is_server_error() || a.status.as_u16() != case.expect || !shown {
            let short: String = case.uri.chars().take(100).collect();
            let text: String = a.text.chars().take(300).collect();
            wrong.push(format!(
                "{} {short} {:?}: {} (expected {}{}) {text}",
                case.method,
                case.form
                    .as_ref()
                    .map(|(w, t, b)| (w, t, b.chars().take(60).collect::<String>())),
                a.status,
                case.expect,
                case.shows
                    .as_deref()
                    .map(|t| format!(", showing {t:?}"))
                    .unwrap_or_default(),
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} hostile requests answered wrong:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
    assert!(cases.len() > 250, "the table has {} cases", cases.len());
    // Nothing refused was stored.
    assert_eq!(p.count("run").await, runs_before, "runs");
    assert_eq!(p.count("study").await, studies_before, "studies");
}
