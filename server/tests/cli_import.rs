//! `maelab import` and `maelab export --format mae-log` against a real server
//! process on a free port with its own database: folders of the official MAE
//! output become external runs (pretraining and finetuning told apart by the
//! keys, the finetune linked with `--pretrain-of`, checkpoints uploaded), a
//! second import adds nothing, a log with bad lines is refused naming every
//! line (nothing created) unless `--skip-bad-lines`, and the exported log.txt
//! is the imported one byte for byte (the standard MAE keys; other keys are
//! stored and charted but not in the generated log.txt).

mod cli_support;

use std::path::{Path, PathBuf};

use cli_support::{Server, code, serve, stderr, stdout, text};
use serde_json::Value;
use sha2::{Digest, Sha256};

// Written by python3's json.dumps, as facebookresearch/mae writes log.txt
// (`json.dumps(log_stats) + "\n"`), with values of a real run's shape.
const PRETRAIN_LOG: &str = r#"{"train_lr": 2.9999999999999997e-05, "train_loss": 1.123456789, "epoch": 0}
{"train_lr": 8.999999999999999e-05, "train_loss": 0.7753442218454107, "epoch": 1}
{"train_lr": 0.00015, "train_loss": 0.5914207031849587, "epoch": 2}
"#;

const FINETUNE_LOG: &str = r#"{"train_lr": 3.3333333333333337e-06, "train_loss": 3.2, "test_loss": 1.9, "test_acc1": 57.12000000976562, "test_acc5": 80.0, "epoch": 0, "n_parameters": 85806346}
{"train_lr": 6.6666666666666675e-06, "train_loss": 1.6, "test_loss": 1.5999999999999999, "test_acc1": 75.0, "test_acc5": 86.66666666666667, "epoch": 1, "n_parameters": 85806346}
{"train_lr": 1.6666666666666667e-06, "train_loss": 1.0666666666666667, "test_loss": 1.2999999999999998, "test_acc1": 83.6060000024414, "test_acc5": 93.33333333333333, "epoch": 2, "n_parameters": 85806346}
"#;

/// A folder named `name` (in a fresh temporary parent) holding `log` as
/// log.txt and `checkpoint-N.pth` files of the given sizes.
fn folder(name: &str, log: &str, checkpoints: &[(u32, usize)]) -> PathBuf {
    let dir = std::env::temp_dir()
        .join(format!("maelab-import-{}", uuid::Uuid::new_v4()))
        .join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("log.txt"), log).unwrap();
    for (epoch, size) in checkpoints {
        // Not a pickle: an import never opens one.
        let bytes: Vec<u8> = (0..*size)
            .map(|i| (i * 7 + *epoch as usize) as u8)
            .collect();
        std::fs::write(dir.join(format!("checkpoint-{epoch}.pth")), bytes).unwrap();
    }
    dir
}

fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The run id that starts the line `import` printed.
fn run_id(o: &std::process::Output) -> String {
    let out = stdout(o);
    let id = out
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{}", text(o));
    id
}

async fn api(s: &Server, path: &str) -> Value {
    let r = reqwest::get(format!("{}{path}", s.url)).await.unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap()
}

async fn counts(s: &Server) -> [i64; 4] {
    [
        s.count("run").await,
        s.count("metric_point").await,
        s.count("epoch_metric").await,
        s.count("artifact").await,
    ]
}

#[tokio::test]
async fn imports_pretrain_and_finetune_once_and_exports_the_same_log() {
    let s = serve().await;
    let pre = folder("mae-pretrain", PRETRAIN_LOG, &[(0, 1000), (2, 2_500_000)]);
    let ft = folder("mae-finetune", FINETUNE_LOG, &[(2, 4096)]);

    // A pretraining log cannot be linked to a pretraining run.
    let o = s
        .run(&[
            "import",
            arg(&pre),
            "--pretrain-of",
            &uuid::Uuid::new_v4().to_string(),
        ])
        .await;
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(stderr(&o).contains("is a pretraining log"), "{}", text(&o));
    assert_eq!(counts(&s).await, [0; 4]);

    let o = s.run(&["import", arg(&pre), "--tag", "cluster"]).await;
    assert_eq!(code(&o), 0, "{}", text(&o));
    let pre_id = run_id(&o);
    let line = stdout(&o);
    for part in [
        "pretrain",
        "3 epochs",
        "6 points",
        "2 checkpoints",
        "mae-pretrain",
    ] {
        assert!(line.contains(part), "{part}: {line}");
    }

    let o = s
        .run(&[
            "import",
            arg(&ft),
            "--pretrain-of",
            &pre_id,
            "--name",
            "vit-b ft",
        ])
        .await;
    assert_eq!(code(&o), 0, "{}", text(&o));
    let ft_id = run_id(&o);
    assert!(
        stdout(&o).contains("finetune  3 epochs  18 points  1 checkpoints"),
        "{}",
        text(&o)
    );

    let run = api(&s, &format!("/api/v1/runs/{pre_id}")).await;
    assert_eq!(run["kind"], "pretrain");
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["name"], "mae-pretrain");
    assert_eq!(run["tags"], serde_json::json!(["cluster"]));
    assert_eq!(run["epochs_done"], 3);
    let run = api(&s, &format!("/api/v1/runs/{ft_id}")).await;
    assert_eq!(run["kind"], "finetune");
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["name"], "vit-b ft");
    assert_eq!(run["parent_run_id"], pre_id.as_str());
    assert_eq!(run["epochs_done"], 3);
    assert_eq!(run["best_acc1"], 83.6060000024414);
    assert_eq!(run["n_parameters"], 85_806_346);
    let epochs = api(&s, &format!("/api/v1/runs/{ft_id}/epochs")).await;
    let epochs = epochs
        .as_array()
        .or_else(|| epochs["epochs"].as_array())
        .unwrap()
        .clone();
    assert_eq!(epochs.len(), 3);
    assert_eq!(epochs[1]["test_acc1"], 75.0);

    // Checkpoints: stored with their epochs and digests, streamed whole.
    let list = api(
        &s,
        &format!("/api/v1/runs/{pre_id}/artifacts?kind=checkpoint"),
    )
    .await;
    let mut got: Vec<(String, i64, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap().to_string(),
                a["epoch"].as_i64().unwrap(),
                a["sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    let digest = |n: u32| {
        hex::encode(Sha256::digest(
            std::fs::read(pre.join(format!("checkpoint-{n}.pth"))).unwrap(),
        ))
    };
    assert_eq!(
        got,
        [
            ("checkpoint-0.pth".to_string(), 0, digest(0)),
            ("checkpoint-2.pth".to_string(), 2, digest(2)),
        ]
    );

    // Importing again creates and sends nothing.
    let before = counts(&s).await;
    let o = s
        .run(&["import", arg(&pre), arg(&ft), "--pretrain-of", &pre_id])
        .await;
    assert_eq!(
        code(&o),
        3,
        "the pretraining folder refuses --pretrain-of: {}",
        text(&o)
    );
    let o = s.run(&["import", arg(&pre)]).await;
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(
        stdout(&o).starts_with(&format!("{pre_id}  pretrain  already imported")),
        "{}",
        text(&o)
    );
    let o = s.run(&["import", arg(&ft), "--pretrain-of", &pre_id]).await;
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(stdout(&o).contains("already imported"), "{}", text(&o));
    assert_eq!(counts(&s).await, before);

    // The exported log.txt is the imported one, byte for byte.
    for (id, log) in [(&pre_id, PRETRAIN_LOG), (&ft_id, FINETUNE_LOG)] {
        let o = s.run(&["export", id, "--format", "mae-log"]).await;
        assert_eq!(code(&o), 0, "{}", text(&o));
        assert_eq!(stdout(&o), log);
    }
    let out = pre.with_file_name("exported.txt");
    let o = s
        .run(&[
            "runs",
            "export",
            &ft_id,
            "--format",
            "mae-log",
            "--output",
            arg(&out),
        ])
        .await;
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(std::fs::read(&out).unwrap(), FINETUNE_LOG.as_bytes());
    for dir in [&pre, &ft] {
        std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }
}

#[tokio::test]
async fn bad_lines_refuse_the_folder_unless_skipped() {
    let s = serve().await;
    let log = concat!(
        "{\"train_lr\": 0.001, \"train_loss\": 0.5, \"train_grad_norm\": 2.5, \"note\": \"warm\", \"epoch\": 0}\n",
        "Epoch: [1]  [  0/390]  eta: 0:01:02  loss: 1.0123\n",
        "{\"train_lr\": 0.002, \"train_loss\": 0.4, \"epoch\": 1}\n",
        "{\"train_lr\": 0.003, \"train_loss\": NaN, \"epoch\": 2}\n",
        "{\"train_lr\": 0.004,\n",
        "  \"train_loss\": 0.3, \"epoch\": 3.5}\n",
        "\n",
        "{'train_lr': 0.005, 'train_loss': 0.2, 'train_grad_norm': 1.5, 'epoch': 4,}\n",
        "{\"train_lr\": 0.006, \"train_loss\": 1e999, \"epoch\": 5}\n",
        "{\"train_lr\": 0.007, \"train_loss\": 0.1, \"epoch\": -6}\n",
    );
    let dir = folder("mae-broken", log, &[(0, 100)]);

    let o = s.run(&["import", arg(&dir)]).await;
    assert_eq!(code(&o), 3, "{}", text(&o));
    let err = stderr(&o);
    for named in [
        "5 bad lines",
        "line 2: not a JSON object",
        "line 4: train_loss is NaN",
        "lines 5-6: epoch 3.5 is not an integer",
        "line 9: 1e999 is too large for a 64-bit float",
        "line 10: epoch -6 is negative",
        "nothing imported",
    ] {
        assert!(err.contains(named), "{named}: {err}");
    }
    assert_eq!(counts(&s).await, [0; 4]);

    let o = s
        .run(&["import", arg(&dir), "--skip-bad-lines", "--no-checkpoints"])
        .await;
    assert_eq!(code(&o), 0, "{}", text(&o));
    let err = stderr(&o);
    assert!(err.contains("skipping 5 bad lines"), "{err}");
    assert!(err.contains("line 4: train_loss is NaN"), "{err}");
    assert!(
        err.contains("`note` is not a number (a string on line 1); ignored"),
        "{err}"
    );
    assert!(
        stdout(&o).contains("pretrain  3 epochs  8 points  0 checkpoints"),
        "{}",
        text(&o)
    );
    let id = run_id(&o);
    let run = api(&s, &format!("/api/v1/runs/{id}")).await;
    assert_eq!(run["epochs_done"], 3);
    assert_eq!(s.count("artifact").await, 0);
    // A key that is not an epoch column is a charted point.
    let points = api(
        &s,
        &format!("/api/v1/runs/{id}/metrics?key=train_grad_norm"),
    )
    .await;
    let points: Vec<(i64, f64)> = points
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["step"].as_i64().unwrap(), p["value"].as_f64().unwrap()))
        .collect();
    assert_eq!(points, [(0, 2.5), (4, 1.5)]);
    // The good lines come back in the MAE format (the extra key is charted, not in log.txt).
    let o = s.run(&["export", &id, "--format", "mae-log"]).await;
    assert_eq!(
        stdout(&o),
        "{\"train_lr\": 0.001, \"train_loss\": 0.5, \"epoch\": 0}\n\
         {\"train_lr\": 0.002, \"train_loss\": 0.4, \"epoch\": 1}\n\
         {\"train_lr\": 0.005, \"train_loss\": 0.2, \"epoch\": 4}\n"
    );

    // Without a token nothing can be written.
    let other = folder("mae-other", PRETRAIN_LOG, &[]);
    let mut c = s.cli(&["import", arg(&other)]);
    c.env_remove("MAELAB_TOKEN");
    let o = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(stderr(&o).contains("MAELAB_TOKEN"), "{}", text(&o));

    // An import cut short (the run created, nothing else) is completed by
    // the next one, which finds the run by its client_run_id.
    let mut h = Sha256::new();
    h.update(b"mae-other");
    h.update(PRETRAIN_LOG.as_bytes());
    let client_run_id = format!("mae-import:{}", hex::encode(h.finalize()));
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/runs/external", s.url))
        .bearer_auth(&s.token)
        .json(&serde_json::json!({"name": "mae-other", "client_run_id": client_run_id}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let o = s.run(&["import", arg(&other)]).await;
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(
        stderr(&o).contains("imported partly before; completing it"),
        "{}",
        text(&o)
    );
    assert_eq!(run_id(&o), created["run_id"].as_str().unwrap());
    let run = api(&s, &format!("/api/v1/runs/{}", run_id(&o))).await;
    assert_eq!(
        (run["status"].as_str(), run["epochs_done"].as_i64()),
        (Some("succeeded"), Some(3))
    );
    for dir in [&dir, &other] {
        std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }
}
