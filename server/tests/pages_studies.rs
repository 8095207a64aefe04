//! The study pages through `oneshot`: the list, the new-study form (preview
//! writes nothing, a bad document names its field and stores nothing, submit
//! creates and redirects), the study page of chains finished through the
//! queue, and the cancel/retry buttons.

mod api_support;
mod pages_support;
mod study_support;

use axum::http::StatusCode;
use pages_support::{Pages, spawn};
use study_support::{TWO_ARMS, clear_gap, run_all, submit, worker};
use uuid::Uuid;

async fn nothing_stored(p: &Pages) {
    for table in ["study", "study_chain", "run", "job"] {
        assert_eq!(p.count(table).await, 0, "{table} has rows");
    }
}

fn count(html: &str, needle: &str) -> usize {
    html.matches(needle).count()
}

#[tokio::test]
async fn the_list_shows_each_study_with_its_progress() {
    let p = spawn().await;
    let a = p.get("/studies").await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.text().contains("No studies yet"));
    assert!(
        a.text().contains(r#"<a href="/studies">Studies</a>"#),
        "nav link"
    );

    let doc = TWO_ARMS.replace("pages study", "<i>listed</i>");
    let id = submit(&p.db.pool, &doc).await;
    let html = p.get("/studies").await.text();
    assert!(html.contains(&format!(r#"href="/studies/{id}""#)), "{html}");
    assert!(html.contains("&lt;i&gt;listed&lt;/i&gt;") || html.contains("&#60;i&#62;listed"));
    assert!(!html.contains("<i>listed</i>"), "the name is text");
    assert!(html.contains(r#"data-col="done">0/6<"#), "{html}");
    assert!(html.contains(r#"data-col="active">6<"#));
    assert!(html.contains(">running<"));
}

#[tokio::test]
async fn the_form_starts_from_an_example_or_the_docs_study() {
    let p = spawn().await;
    let html = p.get("/studies/new").await.text();
    assert!(html.contains(r#"<textarea id="document" name="document""#));
    assert!(html.contains("[arms.wave-both]"));
    let html = p.get("/studies/new?from=docs").await.text();
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/studies/wave-mae.toml"
    ))
    .expect("docs/studies/wave-mae.toml");
    let arms: Vec<&str> = docs.lines().filter(|l| l.starts_with("[arms.")).collect();
    assert!(!arms.is_empty());
    for arm in arms {
        assert!(html.contains(arm), "{arm} of docs/studies/wave-mae.toml");
    }
}

#[tokio::test]
async fn preview_lists_every_run_and_writes_nothing() {
    let p = spawn().await;
    let a = p
        .post_form("/studies/new/preview", &[("document", TWO_ARMS)])
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let html = a.text();
    assert!(html.contains(r#"id="preview-runs""#));
    // 2 arms x 3 seeds, a pretrain and a finetune each.
    assert_eq!(count(&html, "<tr data-arm="), 12, "{html}");
    assert_eq!(count(&html, r#"data-stage="pretrain""#), 6);
    assert_eq!(count(&html, r#"data-stage="finetune""#), 6);
    assert!(html.contains(r#"<tr data-arm="wave" data-seed="2" data-stage="finetune">"#));
    assert!(html.contains("<td>at submit</td>"));
    assert!(html.contains("<td>when its pretrain succeeds</td>"));
    assert!(html.contains("12 runs in 6 chains"), "{html}");
    // The document stays in the form, for Submit.
    assert!(html.contains("[arms.wave]"));
    nothing_stored(&p).await;

    // A seconds budget: epochs come from calibration.
    let seconds = TWO_ARMS.replace("epochs = 2", "pretrain_seconds = 60\nfinetune_seconds = 60");
    let html = p
        .post_form("/studies/new/preview", &[("document", &seconds)])
        .await
        .text();
    assert_eq!(count(&html, "<td>calibrated</td>"), 12, "{html}");
    assert!(html.contains("2 calibration jobs"));
    // Preview needs no sign-in: it writes nothing.
    let a = p
        .post_raw(
            "/studies/new/preview",
            &[("document", TWO_ARMS)],
            None,
            "same-origin",
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    nothing_stored(&p).await;
}

#[tokio::test]
async fn a_bad_document_names_each_field_and_stores_nothing() {
    let p = spawn().await;
    let bad = TWO_ARMS.replace("wave_in = \"both\"", "wave_in = \"everywhere\"");
    for uri in ["/studies/new", "/studies/new/preview"] {
        let a = p.post_form(uri, &[("document", &bad)]).await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{uri}");
        let html = a.text();
        assert!(html.contains("Nothing was queued"), "{uri}");
        assert!(
            html.contains(r#"<li data-field="arms.wave.wave_in">"#),
            "{uri}: {html}"
        );
        assert!(!html.contains(r#"id="preview-runs""#), "{uri}");
        // What was typed comes back.
        assert!(
            html.contains("wave_in = &#34;everywhere&#34;")
                || html.contains("wave_in = &quot;everywhere&quot;"),
            "{html}"
        );
    }
    // Every problem at once, each with its field.
    let two = TWO_ARMS
        .replace("seeds = 3", "seeds = 0")
        .replace("baseline = \"mae\"", "baseline = \"nope\"");
    let html = p
        .post_form("/studies/new", &[("document", &two)])
        .await
        .text();
    assert!(html.contains(r#"<li data-field="seeds">"#), "{html}");
    assert!(html.contains(r#"<li data-field="baseline">"#), "{html}");
    assert!(html.contains("2 problems"));
    // Not TOML at all.
    let a = p
        .post_form("/studies/new", &[("document", "name = \"x\"\n[arms")])
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        a.text().contains(r#"data-field="document""#),
        "{}",
        a.text()
    );
    nothing_stored(&p).await;
}

#[tokio::test]
async fn submit_creates_the_study_and_opens_its_page() {
    let p = spawn().await;
    let a = p.post_form("/studies/new", &[("document", TWO_ARMS)]).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.text());
    let location = a.header("location");
    let id: Uuid = location
        .strip_prefix("/studies/")
        .and_then(|s| s.parse().ok())
        .expect("the study page");
    let (name, by): (String, Option<String>) =
        sqlx::query_as("select name, created_by from study where study_id = $1")
            .bind(id)
            .fetch_one(&p.db.pool)
            .await
            .expect("study row");
    assert_eq!(name, "pages study");
    assert_eq!(by.as_deref(), Some("pages-test"), "the signed-in token");
    assert_eq!(p.count("study_chain").await, 6);
    assert_eq!(p.count("run").await, 6, "the pretrains, at once");
    assert_eq!(p.count("job").await, 6);

    let html = p.get(&location).await.text();
    assert!(html.contains(r#"<span class="study-name">pages study</span>"#));
    assert_eq!(count(&html, "<tr data-arm=\""), 6, "one row per chain");
    assert!(html.contains(r#"id="chains-succeeded">0<"#));
    assert!(html.contains("No chain has finished yet."));
    assert!(html.contains("equal epochs: 2 epochs of pretraining + 2 epochs of finetuning"));
    assert!(
        !html.contains(r#"id="cancel-study-form" hidden"#),
        "cancel offered while it runs"
    );
    assert!(html.contains(r#"id="retry-study-form" hidden"#));

    // Not signed in: the sign-in form, nothing more stored.
    let a = p
        .post_raw(
            "/studies/new",
            &[("document", TWO_ARMS)],
            None,
            "same-origin",
        )
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(p.count("study").await, 1);
}

#[tokio::test]
async fn the_study_page_shows_results_verdicts_curves_and_reconstructions() {
    let p = spawn().await;
    let id = submit(&p.db.pool, TWO_ARMS).await;
    let w = worker(&p.db.pool).await;
    let held = run_all(&p.db.pool, w, clear_gap, |_| false).await;
    assert!(held.is_empty());
    let a = p.get(&format!("/studies/{id}")).await;
    assert_eq!(a.status, StatusCode::OK);
    let html = a.text();
    assert!(
        html.contains(r#"status-succeeded">succeeded</span></h1>"#)
            || html.contains(r#"id="study-status" class="status status-succeeded""#),
        "{html}"
    );
    assert!(html.contains(r#"id="chains-succeeded">6<"#));

    // The results table: per metric a group, per arm n, mean, CI, seeds, diff.
    assert!(html.contains(r#"<table id="results""#));
    let top1 = html
        .split(r#"<tbody data-metric="test_acc1">"#)
        .nth(1)
        .and_then(|s| s.split("</tbody>").next())
        .expect("the best top-1 group");
    assert!(top1.contains("best top-1 (%)"));
    assert!(
        top1.contains(r#"<td class="num mean">51.00</td>"#),
        "{top1}"
    );
    assert!(
        top1.contains(r#"<td class="num mean">56.00</td>"#),
        "{top1}"
    );
    assert!(
        top1.contains("s0\u{a0}50.00 · s1\u{a0}51.00 · s2\u{a0}52.00"),
        "{top1}"
    );
    assert!(
        top1.contains("s0\u{a0}55.00 · s1\u{a0}56.00 · s2\u{a0}57.00"),
        "{top1}"
    );
    assert!(top1.contains("+5.00 ["), "the difference: {top1}");
    assert!(top1.contains("excludes-zero"), "{top1}");
    for metric in [
        "final_test_acc1",
        "psnr",
        "hf_ratio",
        "pretrain_images_per_second",
        "wall_seconds",
    ] {
        assert!(
            html.contains(&format!(r#"<tbody data-metric="{metric}">"#)),
            "{metric}"
        );
    }
    // The verdict, in words.
    assert!(
        html.contains(
            r#"<li data-arm="wave" class="verdict">wave vs mae on best top-1 (%): +5.00"#
        ),
        "{html}"
    );
    assert!(html.contains("wave is better than mae"), "{html}");
    assert!(html.contains(r#"id="rough-note""#), "n = 3 is rough");

    // Chains link their runs; nothing to retry.
    let runs: Vec<Uuid> = sqlx::query_scalar("select run_id from run where study_id = $1")
        .bind(id)
        .fetch_all(&p.db.pool)
        .await
        .expect("runs");
    assert_eq!(runs.len(), 12);
    for run in &runs {
        assert!(
            html.contains(&format!(r#"<a href="/runs/{run}">"#)),
            "{run}"
        );
    }
    assert_eq!(count(&html, r#"class="retry-chain" hidden"#), 6);
    assert!(html.contains(r#"id="cancel-study-form" hidden"#));

    // Curves (the data the script draws) and one reconstruction per arm at epoch 1.
    assert!(html.contains("pretrain-train_loss"));
    assert!(html.contains("finetune-test_acc1"));
    assert!(html.contains("pretrain-psnr"));
    assert!(html.contains("epoch 1, one seed per arm"));
    assert_eq!(count(&html, r#"<figure data-arm="#), 2);
    assert!(html.contains("seed 0"));
    // Exports.
    assert!(html.contains(&format!(
        "/api/v1/studies/{id}/export?format=csv&amp;rows=seeds"
    )));
    assert!(html.contains(&format!(
        "/api/v1/studies/{id}/export?format=csv&amp;rows=aggregate"
    )));
}

#[tokio::test]
async fn a_failed_chain_is_counted_honestly_and_can_be_retried() {
    let p = spawn().await;
    let id = submit(&p.db.pool, TWO_ARMS).await;
    let w = worker(&p.db.pool).await;
    let held = run_all(&p.db.pool, w, clear_gap, |c| {
        c.arm == "wave" && c.seed == 1 && c.kind == "pretrain"
    })
    .await;
    assert_eq!(held.len(), 1);
    maelab_core::db::queue::fail(&p.db.pool, &held[0].lease, "diverged")
        .await
        .expect("fail");
    let html = p.get(&format!("/studies/{id}")).await.text();
    assert!(html.contains(r#"id="chains-failed">1<"#));
    let top1 = html
        .split(r#"<tbody data-metric="test_acc1">"#)
        .nth(1)
        .and_then(|s| s.split("</tbody>").next())
        .expect("top-1 group");
    assert!(
        top1.contains("s0\u{a0}55.00 · s2\u{a0}57.00"),
        "only succeeded chains: {top1}"
    );
    assert!(
        html.contains("(n = 2 vs 3)") || html.contains("n = 2 vs 3"),
        "{html}"
    );
    // The failed chain offers its own retry, and the study one too.
    assert_eq!(count(&html, r#"class="retry-chain" hidden"#), 5);
    assert!(!html.contains(r#"id="retry-study-form" hidden"#));

    let a = p
        .post_form(
            &format!("/studies/{id}/retry"),
            &[("arm", "wave"), ("seed", "1")],
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.text());
    assert_eq!(a.header("location"), format!("/studies/{id}"));
    let status: String = sqlx::query_scalar("select status::text from run where run_id = $1")
        .bind(held[0].run_id)
        .fetch_one(&p.db.pool)
        .await
        .expect("run");
    assert_eq!(
        status, "queued",
        "the chain's pretrain is back on the queue"
    );
    // Retrying it again: nothing failed is left, a 409 page.
    let a = p
        .post_form(
            &format!("/studies/{id}/retry"),
            &[("arm", "wave"), ("seed", "1")],
        )
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    assert!(a.header("content-type").starts_with("text/html"));
}

#[tokio::test]
async fn cancel_and_retry_the_whole_study() {
    let p = spawn().await;
    let id = submit(&p.db.pool, TWO_ARMS).await;
    // Refused without the CSRF value: nothing cancelled.
    let a = p
        .post_raw(
            &format!("/studies/{id}/cancel"),
            &[],
            Some(&p.cookie),
            "same-origin",
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(p.count("study where cancelled_at is not null").await, 0);

    let a = p.post_form(&format!("/studies/{id}/cancel"), &[]).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.text());
    assert_eq!(p.count("run where status = 'cancelled'").await, 6);
    let html = p.get(&format!("/studies/{id}")).await.text();
    assert!(
        html.contains(r#"id="study-status" class="status status-cancelled""#),
        "{html}"
    );
    assert!(html.contains(r#"id="cancel-study-form" hidden"#));
    assert!(!html.contains(r#"id="retry-study-form" hidden"#));
    assert_eq!(count(&html, r#"class="retry-chain" hidden"#), 0);

    let a = p.post_form(&format!("/studies/{id}/retry"), &[]).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.text());
    assert_eq!(p.count("run where status = 'queued'").await, 6);
    assert_eq!(p.count("study where cancelled_at is null").await, 1);
    let html = p.get(&format!("/studies/{id}")).await.text();
    assert!(!html.contains(r#"id="cancel-study-form" hidden"#));
}

#[tokio::test]
async fn unknown_studies_are_404_pages() {
    let p = spawn().await;
    let missing = Uuid::new_v4();
    for uri in [format!("/studies/{missing}"), "/studies/nope".to_string()] {
        let a = p.get(&uri).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{uri}");
        assert!(a.text().contains("does not exist"), "{uri}");
    }
    for action in ["cancel", "retry"] {
        let a = p
            .post_form(&format!("/studies/{missing}/{action}"), &[])
            .await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{action}");
    }
}

#[tokio::test]
async fn a_seconds_budget_shows_its_calibration() {
    use maelab_core::config::RunKind;
    use maelab_core::db::studies::{self, CalibrationDevice, Measured};
    let p = spawn().await;
    let doc = TWO_ARMS.replace("epochs = 2", "pretrain_seconds = 60\nfinetune_seconds = 30");
    let id = submit(&p.db.pool, &doc).await;
    let html = p.get(&format!("/studies/{id}")).await.text();
    assert!(
        html.contains(r#"class="status status-calibrating""#),
        "{html}"
    );
    assert!(html.contains(r#"id="calibration-pending""#));
    assert!(html.contains("equal wall clock: 1m 00s of pretraining + 30s of finetuning"));

    let w = worker(&p.db.pool).await;
    let job = maelab_core::db::queue::claim_next(&p.db.pool, w, std::time::Duration::from_secs(60))
        .await
        .expect("claim")
        .expect("the calibration job");
    let target = studies::calibration_target(&p.db.pool, &job.payload)
        .await
        .expect("target");
    let measured: Vec<Measured> = target
        .arms
        .iter()
        .zip([500.0, 250.0])
        .flat_map(|(a, ips)| {
            [RunKind::Pretrain, RunKind::Finetune].map(|stage| Measured {
                arm: a.arm.name.clone(),
                stage,
                images_per_second: ips,
                train_images: 1000,
            })
        })
        .collect();
    let device = CalibrationDevice {
        device: "cuda:0".into(),
        gpu_name: Some("Test GPU".into()),
    };
    studies::finish_calibration(&p.db.pool, &job.lease, &target, &device, &measured)
        .await
        .expect("calibrated");
    let html = p.get(&format!("/studies/{id}")).await.text();
    assert!(
        html.contains("on <strong>cuda:0 (Test GPU)</strong>"),
        "{html}"
    );
    let table = html
        .split(r#"<table id="calibration">"#)
        .nth(1)
        .and_then(|s| s.split("</table>").next())
        .expect("the calibration table");
    assert_eq!(count(table, "<tr><td>"), 4, "2 arms x 2 stages: {table}");
    // 60 s x 500 images/s = 30 000 images = 30 epochs of 1000 images.
    assert!(
        table.contains(
            "<td>pretrain</td><td class=\"num\">500.0</td><td class=\"num\">60</td><td class=\"num\">30\u{202f}000</td><td class=\"num\">30</td><td class=\"num\">30\u{202f}000</td>"
        ),
        "{table}"
    );
    assert_eq!(p.count("run").await, 6, "the pretrains, once calibrated");
}
