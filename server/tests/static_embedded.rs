//! `maelab serve` runs from any directory (issue 13, item 6): the static files
//! are compiled into the binary and served with their content type, an ETag,
//! 304 on revalidation and gzip or brotli variants; unknown names and paths
//! with `..` are 404s; `--static-dir` serves a folder from disk instead.

mod cli_support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use cli_support::{BIN, Server, serve_with};
use maelab_server::http::static_files::SOURCE_DIR;
use reqwest::StatusCode;
use reqwest::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ETAG,
    IF_NONE_MATCH, VARY,
};

const UPLOT_JS: &str = "vendor/uplot-1.6.32/uPlot.iife.min.js";

/// A new empty folder, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("maelab-static-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&path).expect("temp dir");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `maelab serve` in `cwd` without `--static-dir`; where this test may
/// mount (root), the source tree's `static/` is hidden from the server under
/// an empty tmpfs, so that every byte it serves must come from the binary.
async fn serve_embedded(cwd: &Path) -> Server {
    let hide = Command::new("unshare")
        .args(["--mount", "--", "sh", "-c", r#"mount -t tmpfs tmpfs "$0""#])
        .arg(SOURCE_DIR)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let mut command = if hide {
        let mut c = Command::new("unshare");
        c.args([
            "--mount",
            "--",
            "sh",
            "-c",
            r#"mount -t tmpfs tmpfs "$0" && exec "$@""#,
        ])
        .arg(SOURCE_DIR)
        .arg(BIN);
        c
    } else {
        eprintln!("cannot unshare a mount namespace: static/ stays visible to the server");
        Command::new(BIN)
    };
    command.current_dir(cwd).env_remove("MAELAB_STATIC_DIR");
    serve_with(command, &[]).await
}

fn on_disk(file: &str) -> Vec<u8> {
    std::fs::read(Path::new(SOURCE_DIR).join(file)).expect("static file")
}

fn header(res: &reqwest::Response, name: reqwest::header::HeaderName) -> String {
    res.headers()
        .get(&name)
        .map(|v| v.to_str().expect("ascii header").to_string())
        .unwrap_or_default()
}

async fn get(url: &str, headers: &[(reqwest::header::HeaderName, &str)]) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(url);
    for (name, value) in headers {
        req = req.header(name, *value);
    }
    req.send().await.expect("request")
}

/// The status of `GET {target}` sent as written: HTTP clients resolve `..`
/// before sending, an attacker does not.
fn raw_status(base: &str, target: &str) -> u16 {
    let addr = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line for {target}: {answer:?}"))
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("gzip body");
    out
}

fn unbrotli(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    brotli::BrotliDecompress(&mut &bytes[..], &mut out).expect("brotli body");
    out
}

#[tokio::test]
async fn a_server_started_in_an_empty_folder_serves_the_embedded_files() {
    let cwd = TempDir::new();
    let server = serve_embedded(&cwd.0).await;
    let url = |file: &str| format!("{}/static/{file}", server.url);

    // The app's stylesheet, plain: its bytes, type, validator, revalidation.
    let res = get(&url("app.css"), &[]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, CONTENT_TYPE), "text/css; charset=utf-8");
    assert_eq!(header(&res, CACHE_CONTROL), "no-cache");
    assert_eq!(header(&res, VARY), "accept-encoding");
    assert_eq!(header(&res, CONTENT_ENCODING), "");
    let etag = header(&res, ETAG);
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    assert_eq!(res.bytes().await.expect("body"), on_disk("app.css"));

    let res = get(&url("app.css"), &[(IF_NONE_MATCH, &etag)]).await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&res, ETAG), etag);
    assert!(res.bytes().await.expect("body").is_empty());
    let res = get(&url("app.css"), &[(IF_NONE_MATCH, "\"stale\"")]).await;
    assert_eq!(res.status(), StatusCode::OK, "another tag is not a match");

    // The vendored chart library, compressed as the client asks, kept a year.
    let plain = on_disk(UPLOT_JS);
    let res = get(&url(UPLOT_JS), &[(ACCEPT_ENCODING, "gzip")]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, CONTENT_TYPE), "text/javascript; charset=utf-8");
    assert_eq!(
        header(&res, CACHE_CONTROL),
        "public, max-age=31536000, immutable"
    );
    assert_eq!(header(&res, CONTENT_ENCODING), "gzip");
    assert_eq!(header(&res, VARY), "accept-encoding");
    let gzip_etag = header(&res, ETAG);
    let gz = res.bytes().await.expect("body");
    assert!(
        gz.len() < plain.len() / 2,
        "{} of {}",
        gz.len(),
        plain.len()
    );
    assert_eq!(gunzip(&gz), plain);

    let res = get(&url(UPLOT_JS), &[(ACCEPT_ENCODING, "gzip, deflate, br")]).await;
    assert_eq!(header(&res, CONTENT_ENCODING), "br");
    let br_etag = header(&res, ETAG);
    assert_eq!(unbrotli(&res.bytes().await.expect("body")), plain);

    let res = get(&url(UPLOT_JS), &[]).await;
    assert_eq!(header(&res, CONTENT_ENCODING), "");
    let plain_etag = header(&res, ETAG);
    assert_eq!(res.bytes().await.expect("body"), plain);
    let tags = [&plain_etag, &gzip_etag, &br_etag];
    assert!(
        tags[0] != tags[1] && tags[1] != tags[2] && tags[0] != tags[2],
        "each representation has its own tag: {tags:?}"
    );

    let res = get(
        &url(UPLOT_JS),
        &[(ACCEPT_ENCODING, "gzip"), (IF_NONE_MATCH, &gzip_etag)],
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&res, ETAG), gzip_etag);

    // HEAD: the headers of a GET, no body.
    let res = reqwest::Client::new()
        .head(url("app.css"))
        .send()
        .await
        .expect("head");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, ETAG), etag);
    assert_eq!(header(&res, CONTENT_TYPE), "text/css; charset=utf-8");
    assert_eq!(
        header(&res, CONTENT_LENGTH),
        on_disk("app.css").len().to_string()
    );
    assert!(res.bytes().await.expect("body").is_empty());

    // Every file of the source tree's static/, byte for byte.
    let mut files = Vec::new();
    walk(Path::new(SOURCE_DIR), "", &mut files);
    assert!(files.len() >= 10, "{files:?}");
    for file in &files {
        let res = get(&url(file), &[]).await;
        assert_eq!(res.status(), StatusCode::OK, "{file}");
        assert_eq!(res.bytes().await.expect("body"), on_disk(file), "{file}");
    }

    // Unknown names and ways out of static/.
    for target in [
        "/static/no-such-file.js",
        "/static/",
        "/static/../Cargo.toml",
        "/static/%2e%2e/Cargo.toml",
        "/static/..%2fCargo.toml",
        "/static/vendor/../../Cargo.toml",
        "/static//etc/passwd",
        "/static/%2fetc%2fpasswd",
    ] {
        assert_eq!(raw_status(&server.url, target), 404, "{target}");
    }
    // Nothing was written where it started.
    let left: Vec<_> = std::fs::read_dir(&cwd.0).expect("cwd").collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn static_dir_serves_a_folder_from_disk() {
    let root = TempDir::new();
    let dir = root.0.join("static");
    std::fs::create_dir(&dir).expect("static dir");
    std::fs::write(dir.join("only-here.js"), "console.log('dev');\n").expect("file");
    std::fs::write(root.0.join("secret.txt"), "outside").expect("file");
    let mut command = Command::new(BIN);
    command.current_dir(&root.0);
    let server = serve_with(command, &["--static-dir", dir.to_str().expect("utf-8")]).await;

    let res = get(&format!("{}/static/only-here.js", server.url), &[]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(header(&res, CONTENT_TYPE).contains("javascript"));
    assert_eq!(res.text().await.expect("body"), "console.log('dev');\n");
    // The embedded copies are not consulted.
    let res = get(&format!("{}/static/app.css", server.url), &[]).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    for target in ["/static/../secret.txt", "/static/%2e%2e/secret.txt"] {
        assert_eq!(raw_status(&server.url, target), 404, "{target}");
    }
}

#[test]
fn a_static_dir_that_is_not_a_folder_is_refused_by_name() {
    let out = Command::new(BIN)
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--static-dir",
            "/no/such/dir",
        ])
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none")
        .env("RUST_LOG", "off")
        .output()
        .expect("run maelab");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.starts_with("error: --static-dir (MAELAB_STATIC_DIR) /no/such/dir is not a folder"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

/// Every file under `dir`, as paths relative to it.
fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("static dir").flatten() {
        let rel = format!("{prefix}{}", entry.file_name().to_string_lossy());
        if entry.path().is_dir() {
            walk(&entry.path(), &format!("{rel}/"), out);
        } else {
            out.push(rel);
        }
    }
}
