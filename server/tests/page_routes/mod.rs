//! Every route of the pages (and the sign-in and sign-out posts), for the
//! tests that must walk all of them (`security_headers`, `pages_hostile`),
//! and a [`Fixture`] whose ids fill the routes' parameters.
//! [`assert_complete`] reads the routers' own sources, so a route added
//! there and not here fails those tests instead of going unchecked. Needs
//! `mod api_support; mod pages_support; mod study_support;` beside it.
#![allow(dead_code)]

use std::collections::BTreeSet;

use uuid::Uuid;

use crate::pages_support::{PNG_1X1, Pages};

/// (method, path in axum syntax) of every page route.
pub const PAGE_ROUTES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/runs"),
    ("GET", "/runs/events"),
    ("GET", "/runs/new"),
    ("POST", "/runs/new"),
    ("GET", "/runs/{id}"),
    ("GET", "/runs/{id}/events"),
    ("GET", "/runs/{id}/artifacts/{artifact_id}"),
    ("GET", "/runs/{id}/log.txt"),
    ("GET", "/runs/{id}/system.json"),
    ("POST", "/runs/{id}/cancel"),
    ("POST", "/runs/{id}/retry"),
    ("GET", "/compare"),
    ("GET", "/queue"),
    ("GET", "/queue/events"),
    ("GET", "/studies"),
    ("GET", "/studies/new"),
    ("POST", "/studies/new"),
    ("POST", "/studies/new/preview"),
    ("GET", "/studies/{id}"),
    ("POST", "/studies/{id}/cancel"),
    ("POST", "/studies/{id}/retry"),
    ("GET", "/signin"),
    ("POST", "/signin"),
    ("POST", "/signout"),
];

/// The sources that declare page routes.
fn router_sources() -> Vec<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files: Vec<_> = std::fs::read_dir(root.join("http/pages"))
        .expect("server/src/http/pages")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    files.push(root.join("auth/session.rs"));
    files
}

/// The HTTP methods a `.route("…", get(…).post(…))` line names.
fn methods_of(handlers: &str) -> Vec<String> {
    let mut found = Vec::new();
    for m in ["get", "post", "put", "patch", "delete"] {
        let call = format!("{m}(");
        let named = handlers.match_indices(&call).any(|(i, _)| {
            handlers[..i]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
        });
        if named {
            found.push(m.to_uppercase());
        }
    }
    found
}

/// (method, path) of every route the page and session routers declare.
pub fn routes_in_source() -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    for file in router_sources() {
        let text = std::fs::read_to_string(&file).expect("router source");
        let code = text.lines().filter(|l| !l.trim_start().starts_with("//"));
        for line in code.filter(|l| l.contains(".route(\"")) {
            let rest = &line[line.find(".route(\"").expect("route call") + 8..];
            let end = rest.find('"').expect("closing quote");
            let (path, handlers) = (&rest[..end], &rest[end..]);
            let methods = methods_of(handlers);
            assert!(
                !methods.is_empty(),
                "{}: cannot read the methods of `{}` (keep a route on one line)",
                file.display(),
                line.trim()
            );
            for m in methods {
                routes.insert((m, path.to_string()));
            }
        }
    }
    routes
}

/// Fail when a router declares a route [`PAGE_ROUTES`] lacks, or the other way.
pub fn assert_complete() {
    let table: BTreeSet<(String, String)> = PAGE_ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_string(), (*p).to_string()))
        .collect();
    let declared = routes_in_source();
    let missing: Vec<_> = declared.difference(&table).collect();
    let stale: Vec<_> = table.difference(&declared).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "PAGE_ROUTES is out of date: add {missing:?}, remove {stale:?}"
    );
}

/// A queued run with a reconstruction, a checkpoint and a stored "log" that
/// is HTML, a second queued run, and a study of two arms.
pub struct Fixture {
    pub run: Uuid,
    /// Another queued run (one a test may cancel).
    pub victim: Uuid,
    pub study: Uuid,
    /// The reconstruction's artifact id.
    pub png: i64,
    /// The HTML file's artifact id.
    pub html: i64,
}

pub async fn fixture(p: &Pages) -> Fixture {
    let run = p.create("fixture", "mae", &[]).await;
    let victim = p.create("victim", "mae", &[]).await;
    p.epoch(run, 0, 0.5, None).await;
    let png = p
        .artifact(
            run,
            "reconstruction",
            Some(0),
            "recon_e0000.png",
            "image/png",
            PNG_1X1,
        )
        .await;
    p.artifact(
        run,
        "checkpoint",
        Some(0),
        "checkpoint-0.pth",
        "application/octet-stream",
        b"w",
    )
    .await;
    let html = p
        .artifact(
            run,
            "log",
            None,
            "evil.html",
            "text/html",
            b"<script>alert(1)</script>",
        )
        .await;
    let study = crate::study_support::submit(&p.db.pool, crate::study_support::TWO_ARMS).await;
    Fixture {
        run,
        victim,
        study,
        png,
        html,
    }
}

impl Fixture {
    /// `path` (a page or API route) with its parameters filled: `{id}` is the
    /// study under `/studies/`, else the run; an artifact is the image.
    pub fn fill(&self, path: &str) -> String {
        let id = if path.starts_with("/studies/") {
            self.study
        } else {
            self.run
        };
        path.replace("{id}", &id.to_string())
            .replace("{run_id}", &self.run.to_string())
            .replace("{study_id}", &self.study.to_string())
            .replace("{artifact_id}", &self.png.to_string())
            .replace("{name}", "recon_e0000.png")
    }

    /// `path` with `param` set to `value` and the other parameters filled.
    pub fn fill_with(&self, path: &str, param: &str, value: &str) -> String {
        self.fill(&path.replace(param, value))
    }
}
