//! Shared by the e2e_* tests: the app served on a loopback port, Debian's
//! `chromedriver` on a free port, and a headless Chromium session on both
//! (a fresh profile each, removed on drop). Needs `mod pages_support;` beside
//! it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::pages_support::{Pages, spawn};

/// A served app, a chromedriver and a browser session on it.
pub struct Browser {
    pub pages: Pages,
    /// `http://127.0.0.1:PORT` of the served app.
    pub base: String,
    pub client: Client,
    _driver: Child,
    _profile: TempDir,
}

impl Drop for Browser {
    /// The whole group: chromedriver, Chromium and its helpers, before the
    /// profile folder goes.
    fn drop(&mut self) {
        if let Some(pid) = self._driver.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

struct TempDir(std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn find_binary(names: &[&str]) -> String {
    for name in names {
        for dir in ["/usr/bin", "/usr/local/bin", "/usr/lib/chromium"] {
            let path = format!("{dir}/{name}");
            if std::path::Path::new(&path).exists() {
                return path;
            }
        }
    }
    panic!(
        "none of {names:?} is installed: `apt-get install -y chromium chromium-driver` \
         (scripts/setup does it)"
    );
}

/// Serve a fresh app (with its LISTEN hub) and open a browser session on it.
pub async fn start() -> Browser {
    let pages = spawn().await;
    pages.state.live.spawn_listener(pages.db.pool.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let app = pages.app.clone();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let port = free_port();
    // Its own process group, which the browser it starts joins: killing
    // chromedriver alone left every test's Chromium running, orphaned.
    let driver = Command::new(find_binary(&["chromedriver"]))
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver starts");
    let profile = std::env::temp_dir().join(format!("maelab-chrome-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&profile).expect("profile dir");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": find_binary(&["chromium", "chromium-browser"]),
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", "--window-size=1400,1000",
                     // No crash handler: it would leave the process group.
                     "--disable-breakpad", "--disable-crash-reporter",
                     format!("--user-data-dir={}", profile.display())],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let url = format!("http://127.0.0.1:{port}");
    let mut last_err = None;
    for _ in 0..100 {
        match ClientBuilder::new(connector.clone())
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(client) => {
                return Browser {
                    pages,
                    base: format!("http://{addr}"),
                    client,
                    _driver: driver,
                    _profile: TempDir(profile),
                };
            }
            Err(e) => {
                last_err = Some(e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    panic!("no browser session: {last_err:?}");
}

impl Browser {
    pub async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .expect("navigate");
    }

    pub async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.expect("script")
    }

    /// Wait until `script` returns something truthy (the page's own state,
    /// read by the test: the page itself never polls).
    pub async fn until(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.js(script).await;
            if !(v.is_null() || v == json!(false) || v == json!(0)) {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A Chrome DevTools command sent through chromedriver (`goog/cdp/execute`).
#[derive(Debug)]
struct Cdp {
    cmd: &'static str,
    params: Value,
}

impl fantoccini::wd::WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (axum::http::Method, Option<String>) {
        let body = json!({"cmd": self.cmd, "params": self.params});
        (axum::http::Method::POST, Some(body.to_string()))
    }
}

impl Browser {
    /// From now on every page records its Content-Security-Policy violations
    /// in `window.maelabCspViolations`, from before its first script runs
    /// (a listener added after load would miss the page's own).
    pub async fn watch_csp(&self) {
        let source = "window.maelabCspViolations = [];
            document.addEventListener('securitypolicyviolation', function (e) {
              window.maelabCspViolations.push(e.effectiveDirective + ' blocked ' +
                (e.blockedURI || 'inline') + ' at ' + e.sourceFile + ':' + e.lineNumber);
            });";
        self.client
            .issue_cmd(Cdp {
                cmd: "Page.addScriptToEvaluateOnNewDocument",
                params: json!({ "source": source }),
            })
            .await
            .expect("the CSP watcher is installed");
    }

    /// The violations the open page reported (see [`Browser::watch_csp`]).
    pub async fn csp_violations(&self) -> Vec<String> {
        let v = self.js("return window.maelabCspViolations || null").await;
        let list = v
            .as_array()
            .unwrap_or_else(|| panic!("no CSP watcher on this page ({v}): call watch_csp first"));
        list.iter()
            .map(|x| x.as_str().unwrap_or("?").to_string())
            .collect()
    }
}
