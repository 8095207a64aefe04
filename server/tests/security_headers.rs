//! Every response carries the security headers (issue 15, part 2): each page
//! route, each API route of the documented table, each static file, the
//! artifacts, and the error answers (404 of any URL, 405, 400, 401). The
//! artifacts keep their stored media type: raster images inline, anything
//! else an attachment with a safe filename.

mod api_support;
mod page_routes;
mod pages_support;
mod study_support;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use maelab_server::http::api::all_routes;
use maelab_server::http::security_headers::HEADERS;
use pages_support::{PNG_1X1, Pages, spawn};
use tower::ServiceExt;

/// Status and headers of one request; the body is dropped unread (the
/// event streams never end).
async fn head(p: &Pages, method: &str, uri: &str) -> (StatusCode, HeaderMap) {
    let method = Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = Request::builder().method(method.clone()).uri(uri);
    if method == Method::POST {
        req = req.header("content-type", "application/x-www-form-urlencoded");
    }
    let res = p
        .app
        .clone()
        .oneshot(req.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    (res.status(), res.headers().clone())
}

fn assert_secured(what: &str, status: StatusCode, headers: &HeaderMap) {
    for (name, value) in HEADERS {
        assert_eq!(
            headers.get(name).and_then(|v| v.to_str().ok()),
            Some(value),
            "{what} ({status}): header {name}"
        );
    }
}

/// Every file under `dir`, as paths relative to it.
fn files_under(dir: &std::path::Path, prefix: &str, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("static dir").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = format!("{prefix}{name}");
        if entry.path().is_dir() {
            files_under(&entry.path(), &format!("{rel}/"), out);
        } else {
            out.push(rel);
        }
    }
}

#[tokio::test]
async fn every_route_static_file_artifact_and_error_carries_the_headers() {
    page_routes::assert_complete();
    let p = spawn().await;
    let f = page_routes::fixture(&p).await;

    // Pages: reads answer (2xx or a redirect); posts without a sign-in are
    // refused (sign-out, which needs none, redirects).
    for (method, path) in page_routes::PAGE_ROUTES {
        let uri = f.fill(path);
        let (status, headers) = head(&p, method, &uri).await;
        assert_secured(&format!("{method} {uri}"), status, &headers);
        if *method == "GET" || uri == "/signout" {
            assert!(status.as_u16() < 400, "{method} {uri}: {status}");
        } else {
            assert!(status.is_client_error(), "{method} {uri}: {status}");
        }
    }

    // The API, route by route from its table (and its OpenAPI document).
    let mut api = 0;
    for route in all_routes() {
        let uri = f.fill(route.path);
        let method = route.verb.as_str().to_uppercase();
        let (status, headers) = head(&p, &method, &uri).await;
        assert_secured(&format!("{method} {uri}"), status, &headers);
        assert!(!status.is_server_error(), "{method} {uri}: {status}");
        api += 1;
    }
    assert!(api >= 20, "the API table has {api} routes");
    let (status, headers) = head(&p, "GET", maelab_server::http::api::openapi::PATH).await;
    assert_eq!(status, StatusCode::OK);
    assert_secured("the OpenAPI document", status, &headers);
    let (status, headers) = head(&p, "GET", "/healthz").await;
    assert_secured("/healthz", status, &headers);

    // Static files, with types a browser runs under `nosniff`.
    let mut files = Vec::new();
    let static_dir = std::path::Path::new(maelab_server::http::static_files::SOURCE_DIR);
    files_under(static_dir, "", &mut files);
    assert!(files.iter().any(|f| f == "run.js"), "{files:?}");
    for file in &files {
        let uri = format!("/static/{file}");
        let (status, headers) = head(&p, "GET", &uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert_secured(&uri, status, &headers);
        let ty = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if file.ends_with(".js") {
            assert!(ty.contains("javascript"), "{uri}: {ty}");
        } else if file.ends_with(".css") {
            assert!(ty.starts_with("text/css"), "{uri}: {ty}");
        }
    }

    // Errors: any unknown URL, a wrong method, a malformed query, no token.
    for (method, uri, expected) in [
        ("GET", "/no/such/page".to_string(), 404),
        ("GET", "/static/no-such-file.js".to_string(), 404),
        ("GET", "/api/v1/no/such/endpoint".to_string(), 404),
        ("GET", "/runs/not-a-run".to_string(), 404),
        ("DELETE", "/runs".to_string(), 405),
        ("GET", "/runs?page=abc".to_string(), 400),
        ("POST", "/api/v1/runs".to_string(), 401),
        ("GET", format!("/api/v1/runs/{}/artifacts/..", f.run), 400),
    ] {
        let (status, headers) = head(&p, method, &uri).await;
        assert_eq!(status.as_u16(), expected, "{method} {uri}");
        assert_secured(&format!("{method} {uri}"), status, &headers);
    }
    let (_, headers) = head(&p, "GET", "/no/such/page").await;
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("text/html; charset=utf-8"),
        "an unknown URL gets the HTML 404 page"
    );
}

#[tokio::test]
async fn artifacts_keep_their_media_type_images_inline_the_rest_attached() {
    let p = spawn().await;
    let f = page_routes::fixture(&p).await;
    let run = &f.run;
    for (uri, media, disposition) in [
        (
            format!("/runs/{run}/artifacts/{}", f.png),
            "image/png",
            "inline; filename=\"recon_e0000.png\"",
        ),
        (
            format!("/runs/{run}/artifacts/{}", f.html),
            "text/html",
            "attachment; filename=\"evil.html\"",
        ),
        (
            format!("/runs/{run}/log.txt"),
            "text/html",
            "attachment; filename=\"log.txt\"",
        ),
        (
            format!("/api/v1/runs/{run}/artifacts/recon_e0000.png"),
            "image/png",
            "inline; filename=\"recon_e0000.png\"",
        ),
        (
            format!("/api/v1/runs/{run}/artifacts/checkpoint-0.pth"),
            "application/octet-stream",
            "attachment; filename=\"checkpoint-0.pth\"",
        ),
        (
            format!("/api/v1/runs/{run}/artifacts/evil.html"),
            "text/html",
            "attachment; filename=\"evil.html\"",
        ),
        (
            format!("/api/v1/runs/{run}/artifacts/log.txt"),
            "text/plain; charset=utf-8",
            "attachment; filename=\"log.txt\"",
        ),
    ] {
        let a = p.get(&uri).await;
        assert_eq!(a.status, StatusCode::OK, "{uri}: {}", a.text());
        assert_eq!(a.header("content-type"), media, "{uri}");
        assert_eq!(a.header("content-disposition"), disposition, "{uri}");
        assert_secured(&uri, a.status, &a.headers);
    }
    // The bytes are the stored ones, not a page of ours.
    let a = p.get(&format!("/runs/{run}/artifacts/{}", f.png)).await;
    assert_eq!(&a.body[..], PNG_1X1);
}
