//! `maelab study …` against a real server process on a free port with its own
//! database: a bad study or claim is refused with exit 3 and stores nothing,
//! `--preview` prints the runs, `show`/`export` read a finished study, and
//! `submit --wait --fail-unless` exits 0 when the interval supports the claim,
//! 2 when it does not, 1 when chains failed. Chains are finished through the
//! queue's fenced writes (claim, epoch rows, complete), the rows a worker writes.

mod api_support;
mod cli_support;

use std::process::{Output, Stdio};
use std::time::Duration;

use api_support::{register_worker, sim_epoch};
use cli_support::{Server, code, serve, stderr, stdout, text, toml_file};
use maelab_core::db::metrics::record_epoch;
use maelab_core::db::queue;

// The study tests' own steps on the shared server.
impl Server {
    /// Nothing was stored: no study, no run, no job.
    async fn assert_empty(&self) {
        for table in ["study", "study_chain", "run", "job"] {
            assert_eq!(self.count(table).await, 0, "{table} has rows");
        }
    }

    /// Act as a worker for every queued job: one epoch with top-1
    /// `acc(arm, seed)`, then complete (or fail, when `acc` gives None).
    async fn finish_all(&self, acc: impl Fn(&str, i64) -> Option<f64>) -> usize {
        let pool = &self.db.pool;
        let worker = register_worker(pool, "sim-worker", "test-host").await;
        let mut done = 0;
        while let Some(job) = queue::claim_next(pool, worker, Duration::from_secs(60))
            .await
            .unwrap()
        {
            let lease = job.lease;
            let (arm, seed): (String, i64) =
                sqlx::query_as("select study_arm, study_seed from run where run_id = $1")
                    .bind(lease.run_id.unwrap())
                    .fetch_one(pool)
                    .await
                    .unwrap();
            match acc(&arm, seed) {
                Some(a) => {
                    record_epoch(pool, &lease, &sim_epoch(0, (1.0, Some(a))))
                        .await
                        .unwrap();
                    queue::complete(pool, &lease).await.unwrap();
                }
                None => queue::fail(pool, &lease, "loss went NaN").await.unwrap(),
            }
            done += 1;
        }
        done
    }
}

/// Finetune-only, from scratch: two arms x three seeds, one epoch each, six
/// runs queued at submit.
const STUDY: &str = r#"
name = "cli study"
stages = "finetune"
seeds = 3
baseline = "a"

[base]
preset = "vit-micro/4"

[budget]
epochs = 1

[arms.a]
model = "mae"

[arms.b]
model = "mae"
drop_path = 0.0
"#;

/// Arm b beats arm a by 20 points on every seed.
fn b_wins(arm: &str, seed: i64) -> Option<f64> {
    let base = if arm == "b" { 70.0 } else { 50.0 };
    Some(base + seed as f64)
}

#[tokio::test]
async fn an_unknown_arm_field_exits_3_naming_it_and_stores_nothing() {
    let s = serve().await;
    let bad = STUDY.replace("drop_path = 0.0", "drop_path = 0.0\nbogus_field = 1");
    let file = toml_file(&bad);
    let out = s.run(&["study", "submit", file.to_str().unwrap()]).await;
    assert_eq!(code(&out), 3, "{}", text(&out));
    assert!(stderr(&out).contains("arms.b"), "{}", text(&out));
    assert!(stderr(&out).contains("bogus_field"), "{}", text(&out));
    // Unknown top-level key and a TOML syntax error: the same.
    let unknown = toml_file(&format!("colour = \"red\"\n{STUDY}"));
    let out = s.run(&["study", "submit", unknown.to_str().unwrap()]).await;
    assert_eq!(code(&out), 3, "{}", text(&out));
    assert!(stderr(&out).contains("colour"), "{}", text(&out));
    let broken = toml_file("name = ");
    let out = s.run(&["study", "submit", broken.to_str().unwrap()]).await;
    assert_eq!(code(&out), 3, "{}", text(&out));
    s.assert_empty().await;
}

#[tokio::test]
async fn a_bad_claim_exits_3_and_stores_nothing() {
    let s = serve().await;
    let file = toml_file(STUDY);
    let path = file.to_str().unwrap();
    let unknown_arm = s
        .run(&[
            "study",
            "submit",
            path,
            "--wait",
            "--fail-unless",
            "c > a on test_acc1",
        ])
        .await;
    assert_eq!(code(&unknown_arm), 3, "{}", text(&unknown_arm));
    assert!(
        stderr(&unknown_arm).contains("`c` is not an arm"),
        "{}",
        text(&unknown_arm)
    );
    let unknown_metric = s
        .run(&["study", "submit", path, "--fail-unless", "b > a on top1"])
        .await;
    assert_eq!(code(&unknown_metric), 3, "{}", text(&unknown_metric));
    assert!(
        stderr(&unknown_metric).contains("`top1` is not a study metric"),
        "{}",
        text(&unknown_metric)
    );
    let syntax = s
        .run(&["study", "submit", path, "--fail-unless", "b beats a"])
        .await;
    assert_eq!(code(&syntax), 3, "{}", text(&syntax));
    s.assert_empty().await;
}

#[tokio::test]
async fn preview_prints_the_runs_and_stores_nothing() {
    let s = serve().await;
    let file = toml_file(STUDY);
    let out = s
        .run(&["study", "submit", file.to_str().unwrap(), "--preview"])
        .await;
    assert_eq!(code(&out), 0, "{}", text(&out));
    let printed = stdout(&out);
    assert!(printed.starts_with("6 runs in 6 chains"), "{printed}");
    let rows: Vec<&str> = printed
        .lines()
        .filter(|l| l.contains("cli study / "))
        .collect();
    assert_eq!(rows.len(), 6, "{printed}");
    assert!(rows.iter().all(|r| r.contains("finetune")), "{printed}");
    s.assert_empty().await;
}

#[tokio::test]
async fn the_wave_mae_study_file_previews() {
    let s = serve().await;
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/studies/wave-mae.toml");
    let out = s.run(&["study", "submit", file, "--preview"]).await;
    assert_eq!(code(&out), 0, "{}", text(&out));
    let printed = stdout(&out);
    // Five arms x three seeds, each a pretrain and its finetune.
    assert!(printed.starts_with("30 runs in 15 chains"), "{printed}");
    for arm in ["mae", "mae-hf", "wave-decoder", "wave-encoder", "wave-both"] {
        assert!(printed.contains(&format!("{arm} ")), "{arm}: {printed}");
    }
    assert!(printed.contains("calibrated"), "{printed}");
    s.assert_empty().await;
}

#[tokio::test]
async fn show_export_cancel_and_retry_a_study() {
    let s = serve().await;
    let file = toml_file(STUDY);
    let out = s.run(&["study", "submit", file.to_str().unwrap()]).await;
    assert_eq!(code(&out), 0, "{}", text(&out));
    let id = stdout(&out).trim().to_string();
    uuid::Uuid::parse_str(&id).unwrap();
    assert_eq!(s.count("run").await, 6);
    assert_eq!(s.finish_all(b_wins).await, 6);

    let show = s.run(&["study", "show", &id]).await;
    assert_eq!(code(&show), 0, "{}", text(&show));
    let shown = stdout(&show);
    assert!(shown.contains("succeeded (6 of 6 chains"), "{shown}");
    // The results table: b's mean top-1 with its interval, +20 to a.
    assert!(shown.contains("71.00 ["), "{shown}");
    assert!(shown.contains("+20.00 ["), "{shown}");
    assert!(shown.contains("b vs a on"), "{shown}");

    let json = s.run(&["study", "show", &id, "--json"]).await;
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["study_id"], id.as_str());

    let csv = s.run(&["study", "export", &id, "--format", "csv"]).await;
    assert_eq!(code(&csv), 0, "{}", text(&csv));
    let csv = stdout(&csv);
    let header = csv.lines().next().unwrap();
    assert!(header.contains("arm") && header.contains("seed"), "{csv}");
    let acc1: Vec<&str> = csv.lines().filter(|l| l.contains(",test_acc1,")).collect();
    assert_eq!(acc1.len(), 6, "{csv}");
    let agg = s
        .run(&[
            "study",
            "export",
            &id,
            "--format",
            "json",
            "--rows",
            "aggregate",
        ])
        .await;
    assert_eq!(code(&agg), 0, "{}", text(&agg));
    let rows: serde_json::Value = serde_json::from_slice(&agg.stdout).unwrap();
    let b = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["arm"] == "b" && r["metric"] == "test_acc1")
        .unwrap();
    assert_eq!(b["n"], 3);
    assert!((b["diff"].as_f64().unwrap() - 20.0).abs() < 1e-9, "{b}");

    // A second study to cancel, then retry one chain of.
    let out = s.run(&["study", "submit", file.to_str().unwrap()]).await;
    let id2 = stdout(&out).trim().to_string();
    let cancel = s.run(&["study", "cancel", &id2]).await;
    assert_eq!(code(&cancel), 0, "{}", text(&cancel));
    let cancelled: i64 = sqlx::query_scalar(
        "select count(*) from run where study_id = $1::uuid and status = 'cancelled'",
    )
    .bind(&id2)
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(cancelled, 6);
    let bad = s.run(&["study", "retry", &id2, "--arm", "a"]).await;
    assert_eq!(code(&bad), 3, "--arm needs --seed: {}", text(&bad));
    let retry = s
        .run(&["study", "retry", &id2, "--arm", "a", "--seed", "1"])
        .await;
    assert_eq!(code(&retry), 0, "{}", text(&retry));
    let queued: i64 = sqlx::query_scalar(
        "select count(*) from run where study_id = $1::uuid and status = 'queued'
           and study_arm = 'a' and study_seed = 1",
    )
    .bind(&id2)
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(queued, 1, "{}", text(&retry));
    let not_a_study = s.run(&["study", "show", "nope"]).await;
    assert_eq!(code(&not_a_study), 3, "{}", text(&not_a_study));
    let missing = s
        .run(&["study", "show", &uuid::Uuid::new_v4().to_string()])
        .await;
    assert_eq!(code(&missing), 3, "{}", text(&missing));
}

/// Start `study submit --wait` with `claims`, finish its six runs with
/// `acc`, and return the CLI's output.
async fn submit_and_finish(
    s: &Server,
    claims: &[&str],
    acc: impl Fn(&str, i64) -> Option<f64>,
) -> Output {
    let file = toml_file(STUDY);
    let mut args = vec!["study", "submit", file.to_str().unwrap(), "--wait"];
    for c in claims {
        args.extend(["--fail-unless", c]);
    }
    let before = s.count("run").await;
    let child = s
        .cli(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    s.wait_for_queued(6).await;
    assert_eq!(s.count("run").await, before + 6);
    // Let the CLI open its stream first, so it follows the changes live.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.finish_all(acc).await, 6);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap());
    tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("study submit --wait did not end")
        .unwrap()
}

#[tokio::test]
async fn wait_and_claims_gate_the_exit_code() {
    let s = serve().await;
    let supported = submit_and_finish(&s, &["b > a on test_acc1"], b_wins).await;
    assert_eq!(code(&supported), 0, "{}", text(&supported));
    let err = stderr(&supported);
    assert!(err.contains("b seed 2: succeeded"), "{err}");
    assert!(
        err.contains("claim `b > a on test_acc1`: supported"),
        "{err}"
    );
    let out = stdout(&supported);
    assert!(out.contains("results: best top-1"), "{out}");
    assert!(out.contains("+20.00 ["), "{out}");

    let refuted =
        submit_and_finish(&s, &["b > a on test_acc1", "a > b on test_acc1"], b_wins).await;
    assert_eq!(code(&refuted), 2, "{}", text(&refuted));
    assert!(
        stderr(&refuted).contains("claim `a > b on test_acc1`: NOT supported: a - b = -20.00"),
        "{}",
        text(&refuted)
    );

    // No claims, one chain failed: exit 1.
    let failed = submit_and_finish(&s, &[], |arm, seed| {
        if arm == "a" && seed == 0 {
            None
        } else {
            b_wins(arm, seed)
        }
    })
    .await;
    assert_eq!(code(&failed), 1, "{}", text(&failed));
    assert!(
        stderr(&failed).contains("a seed 0: failed (loss went NaN)"),
        "{}",
        text(&failed)
    );
}
