//! The pages through `oneshot`: escaping, 404 pages, the form keeping what was
//! typed, list filters and pages, artifacts, cancel, queue and compare.

mod pages_support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use pages_support::{PNG_1X1, spawn};

/// `html` holds `text` with its `<` and `>` written as character references
/// (named or numeric), i.e. shown as text.
fn escaped(html: &str, text: &str) -> bool {
    [("&lt;", "&gt;"), ("&#60;", "&#62;"), ("&#x3c;", "&#x3e;")]
        .iter()
        .any(|(lt, gt)| html.contains(&text.replace('<', lt).replace('>', gt)))
}

#[tokio::test]
async fn run_names_are_shown_as_text_not_markup() {
    let p = spawn().await;
    let evil = "<script>alert(1)</script>";
    let id = p.create(evil, "mae", &["<b>tag</b>"]).await;
    for uri in [
        "/runs".to_string(),
        format!("/runs/{id}"),
        format!("/compare?run={id}"),
    ] {
        let a = p.get(&uri).await;
        assert_eq!(a.status, StatusCode::OK, "{uri}: {}", a.text());
        let html = a.text();
        assert!(!html.contains(evil), "{uri} has the raw script");
        assert!(!html.contains("<b>tag</b>"), "{uri} has the raw tag");
        assert!(escaped(&html, evil), "{uri} lacks the escaped name");
    }
}

#[tokio::test]
async fn unknown_runs_are_404_pages() {
    let p = spawn().await;
    let missing = uuid::Uuid::new_v4();
    for uri in [
        format!("/runs/{missing}"),
        "/runs/not-a-uuid".to_string(),
        format!("/runs/{missing}/events"),
        format!("/runs/{missing}/artifacts/1"),
        format!("/runs/{missing}/log.txt"),
        format!("/runs/new?clone={missing}"),
        format!("/compare?run={missing}"),
    ] {
        let a = p.get(&uri).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{uri}");
        assert!(a.header("content-type").starts_with("text/html"), "{uri}");
        assert!(a.text().contains("does not exist"), "{uri}");
    }
    let a = p.post_form(&format!("/runs/{missing}/cancel"), &[]).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn form_errors_keep_what_was_typed_and_write_nothing() {
    let p = spawn().await;
    let a = p
        .post_form(
            "/runs/new",
            &[
                ("name", "kept <name>"),
                ("kind", "pretrain"),
                ("model", "mae"),
                ("preset", "vit-micro/4"),
                ("epochs", "twelve"),
                ("mask_ratio", "1.5"),
                ("blr", "0.0002"),
            ],
        )
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    let html = a.text();
    assert!(html.contains(r#"value="twelve""#), "typed epochs lost");
    assert!(html.contains(r#"value="1.5""#), "typed mask ratio lost");
    assert!(html.contains(r#"value="0.0002""#), "valid field lost");
    assert!(
        escaped(&html, r#"value="kept <name>""#),
        "name lost or unescaped"
    );
    assert!(
        html.contains(r#"id="err-epochs""#),
        "no error beside epochs"
    );
    assert!(
        html.contains(r#"id="err-mask_ratio""#),
        "no error beside mask_ratio"
    );
    assert!(!html.contains(r#"id="err-blr""#), "blr was fine");
    assert_eq!(p.count("run").await, 0);
    assert_eq!(p.count("job").await, 0);
}

#[tokio::test]
async fn a_valid_form_queues_the_run_and_opens_its_page() {
    let p = spawn().await;
    let a = p
        .post_form(
            "/runs/new",
            &[
                ("name", "from the form"),
                ("kind", "pretrain"),
                ("model", "wave_mae"),
                ("preset", "vit-micro/4"),
                ("epochs", "3"),
                ("warmup_epochs", "1"),
                ("tags", "study, wave"),
                ("norm_pix_loss", "false"),
            ],
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.text());
    let location = a.header("location");
    let id = location.strip_prefix("/runs/").expect("run page");
    let (name, epochs, model, tags, config): (String, i32, String, Vec<String>, serde_json::Value) =
        sqlx::query_as(
            "select name, epochs_total, model, tags, config from run where run_id = $1::uuid",
        )
        .bind(id)
        .fetch_one(&p.db.pool)
        .await
        .expect("run row");
    assert_eq!(
        (name.as_str(), epochs, model.as_str()),
        ("from the form", 3, "wave_mae")
    );
    assert_eq!(tags, ["study", "wave"]);
    let by: Option<String> = sqlx::query_scalar("select created_by from run")
        .fetch_one(&p.db.pool)
        .await
        .expect("created_by");
    assert_eq!(
        by.as_deref(),
        Some("pages-test"),
        "the signed-in token's name"
    );
    assert_eq!(config["norm_pix_loss"], false);
    assert_eq!(p.count("job").await, 1);
}

#[tokio::test]
async fn defaults_follow_preset_and_kind_and_clone_copies_a_run() {
    let p = spawn().await;
    let html = p
        .get("/runs/new?kind=finetune&preset=vit-tiny/2")
        .await
        .text();
    assert!(
        html.contains(r#"name="embed_dim" value="192""#),
        "preset dim"
    );
    assert!(
        html.contains(r#"name="patch_size" value="2""#),
        "preset patch"
    );
    assert!(
        html.contains(r#"name="blr" value="0.001""#),
        "finetune recipe blr"
    );
    let micro = p
        .get("/runs/new?kind=pretrain&preset=vit-micro/4")
        .await
        .text();
    assert!(micro.contains(r#"name="embed_dim" value="128""#));
    assert!(micro.contains(r#"name="blr" value="0.00015""#));

    let id = p.create("original", "mae", &["x"]).await;
    let html = p.get(&format!("/runs/new?clone={id}")).await.text();
    assert!(html.contains(r#"name="name" value="original""#));
    assert!(html.contains(r#"name="epochs" value="4""#));
    assert!(html.contains(r#"name="tags" value="x""#));
}

#[tokio::test]
async fn the_list_filters_sorts_searches_and_pages() {
    let p = spawn().await;
    for i in 0..53 {
        let model = if i % 2 == 0 { "mae" } else { "wave_mae" };
        p.create(
            &format!("run-{i:02}"),
            model,
            if i == 7 { &["special"] } else { &[] },
        )
        .await;
    }
    let rows = |html: &str| html.matches("<tr data-run-id=").count();
    let first = p.get("/runs").await.text();
    assert_eq!(rows(&first), 50);
    assert!(first.contains("page 1 of 2"));
    assert!(first.contains(r#"rel="next""#));
    let second = p.get("/runs?page=2").await.text();
    assert_eq!(rows(&second), 3);
    assert_eq!(rows(&p.get("/runs?model=wave_mae").await.text()), 26);
    let tagged = p.get("/runs?tag=special").await.text();
    assert_eq!(rows(&tagged), 1);
    assert!(tagged.contains("run-07"));
    let searched = p.get("/runs?q=run-1").await.text();
    assert_eq!(rows(&searched), 10, "run-10..run-19");
    // A search for a LIKE wildcard matches only itself.
    assert_eq!(rows(&p.get("/runs?q=%25").await.text()), 0);
    let by_name = p.get("/runs?sort=name&dir=asc").await.text();
    let a = by_name.find(">run-00<").expect("run-00");
    let b = by_name.find(">run-01<").expect("run-01");
    assert!(a < b, "ascending by name");
    let desc = p.get("/runs?sort=name&dir=desc").await.text();
    assert!(desc.find(">run-52<").expect("run-52") < desc.find(">run-51<").expect("run-51"));
    // Unknown sort columns fall back to newest first instead of reaching SQL.
    assert_eq!(
        p.get("/runs?sort=name;drop%20table%20run").await.status,
        StatusCode::OK
    );
    assert_eq!(p.count("run").await, 53);
}

#[tokio::test]
async fn list_shows_epoch_progress_best_top1_and_last_loss() {
    let p = spawn().await;
    let id = p.create("progress", "mae", &[]).await;
    p.set_running(id).await;
    p.epoch(id, 0, 0.9, Some(40.0)).await;
    p.epoch(id, 1, 0.7, Some(55.5)).await;
    p.epoch(id, 2, 0.6123, Some(51.0)).await;
    let html = p.get("/runs").await.text();
    assert!(
        html.contains(r#"<span data-col="epochs">3</span>/4"#),
        "{html}"
    );
    assert!(html.contains(">55.50<"), "best top-1");
    assert!(html.contains(">0.6123<"), "last loss");
}

#[tokio::test]
async fn reconstructions_and_logs_are_served_from_the_artifact_table() {
    let p = spawn().await;
    let id = p.create("art", "mae", &[]).await;
    let png = p
        .artifact(
            id,
            "reconstruction",
            Some(0),
            "recon_e0000.png",
            "image/png",
            PNG_1X1,
        )
        .await;
    let ckpt = p
        .artifact(
            id,
            "checkpoint",
            Some(0),
            "ckpt.ot",
            "application/octet-stream",
            b"w",
        )
        .await;
    p.artifact(
        id,
        "log",
        None,
        "log.txt",
        "text/plain",
        b"{\"epoch\": 0}\n",
    )
    .await;
    let a = p.get(&format!("/runs/{id}/artifacts/{png}")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("content-type"), "image/png");
    assert_eq!(&a.body[..], PNG_1X1);
    let etag = a.header("etag");
    let again = p
        .send(
            Request::get(format!("/runs/{id}/artifacts/{png}"))
                .header("if-none-match", &etag)
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    // Checkpoints are not page material; another run's id does not reach it either.
    assert_eq!(
        p.get(&format!("/runs/{id}/artifacts/{ckpt}")).await.status,
        StatusCode::NOT_FOUND
    );
    let other = p.create("other", "mae", &[]).await;
    assert_eq!(
        p.get(&format!("/runs/{other}/artifacts/{png}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let log = p.get(&format!("/runs/{id}/log.txt")).await;
    assert_eq!(log.status, StatusCode::OK);
    assert!(log.header("content-disposition").contains("log.txt"));
    assert_eq!(log.text(), "{\"epoch\": 0}\n");
    let page = p.get(&format!("/runs/{id}")).await.text();
    assert!(page.contains(&format!("/runs/{id}/log.txt")));
}

#[tokio::test]
async fn cancel_and_retry_from_the_run_page() {
    let p = spawn().await;
    let id = p.create("to cancel", "mae", &[]).await;
    let page = p.get(&format!("/runs/{id}")).await.text();
    assert!(page.contains(&format!("action=\"/runs/{id}/cancel\"")));
    // The page itself was rendered for a signed-out browser: no CSRF value in it.
    assert!(page.contains(r#"name="csrf_token" value="""#));
    // Refused, and nothing changes: a cross-site post, a post without the
    // CSRF value, and a post from a browser that has not signed in.
    let uri = format!("/runs/{id}/cancel");
    let cross = p
        .post_raw(
            &uri,
            &[("csrf_token", &p.csrf)],
            Some(&p.cookie),
            "cross-site",
        )
        .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);
    let no_csrf = p.post_raw(&uri, &[], Some(&p.cookie), "same-origin").await;
    assert_eq!(no_csrf.status, StatusCode::FORBIDDEN);
    let anonymous = p.post_raw(&uri, &[], None, "same-origin").await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert!(
        anonymous.text().contains(r#"action="/signin""#),
        "the sign-in form"
    );
    let status = |p: &pages_support::Pages| {
        let pool = p.db.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("select status::text from run where run_id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .expect("status")
        }
    };
    assert_eq!(status(&p).await, "queued");
    let a = p.post_form(&format!("/runs/{id}/cancel"), &[]).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(status(&p).await, "cancelled");
    let again = p.post_form(&format!("/runs/{id}/cancel"), &[]).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(again.header("content-type").starts_with("text/html"));
    let a = p.post_form(&format!("/runs/{id}/retry"), &[]).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(status(&p).await, "queued");
}

#[tokio::test]
async fn queue_page_says_where_each_job_stands() {
    let p = spawn().await;
    let first = p.create("first-queued", "mae", &[]).await;
    p.create("second-queued", "mae", &[]).await;
    let html = p.get("/queue").await.text();
    let a = html.find("first-queued").expect("first");
    let b = html.find("second-queued").expect("second");
    assert!(a < b, "claim order");
    assert!(html.contains("no worker is online"));
    sqlx::query(
        "insert into worker (worker_id, name, host, device, gpu_name, torch_version)
         values (gen_random_uuid(), 'gpu-box-0', 'hostA', 'cuda:0', 'NVIDIA H100', '2.5.1')",
    )
    .execute(&p.db.pool)
    .await
    .expect("worker");
    let html = p.get("/queue").await.text();
    assert!(html.contains("gpu-box-0") && html.contains("NVIDIA H100") && html.contains("hostA"));
    assert!(html.contains("next for an idle worker"));
    assert!(html.contains("1 job(s) ahead"), "{html}");
    let _ = first;
}

#[tokio::test]
async fn queue_page_shows_running_jobs_and_recently_stopped_workers() {
    let p = spawn().await;
    let first = p.create("running-one", "mae", &[]).await;
    p.create("waiting-one", "mae", &[]).await;
    sqlx::query(
        "insert into worker (worker_id, name, host, device, torch_version, last_seen_at, stopped_at)
         values (gen_random_uuid(), 'busy-box', 'hostB', 'cpu', '2.5.1', now(), null),
                (gen_random_uuid(), 'stopped-lately', 'hostC', 'cpu', '2.5.1',
                 now() - interval '1 hour', now() - interval '1 hour'),
                (gen_random_uuid(), 'stopped-long-ago', 'hostD', 'cpu', '2.5.1',
                 now() - interval '2 days', now() - interval '2 days')",
    )
    .execute(&p.db.pool)
    .await
    .expect("workers");
    sqlx::query(
        "update job set state = 'running', started_at = now(), heartbeat_at = now(),
                lease_expires_at = now() + interval '5 minutes', cancel_requested = true,
                worker_id = (select worker_id from worker where name = 'busy-box')
         where run_id = $1",
    )
    .bind(first)
    .execute(&p.db.pool)
    .await
    .expect("running");
    let html = p.get("/queue").await.text();
    let running = &html[html.find(r#"id="running""#).expect("running table")..];
    let running = &running[..running.find("</table>").unwrap()];
    assert!(running.contains("running-one") && running.contains("<em>cancelling</em>"));
    assert!(
        running.contains(">busy-box<") && running.contains(">hostB<"),
        "{running}"
    );
    assert!(running.contains("s</td></tr>"), "lease left: {running}");
    assert!(
        html.contains("0 job(s) ahead; all 1 online workers are busy"),
        "{html}"
    );
    assert!(html.contains("stopped-lately") && html.contains("(stopped)"));
    assert!(
        !html.contains("stopped-long-ago"),
        "stopped a day ago or more: not shown"
    );
}

#[tokio::test]
async fn compare_shows_the_study_table_and_reconstructions_side_by_side() {
    let p = spawn().await;
    let a = p.create("mae-run", "mae", &[]).await;
    let b = p.create("wave-run", "wave_mae", &[]).await;
    for (id, acc) in [(a, 61.0), (b, 64.5)] {
        p.epoch(id, 0, 0.8, Some(acc - 10.0)).await;
        p.epoch(id, 1, 0.7, Some(acc)).await;
        p.artifact(
            id,
            "reconstruction",
            Some(1),
            "recon_e0001.png",
            "image/png",
            PNG_1X1,
        )
        .await;
    }
    sqlx::query("update run set n_parameters = 2866992 where run_id = $1")
        .bind(b)
        .execute(&p.db.pool)
        .await
        .expect("n_parameters");
    let html = p.get(&format!("/compare?run={a}&run={b}")).await.text();
    assert!(
        html.contains(">61.00<") && html.contains(">64.50<"),
        "best top-1 per run"
    );
    assert!(
        html.contains(">2\u{202f}866\u{202f}992<"),
        "parameters read in thousands"
    );
    assert!(html.contains("Reconstructions at epoch 1"));
    assert_eq!(html.matches("/artifacts/").count(), 2);
    assert!(html.contains("data-series="));
}

#[tokio::test]
async fn a_browser_that_has_not_signed_in_cannot_queue_runs() {
    let p = spawn().await;
    let a = p
        .post_raw(
            "/runs/new",
            &[("name", "sneaky"), ("epochs", "3")],
            None,
            "same-origin",
        )
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(a.text().contains(r#"action="/signin""#));
    assert_eq!(p.count("run").await, 0);
    // The form page tells a signed-out browser to sign in, and carries the
    // CSRF value once signed in.
    assert!(
        p.get("/runs/new")
            .await
            .text()
            .contains("sign in</a> to queue runs")
    );
    let signed_in = p
        .send(
            Request::get("/runs/new")
                .header("cookie", &p.cookie)
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .text();
    assert!(signed_in.contains(&format!(r#"name="csrf_token" value="{}""#, p.csrf)));
}

#[tokio::test]
async fn closed_servers_send_page_readers_to_sign_in() {
    let settings = maelab_server::settings::ServeSettings {
        require_auth_for_reads: true,
        ..Default::default()
    };
    let p = pages_support::spawn_with(settings).await;
    let a = p.get("/runs?status=queued").await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(
        a.header("location"),
        "/signin?next=%2Fruns%3Fstatus%3Dqueued"
    );
    let signin = p.get("/signin?next=/runs").await;
    assert_eq!(signin.status, StatusCode::OK);
    let ok = p
        .send(
            Request::get("/runs")
                .header("cookie", &p.cookie)
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);
}
