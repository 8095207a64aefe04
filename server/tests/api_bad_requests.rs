//! Issue 7, "Tests": a table of bad requests, each answered with the right
//! 4xx and the JSON error body, and none of them writing a row.

mod api_support;

use api_support::{Answer, TestApp, spawn, tiny_config};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};

/// Who sends the request.
#[derive(Clone, Copy)]
enum Auth {
    Token,
    None,
    Garbage,
    Basic,
}

struct Case {
    what: &'static str,
    method: &'static str,
    uri: String,
    content_type: Option<&'static str>,
    auth: Auth,
    body: Vec<u8>,
    status: StatusCode,
    /// The field the error must name, when one is expected.
    field: Option<&'static str>,
}

fn post(what: &'static str, body: Value, status: u16, field: Option<&'static str>) -> Case {
    raw(what, body.to_string().into_bytes(), status, field)
}

fn raw(what: &'static str, body: Vec<u8>, status: u16, field: Option<&'static str>) -> Case {
    Case {
        what,
        method: "POST",
        uri: "/api/v1/runs".into(),
        content_type: Some("application/json"),
        auth: Auth::Token,
        body,
        status: StatusCode::from_u16(status).unwrap(),
        field,
    }
}

fn get(what: &'static str, uri: String, status: u16, field: Option<&'static str>) -> Case {
    Case {
        what,
        method: "GET",
        uri,
        content_type: None,
        auth: Auth::None,
        body: Vec::new(),
        status: StatusCode::from_u16(status).unwrap(),
        field,
    }
}

/// `tiny_config()` with `key` set to `value`.
fn with(key: &str, value: Value) -> Value {
    let mut c = tiny_config();
    c[key] = value;
    c
}

fn cases(queued: uuid::Uuid, cancelled: uuid::Uuid, limit: usize) -> Vec<Case> {
    let missing = uuid::Uuid::new_v4();
    let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
    let mut c = vec![
        // Wrong types and out-of-range numbers: 422 naming the field.
        post(
            "epochs as a string",
            with("epochs", json!("ten")),
            422,
            Some("epochs"),
        ),
        post(
            "negative epochs",
            with("epochs", json!(-5)),
            422,
            Some("epochs"),
        ),
        post("zero epochs", with("epochs", json!(0)), 422, Some("epochs")),
        post(
            "too many epochs",
            with("epochs", json!(100_001)),
            422,
            Some("epochs"),
        ),
        post(
            "epochs past u32",
            with("epochs", json!(99_999_999_999_i64)),
            422,
            Some("epochs"),
        ),
        post(
            "epochs as a float",
            with("epochs", json!(1e20)),
            422,
            Some("epochs"),
        ),
        post(
            "batch times accumulation past u32",
            json!({"batch_size": 4_294_967_295_u32, "accum_iter": 1178, "epochs": 2, "warmup_epochs": 1}),
            422,
            Some("batch_size"),
        ),
        post(
            "patch grid past u32",
            json!({"img_size": 4_294_967_295_u32, "patch_size": 1, "epochs": 2, "warmup_epochs": 1}),
            422,
            Some("img_size"),
        ),
        post(
            "seed past u64",
            with("seed", json!(18_446_744_073_709_551_616.0_f64)),
            422,
            Some("seed"),
        ),
        post(
            "batch size zero",
            with("batch_size", json!(0)),
            422,
            Some("batch_size"),
        ),
        post("negative blr", with("blr", json!(-1.0)), 422, Some("blr")),
        post(
            "mask ratio above one",
            with("mask_ratio", json!(1.5)),
            422,
            Some("mask_ratio"),
        ),
        post(
            "mask ratio as text",
            with("mask_ratio", json!("NaN")),
            422,
            Some("mask_ratio"),
        ),
        post(
            "boolean as a number",
            with("norm_pix_loss", json!(1)),
            422,
            Some("norm_pix_loss"),
        ),
        post(
            "unknown key",
            with("learning_rate", json!(0.1)),
            422,
            Some("learning_rate"),
        ),
        post(
            "unknown preset",
            with("preset", json!("vit-huge/14")),
            422,
            Some("preset"),
        ),
        post(
            "SQL in the preset",
            with("preset", json!("vit-micro/4' or '1'='1")),
            422,
            Some("preset"),
        ),
        post(
            "unknown kind",
            with("kind", json!("train")),
            422,
            Some("kind"),
        ),
        post(
            "unknown model",
            with("model", json!("resnet")),
            422,
            Some("model"),
        ),
        post("empty name", with("name", json!("   ")), 422, Some("name")),
        post(
            "NUL in the name",
            with("name", json!("a\u{0}b")),
            422,
            Some("name"),
        ),
        post(
            "escape code in the name",
            with("name", json!("\u{1b}[31mred")),
            422,
            Some("name"),
        ),
        post(
            "name of 300 characters",
            with("name", json!("é".repeat(300))),
            422,
            Some("name"),
        ),
        post(
            "tags not a list",
            with("tags", json!("smoke")),
            422,
            Some("tags"),
        ),
        post(
            "tag of the wrong type",
            with("tags", json!([1])),
            422,
            Some("tags[0]"),
        ),
        post(
            "blank tag",
            with("tags", json!(["ok", " "])),
            422,
            Some("tags[1]"),
        ),
        post(
            "parent run not a uuid",
            with("parent_run", json!("../etc")),
            422,
            Some("parent_run"),
        ),
        post(
            "finetune from a run that does not exist",
            json!({"kind": "finetune", "epochs": 2, "warmup_epochs": 1, "parent_run": missing}),
            422,
            Some("parent_run"),
        ),
        post(
            "negative parent epoch",
            with("parent_epoch", json!(-1)),
            422,
            Some("parent_epoch"),
        ),
        post(
            "empty dataset",
            with("dataset", json!("")),
            422,
            Some("dataset"),
        ),
        post(
            "wave_in on plain MAE",
            with("wave_in", json!("encoder")),
            422,
            Some("wave_in"),
        ),
        post("body is an array", json!([tiny_config()]), 422, None),
        post("body is a number", json!(42), 422, None),
        post("body is null", json!(null), 422, None),
        // Unreadable bodies: 400.
        raw("empty body", Vec::new(), 400, None),
        raw("whitespace body", b"  \n ".to_vec(), 400, None),
        raw("truncated JSON", br#"{"name": "a""#.to_vec(), 400, None),
        raw(
            "trailing garbage",
            br#"{"name": "a"} x"#.to_vec(),
            400,
            None,
        ),
        raw("number past f64", br#"{"seed": 1e400}"#.to_vec(), 400, None),
        raw(
            "lone surrogate",
            br#"{"name": "\ud800"}"#.to_vec(),
            400,
            None,
        ),
        raw(
            "invalid UTF-8",
            b"{\"name\": \"\xff\xfe\"}".to_vec(),
            400,
            None,
        ),
        raw(
            "nesting past the recursion limit",
            deep.into_bytes(),
            400,
            None,
        ),
        // Oversized: 413.
        raw(
            "body past the limit",
            format!(r#"{{"name": "{}"}}"#, "x".repeat(limit)).into_bytes(),
            413,
            None,
        ),
        // Ids and names in paths.
        get(
            "run id not a uuid",
            "/api/v1/runs/not-a-uuid".into(),
            400,
            Some("run_id"),
        ),
        get(
            "SQL as a run id",
            "/api/v1/runs/1%20or%201=1".into(),
            400,
            Some("run_id"),
        ),
        get(
            "run that does not exist",
            format!("/api/v1/runs/{missing}"),
            404,
            None,
        ),
        get(
            "epochs of a missing run",
            format!("/api/v1/runs/{missing}/epochs"),
            404,
            None,
        ),
        get(
            "steps of a missing run",
            format!("/api/v1/runs/{missing}/steps"),
            404,
            None,
        ),
        get(
            "artifacts of a missing run",
            format!("/api/v1/runs/{missing}/artifacts"),
            404,
            None,
        ),
        get(
            "events of a missing run",
            format!("/api/v1/runs/{missing}/events"),
            404,
            None,
        ),
        get(
            "path traversal in an artifact name",
            format!("/api/v1/runs/{queued}/artifacts/..%2F..%2Fetc%2Fpasswd"),
            400,
            Some("name"),
        ),
        get(
            "dot file as an artifact",
            format!("/api/v1/runs/{queued}/artifacts/.env"),
            400,
            Some("name"),
        ),
        get(
            "backslash in an artifact name",
            format!("/api/v1/runs/{queued}/artifacts/a%5C..%5Cb"),
            400,
            Some("name"),
        ),
        get(
            "artifact that does not exist",
            format!("/api/v1/runs/{queued}/artifacts/recon-0001.png"),
            404,
            None,
        ),
        get(
            "log.txt of a run without epochs",
            format!("/api/v1/runs/{queued}/artifacts/log.txt"),
            404,
            None,
        ),
        // Query strings.
        get(
            "limit zero",
            "/api/v1/runs?limit=0".into(),
            400,
            Some("limit"),
        ),
        get(
            "limit not a number",
            "/api/v1/runs?limit=abc".into(),
            400,
            Some("limit"),
        ),
        get(
            "limit past i64",
            "/api/v1/runs?limit=99999999999999999999".into(),
            400,
            Some("limit"),
        ),
        get(
            "negative offset",
            "/api/v1/runs?offset=-1".into(),
            400,
            Some("offset"),
        ),
        get(
            "unknown parameter",
            "/api/v1/runs?colour=red".into(),
            400,
            Some("colour"),
        ),
        get(
            "unknown status",
            "/api/v1/runs?status=queued%27%20or%201=1".into(),
            400,
            Some("status"),
        ),
        get(
            "SQL as a sort key",
            "/api/v1/runs?sort=created_at;drop%20table%20run".into(),
            400,
            Some("sort"),
        ),
        get(
            "NUL in the search",
            "/api/v1/runs?q=a%00b".into(),
            400,
            Some("q"),
        ),
        get(
            "step cursor not a number",
            format!("/api/v1/runs/{queued}/steps?after=x"),
            400,
            Some("after"),
        ),
        get(
            "unknown export format",
            format!("/api/v1/runs/{queued}/epochs?format=xml"),
            400,
            Some("format"),
        ),
        get(
            "unknown artifact kind",
            format!("/api/v1/runs/{queued}/artifacts?kind=weights"),
            400,
            Some("kind"),
        ),
        get(
            "queue limit too big",
            "/api/v1/queue?limit=100000".into(),
            400,
            Some("limit"),
        ),
        get("no such endpoint", "/api/v1/experiments".into(), 404, None),
    ];
    // Content types: 415.
    for (what, ct) in [
        ("text/plain body", Some("text/plain")),
        ("form body", Some("application/x-www-form-urlencoded")),
        ("no content type", None),
    ] {
        let mut case = post(what, tiny_config(), 415, None);
        case.content_type = ct;
        c.push(case);
    }
    // Credentials: 401.
    for (what, auth) in [
        ("write without a token", Auth::None),
        ("write with a garbage token", Auth::Garbage),
        ("write with basic auth", Auth::Basic),
    ] {
        let mut case = post(what, tiny_config(), 401, None);
        case.auth = auth;
        c.push(case);
    }
    // Transitions: 404 and 409.
    let transition = |what, uri: String, status| Case {
        what,
        method: "POST",
        uri,
        content_type: None,
        auth: Auth::Token,
        body: Vec::new(),
        status: StatusCode::from_u16(status).unwrap(),
        field: None,
    };
    c.push(transition(
        "cancel a missing run",
        format!("/api/v1/runs/{missing}/cancel"),
        404,
    ));
    c.push(transition(
        "cancel a non-uuid",
        "/api/v1/runs/abc/cancel".into(),
        400,
    ));
    c.push(transition(
        "cancel a cancelled run",
        format!("/api/v1/runs/{cancelled}/cancel"),
        409,
    ));
    c.push(transition(
        "retry a queued run",
        format!("/api/v1/runs/{queued}/retry"),
        409,
    ));
    c.push(transition(
        "retry a missing run",
        format!("/api/v1/runs/{missing}/retry"),
        404,
    ));
    c
}

fn request(case: &Case, token: &str) -> Request<Body> {
    let body = case.body.clone();
    let mut req = Request::builder().method(case.method).uri(&case.uri);
    if let Some(ct) = case.content_type {
        req = req.header("content-type", ct);
    }
    req = match case.auth {
        Auth::Token => req.header("authorization", format!("Bearer {token}")),
        Auth::None => req,
        Auth::Garbage => req.header("authorization", "Bearer mlb_0123456789abcdef"),
        Auth::Basic => req.header("authorization", "Basic dXNlcjpwYXNz"),
    };
    req.body(Body::from(body)).unwrap()
}

fn check(case: &Case, answer: &Answer) {
    assert_eq!(
        answer.status,
        case.status,
        "{}: {} {} answered {}",
        case.what,
        case.method,
        case.uri,
        answer.text()
    );
    let body = answer.json();
    assert!(body["error"].is_string(), "{}: {body}", case.what);
    assert!(
        body["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{}: {body}",
        case.what
    );
    if let Some(field) = case.field {
        assert_eq!(body["field"], field, "{}: {body}", case.what);
    }
}

#[tokio::test]
async fn every_bad_request_gets_its_4xx_and_writes_nothing() {
    let app: TestApp = spawn().await;
    let queued = app.create_run(&tiny_config()).await;
    let cancelled = app.create_run(&tiny_config()).await;
    let a = app
        .post_empty(&format!("/api/v1/runs/{cancelled}/cancel"))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let limit = maelab_server::settings::ServeSettings::default().body_limit;

    let cases = cases(queued, cancelled, limit);
    assert!(cases.len() >= 40, "only {} cases", cases.len());
    let before = app.counts().await;
    for case in &cases {
        let answer = app.send(request(case, &app.token)).await;
        check(case, &answer);
        assert_eq!(app.counts().await, before, "{} wrote rows", case.what);
    }
    // The runs themselves did not move either.
    let q = app.get(&format!("/api/v1/runs/{queued}")).await.json();
    assert_eq!(q["status"], "queued");
    let c = app.get(&format!("/api/v1/runs/{cancelled}")).await.json();
    assert_eq!(c["status"], "cancelled");
}
