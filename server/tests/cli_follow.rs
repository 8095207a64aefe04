//! `maelab import --follow` against a real server process: a folder written
//! the way the official MAE code writes it (checkpoint-N.pth, then epoch N's
//! line appended to log.txt) becomes a run that grows epoch by epoch; a line
//! still being written and a checkpoint whose record is not in yet wait; the
//! follow ends with --epochs, with the command it runs (its status finishing
//! the run), or interrupted (the run stays running, resumed by a second
//! follow, finished by a plain import, which then refuses a log grown past
//! the finished run); a stalled training turns lost and comes back.

mod cli_support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use cli_support::{Server, code, serve, stderr, stdout, text};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Epoch `e`'s record as main_pretrain.py writes it.
fn line(e: u32) -> String {
    format!(
        "{{\"train_lr\": {}, \"train_loss\": {}, \"epoch\": {e}}}\n",
        1e-4 * f64::from(e + 1),
        1.0 / f64::from(e + 2)
    )
}

fn empty_folder(name: &str) -> PathBuf {
    let dir = std::env::temp_dir()
        .join(format!("maelab-follow-{}", uuid::Uuid::new_v4()))
        .join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn append(dir: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("log.txt"))
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `maelab import --follow DIR ARGS...` as a child process in `dir` (where a
/// command after `--` writes), its output captured.
fn follow(s: &Server, dir: &Path, args: &[&str]) -> Child {
    let mut all = vec!["import", "--follow", "--poll", "0.05", arg(dir)];
    all.extend_from_slice(args);
    s.cli(&all)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The follower's end (killed, failing the test, after 30 s).
async fn finished(mut child: Child) -> Output {
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!("the follow did not end: {}", text(&o));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.wait_with_output().unwrap()
}

/// The first run (in the list's order) whose state satisfies `pred`, once
/// one does (30 s at most).
async fn run_when(s: &Server, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list: Value = reqwest::get(format!("{}/api/v1/runs", s.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let runs = list
            .as_array()
            .or_else(|| list["runs"].as_array())
            .cloned()
            .unwrap_or_default();
        for run in &runs {
            let url = format!("{}/api/v1/runs/{}", s.url, run["run_id"].as_str().unwrap());
            let detail: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
            if pred(&detail) {
                return detail;
            }
        }
        assert!(Instant::now() < deadline, "no such run: {runs:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn checkpoints(s: &Server, id: &str) -> Vec<(String, String)> {
    let list: Value = reqwest::get(format!(
        "{}/api/v1/runs/{id}/artifacts?kind=checkpoint",
        s.url
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let mut got: Vec<(String, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap().to_string(),
                a["sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    got
}

/// Wait (30 s at most) until the run's checkpoints are `want`: a look sends
/// the points before the checkpoints, so the epoch shows first.
async fn checkpoints_become(s: &Server, id: &str, want: &[(String, String)]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = checkpoints(s, id).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "checkpoints {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn write_checkpoint(dir: &Path, e: u32, size: usize) -> (String, String) {
    let bytes: Vec<u8> = (0..size).map(|i| (i * 13 + e as usize) as u8).collect();
    let name = format!("checkpoint-{e}.pth");
    std::fs::write(dir.join(&name), &bytes).unwrap();
    (name, hex::encode(Sha256::digest(&bytes)))
}

#[tokio::test]
async fn follows_a_training_epoch_by_epoch_until_its_last_epoch() {
    let s = serve().await;
    let dir = empty_folder("mae-live");
    // Started before the training wrote anything.
    let child = follow(&s, &dir, &["--epochs", "3", "--tag", "live"]);

    // A file the server would refuse is warned about once, not at every look.
    std::fs::write(dir.join("checkpoint-x y.pth"), b"x").unwrap();
    // Epoch 0 whole, epoch 1's line half written: the run has one epoch.
    let ck0 = write_checkpoint(&dir, 0, 3000);
    let first = line(0);
    append(&dir, &first);
    let second = line(1);
    let (head, tail) = second.split_at(20);
    append(&dir, head);
    let run = run_when(&s, |r| r["epochs_done"] == 1).await;
    let id = run["run_id"].as_str().unwrap().to_string();
    assert_eq!(run["status"], "running");
    assert_eq!(run["kind"], "pretrain");
    assert_eq!(run["name"], "mae-live");
    assert_eq!(run["tags"], serde_json::json!(["live"]));
    assert_eq!(run["epochs_total"], 3, "--epochs is the run's total");
    checkpoints_become(&s, &id, std::slice::from_ref(&ck0)).await;

    // Checkpoint 1 lands before its record: it waits for the record.
    let ck1 = write_checkpoint(&dir, 1, 5000);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let run = run_when(&s, |_| true).await;
    assert_eq!(run["epochs_done"], 1, "a half-written line is no epoch");
    assert_eq!(checkpoints(&s, &id).await, std::slice::from_ref(&ck0));
    append(&dir, tail);
    run_when(&s, |r| r["epochs_done"] == 2).await;
    checkpoints_become(&s, &id, &[ck0.clone(), ck1.clone()]).await;

    // The last epoch finishes the run and the follow.
    append(&dir, &line(2));
    let o = finished(child).await;
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(
        stdout(&o).contains(&format!(
            "{id}  succeeded  3 epochs  2 checkpoints uploaded"
        )),
        "{}",
        text(&o)
    );
    assert_eq!(stderr(&o).matches("skipping").count(), 1, "{}", text(&o));
    assert!(
        stderr(&o).contains("checkpoint-x y.pth: not a name the server stores"),
        "{}",
        text(&o)
    );
    let run = run_when(&s, |_| true).await;
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["epochs_done"], 3);
    let o = s.run(&["export", &id, "--format", "mae-log"]).await;
    assert_eq!(stdout(&o), format!("{first}{second}{}", line(2)));

    // A plain import of the folder finds the followed run.
    let o = s.run(&["import", arg(&dir)]).await;
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(
        stdout(&o).starts_with(&format!("{id}  pretrain  already imported")),
        "{}",
        text(&o)
    );
    assert_eq!(s.count("run").await, 1);
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
}

#[tokio::test]
async fn the_command_it_runs_finishes_the_run_with_its_status() {
    let s = serve().await;
    let dir = empty_folder("mae-cmd");
    let script = format!(
        "printf '%s' '{}' >> log.txt; sleep 0.3; printf '%s' '{}' >> log.txt; sleep 0.3; exit 7",
        line(0),
        line(1).trim_end()
    );
    let o = finished(follow(&s, &dir, &["--", "sh", "-c", &script])).await;
    assert_eq!(code(&o), 7, "the command's status: {}", text(&o));
    let run = run_when(&s, |_| true).await;
    assert_eq!(run["status"], "failed");
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("exited with status 7"),
        "{run}"
    );
    // The last line had no line end; the training was over, so it counts.
    assert_eq!(run["epochs_done"], 2);
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();

    // A SIGTERM to maelab goes on to the command, which decides how to end.
    let dir = empty_folder("mae-term");
    let script = format!(
        // Bounded, so a follower that failed to pass the signal on leaves no loop behind.
        "trap 'exit 5' TERM; printf '%s' '{}' >> log.txt; i=0; \
         while [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done",
        line(0)
    );
    let child = follow(&s, &dir, &["--", "sh", "-c", &script]);
    let id =
        run_when(&s, |r| r["name"] == "mae-term" && r["epochs_done"] == 1).await["run_id"].clone();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let o = finished(child).await;
    assert_eq!(code(&o), 5, "{}", text(&o));
    let run = run_when(&s, |r| r["run_id"] == id).await;
    assert_eq!(run["status"], "failed");
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("exited with status 5"),
        "{run}"
    );
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();

    // A command that ends without writing a record imports nothing.
    let dir = empty_folder("mae-nothing");
    let o = s
        .run(&["import", "--follow", arg(&dir), "--", "true"])
        .await;
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(stderr(&o).contains("nothing imported"), "{}", text(&o));
    assert_eq!(s.count("run").await, 2);
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
}

#[tokio::test]
async fn an_interrupted_follow_resumes_and_a_plain_import_finishes_it() {
    let s = serve().await;
    let dir = empty_folder("mae-resume");
    append(&dir, &line(0));
    let child = follow(&s, &dir, &[]);
    let run = run_when(&s, |r| r["epochs_done"] == 1).await;
    let id = run["run_id"].as_str().unwrap().to_string();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let o = finished(child).await;
    assert_eq!(code(&o), 130, "{}", text(&o));
    assert!(stderr(&o).contains("stays running"), "{}", text(&o));
    assert_eq!(run_when(&s, |_| true).await["status"], "running");

    // A second follow finds the run and sends what came meanwhile.
    append(&dir, &line(1));
    let child = follow(&s, &dir, &[]);
    run_when(&s, |r| r["epochs_done"] == 2).await;
    // A bad line with a record after it stops the follow (the run stays).
    append(&dir, "Epoch: [2]  [  0/390]  eta: 0:01:02\n");
    append(&dir, &line(2));
    let o = finished(child).await;
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(
        stderr(&o).contains("was followed or imported partly before"),
        "{}",
        text(&o)
    );
    assert!(
        stderr(&o).contains("epochs 0-1 (2)"),
        "what came meanwhile goes in one look: {}",
        text(&o)
    );
    assert!(
        stderr(&o).contains("line 3: not a JSON object"),
        "{}",
        text(&o)
    );
    assert_eq!(run_when(&s, |_| true).await["epochs_done"], 2);

    // A plain import completes and finishes it.
    let o = s.run(&["import", arg(&dir), "--skip-bad-lines"]).await;
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(stderr(&o).contains("completing it"), "{}", text(&o));
    let run = run_when(&s, |_| true).await;
    assert_eq!(run["run_id"], id.as_str());
    assert_eq!(
        (run["status"].as_str(), run["epochs_done"].as_i64()),
        (Some("succeeded"), Some(3))
    );

    // The finished run takes no more epochs: the grown log is refused.
    append(&dir, &line(3));
    let o = s.run(&["import", arg(&dir), "--skip-bad-lines"]).await;
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(
        stderr(&o).contains(
            "imported from this folder when its log had 3 epochs, is finished and takes no \
             more; log.txt has 4 now (`maelab import --follow` keeps a run open while a \
             training writes)"
        ),
        "{}",
        text(&o)
    );
    assert_eq!(s.count("run").await, 1);
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
}

#[tokio::test]
async fn a_stalled_training_turns_lost_and_comes_back() {
    let s = serve().await;
    let dir = empty_folder("mae-stall");
    append(&dir, &line(0));
    // Heartbeats every 2.5 s, stopping 1 s after the last change.
    let child = follow(
        &s,
        &dir,
        &["--lost-after", "10", "--stall", "1", "--epochs", "2"],
    );
    run_when(&s, |r| r["epochs_done"] == 1).await;
    run_when(&s, |r| r["status"] == "lost").await;
    append(&dir, &line(1));
    let o = finished(child).await;
    assert_eq!(code(&o), 0, "{}", text(&o));
    let run = run_when(&s, |_| true).await;
    assert_eq!(
        (run["status"].as_str(), run["epochs_done"].as_i64()),
        (Some("succeeded"), Some(2))
    );
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
}
