//! `maelab import --follow DIR [-- COMMAND...]`: a training's output folder
//! followed while the training writes it. The official MAE code appends one
//! record per epoch to `log.txt` and writes `checkpoint-N.pth` before epoch
//! N's record; the run appears with the first record and gets each new epoch
//! and checkpoint as it lands, so its page charts the training live.
//!
//! - The folder is polled, not watched: inotify misses writes made by another
//!   host of a network filesystem, which is where cluster trainings write.
//! - While the training runs only whole records count: a line without its
//!   line end, or bad lines with no good record after them, wait for the
//!   next look (they may be a record being written). A bad line with a good
//!   record after it stops the follow unless `--skip-bad-lines`; when the
//!   training has ended, a torn last line is skipped with a warning.
//! - Checkpoint N is sent once epoch N's record is in (it is whole then);
//!   others when the training ends.
//! - Between epochs it heartbeats, while the folder changed within `--stall`
//!   or the command runs; a stalled training then turns `lost` on the
//!   server, and `running` again with its next epoch.
//! - What the server may get over (no connection, 5xx, 429) is retried at the
//!   next look (points are upserts, so nothing doubles); a refusal stops the
//!   follow. The command is never stopped by the follower.
//! - The run's key is `maelab import`'s (folder name and first line), so
//!   following again resumes the run and a plain import finishes it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::signal::unix::{SignalKind, signal};

use super::import::{self, Again, Checkpoint, ImportArgs, OpenRun, PointOut, folder_name};
use super::mae_log::{self, Log};
use super::{ApiError, Client, EXIT_OK, EXIT_USAGE};

/// Exit code when interrupted (SIGINT, 128 + 2, as shells report it).
const EXIT_INTERRUPTED: u8 = 130;
/// Exit code when terminated (SIGTERM, 128 + 15).
const EXIT_TERMINATED: u8 = 143;
/// Tries of the last look after the training ended, a few seconds apart.
const LAST_LOOK_TRIES: u32 = 5;

/// A reason to stop following that retrying cannot fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Stop(String);

/// Whether an error ends the follow (else the next look retries).
fn fatal(e: &anyhow::Error) -> bool {
    if e.downcast_ref::<Stop>().is_some() {
        return true;
    }
    e.chain().any(|c| {
        c.downcast_ref::<ApiError>()
            .is_some_and(|a| (400..500).contains(&a.status) && a.status != 408 && a.status != 429)
    })
}

/// The part of a growing log that is whole: up to its last line end, or all
/// of it once the training has ended.
fn whole_part(bytes: &[u8], ended: bool) -> &[u8] {
    if ended {
        return bytes;
    }
    bytes
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(&[][..], |i| &bytes[..=i])
}

/// Bad lines that count now: all once the training has ended, else those
/// with a good record after them (the rest may still be being written).
fn settled_bad(log: &Log, ended: bool) -> Vec<&mae_log::BadLine> {
    let last_good = log.records.iter().map(|r| r.line).max().unwrap_or(0);
    log.bad
        .iter()
        .filter(|b| ended || b.last < last_good)
        .collect()
}

/// The log's points, later records winning, as (key, epoch) -> value.
fn latest_points(log: &Log) -> BTreeMap<(String, u32), f64> {
    log.points()
        .map(|(k, e, v)| ((k.to_string(), e), v))
        .collect()
}

/// How a follow ended.
#[derive(Debug)]
enum End {
    /// `--epochs N`: epoch N-1 is in.
    Epochs,
    /// The command exited.
    Command(ExitStatus),
    /// SIGINT or SIGTERM without a command: the exit code.
    Interrupted(u8),
    /// The folder's run was finished before: nothing to follow.
    AlreadyDone,
    /// A refusal (the error) while the command runs: wait for it, send nothing.
    Stopped(anyhow::Error),
}

/// What one look found.
#[derive(Debug, PartialEq, Eq)]
enum Look {
    /// No record yet.
    Waiting,
    /// The largest epoch in the log.
    At(u32),
    /// The run was finished before with every epoch the log has.
    AlreadyDone,
}

/// One followed folder and what has been sent from it.
struct Follower<'a> {
    a: &'a ImportArgs,
    client: &'a Client,
    parent: Option<uuid::Uuid>,
    /// As given (for messages) and resolved.
    shown: PathBuf,
    dir: PathBuf,
    folder_name: String,
    /// Set with the first record.
    run: Option<uuid::Uuid>,
    key: Option<String>,
    whole_len: usize,
    /// (key, epoch) -> the value's bits, as the server has them.
    sent: HashMap<(String, u32), u64>,
    /// (name, sha256) the server had when the follow began.
    stored: HashSet<(String, String)>,
    /// Checkpoint name -> (length, mtime) when sent or last seen.
    uploaded: HashMap<String, (u64, SystemTime)>,
    seen: HashMap<String, (u64, SystemTime)>,
    reported: HashSet<(usize, usize)>,
    noted: HashSet<String>,
    /// Checkpoints warned about (skipped).
    warned: HashSet<String>,
    last_change: Instant,
    last_beat: Instant,
    checkpoints_sent: usize,
}

impl<'a> Follower<'a> {
    fn new(
        a: &'a ImportArgs,
        client: &'a Client,
        parent: Option<uuid::Uuid>,
    ) -> anyhow::Result<Self> {
        let shown = a.dirs[0].clone();
        // The training may create its folder after we start (`-- COMMAND`);
        // until then, the path as given.
        let dir = std::path::absolute(&shown)
            .with_context(|| format!("cannot resolve {}", shown.display()))?;
        if dir.exists() && !dir.is_dir() {
            bail!("{} is not a folder", shown.display());
        }
        let folder_name = folder_name(&dir);
        let now = Instant::now();
        Ok(Self {
            a,
            client,
            parent,
            shown,
            dir,
            folder_name,
            run: None,
            key: None,
            whole_len: 0,
            sent: HashMap::new(),
            stored: HashSet::new(),
            uploaded: HashMap::new(),
            seen: HashMap::new(),
            reported: HashSet::new(),
            noted: HashSet::new(),
            warned: HashSet::new(),
            last_change: now,
            last_beat: now,
            checkpoints_sent: 0,
        })
    }

    /// Resolve the folder as `maelab import` does (its canonical name is in
    /// the run's key); false while it does not exist yet.
    fn resolve(&mut self) -> anyhow::Result<bool> {
        match self.shown.canonicalize() {
            Ok(dir) if dir.is_dir() => {
                self.folder_name = folder_name(&dir);
                self.dir = dir;
                Ok(true)
            }
            Ok(_) => Err(Stop(format!("{} is not a folder", self.shown.display())).into()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => {
                Err(anyhow::Error::new(e).context(format!("opening {}", self.shown.display())))
            }
        }
    }

    fn log_shown(&self) -> PathBuf {
        self.shown.join("log.txt")
    }

    /// Read the log, send what is new, heartbeat when due.
    async fn look(&mut self, ended: bool, command_runs: bool) -> anyhow::Result<Look> {
        if self.run.is_none() && !self.resolve()? {
            return Ok(Look::Waiting);
        }
        let bytes = match std::fs::read(self.dir.join("log.txt")) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.run.is_none() => {
                return Ok(Look::Waiting);
            }
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("reading {}", self.log_shown().display())));
            }
        };
        let whole = whole_part(&bytes, ended);
        if whole.is_empty() {
            return Ok(Look::Waiting);
        }
        let key = import::client_run_id(&self.folder_name, whole);
        if whole.len() < self.whole_len || self.key.as_ref().is_some_and(|k| *k != key) {
            return Err(Stop(format!(
                "{} was replaced while followed (it {}): another training writes there now; \
                 follow it again for a new run",
                self.log_shown().display(),
                if whole.len() < self.whole_len {
                    "shrank"
                } else {
                    "has another first line"
                }
            ))
            .into());
        }
        if whole.len() != self.whole_len {
            self.last_change = Instant::now();
        }
        let log = mae_log::parse(whole);
        self.report_bad(&log, ended)?;
        if log.records.is_empty() {
            return Ok(Look::Waiting);
        }
        let id = match self.run {
            Some(id) => id,
            None => match self.open(&log, key).await? {
                Some(id) => id,
                None => return Ok(Look::AlreadyDone),
            },
        };
        self.whole_len = whole.len();
        let sent_points = self.send_points(id, &log).await?;
        self.send_checkpoints(id, &log, ended).await?;
        if sent_points {
            self.last_beat = Instant::now();
        } else {
            self.heartbeat(id, command_runs).await?;
        }
        Ok(log.last_epoch().map_or(Look::Waiting, Look::At))
    }

    /// Refuse or warn about bad lines that count now, each once; print new
    /// notes.
    fn report_bad(&mut self, log: &Log, ended: bool) -> anyhow::Result<()> {
        let new: Vec<&mae_log::BadLine> = settled_bad(log, ended)
            .into_iter()
            .filter(|b| !self.reported.contains(&(b.first, b.last)))
            .collect();
        if !new.is_empty() {
            let lines: Vec<String> = new.iter().map(|b| format!("  {b}")).collect();
            if !self.a.skip_bad_lines && !ended {
                return Err(Stop(format!(
                    "{} has bad lines (--skip-bad-lines follows past them):\n{}",
                    self.log_shown().display(),
                    lines.join("\n")
                ))
                .into());
            }
            eprintln!(
                "{}: skipping bad lines:\n{}",
                self.log_shown().display(),
                lines.join("\n")
            );
            self.reported.extend(new.iter().map(|b| (b.first, b.last)));
        }
        for note in log.notes() {
            if self.noted.insert(note.clone()) {
                eprintln!("{}: note: {note}", self.log_shown().display());
            }
        }
        Ok(())
    }

    /// Create the run with the first record, or find it again; None when it
    /// was finished before with every epoch the log has.
    async fn open(&mut self, log: &Log, key: String) -> anyhow::Result<Option<uuid::Uuid>> {
        let kind = if log.is_finetune() {
            "finetune"
        } else {
            "pretrain"
        };
        if self.parent.is_some() && kind == "pretrain" {
            return Err(Stop(format!(
                "{} is a pretraining log (no test_loss or test_acc1); --pretrain-of links a \
                 finetune to its pretraining: follow this folder without it",
                self.log_shown().display()
            ))
            .into());
        }
        let mut config = json!({
            "source": "mae-import",
            "folder": self.dir.to_string_lossy(),
            "followed": true,
        });
        if let Some(n) = self.a.epochs {
            config["epochs"] = json!(n);
        }
        let body = json!({
            "name": self.a.name.clone().unwrap_or_else(|| self.folder_name.clone()),
            "tags": self.a.tags,
            "kind": kind,
            "client_run_id": key,
            "parent_run": self.parent,
            "lost_after_seconds": self.a.lost_after,
            "config": config,
        });
        let OpenRun { id, run, created } = import::open_run(self.client, &body, None).await?;
        if !created {
            match import::again(&run, log.epochs(), &self.shown, self.parent)
                .map_err(|e| Stop(format!("{e:#}")))?
            {
                Again::Done => {
                    println!("{id}  {kind}  already imported  {}", self.shown.display());
                    return Ok(None);
                }
                Again::Complete => {
                    eprintln!(
                        "{}: run {id} was followed or imported partly before; following it again",
                        self.shown.display()
                    );
                    if !self.a.no_checkpoints {
                        self.stored = import::stored_checkpoints(self.client, id).await?;
                    }
                }
            }
        }
        println!("{id}  {kind}  following  {}", self.shown.display());
        self.run = Some(id);
        self.key = Some(key);
        Ok(Some(id))
    }

    /// Send points the server does not have (new, or changed by a later
    /// record); whether any were sent.
    async fn send_points(&mut self, id: uuid::Uuid, log: &Log) -> anyhow::Result<bool> {
        let fresh: Vec<((String, u32), f64)> = latest_points(log)
            .into_iter()
            .filter(|(k, v)| self.sent.get(k) != Some(&v.to_bits()))
            .collect();
        if fresh.is_empty() {
            return Ok(false);
        }
        let points: Vec<PointOut> = fresh
            .iter()
            .map(|((key, step), value)| PointOut {
                key,
                step: *step,
                value: *value,
            })
            .collect();
        import::post_points(self.client, id, &points).await?;
        let before = self.epochs();
        self.sent
            .extend(fresh.iter().map(|(k, v)| (k.clone(), v.to_bits())));
        // One line per look: a resumed follow sends hundreds at once.
        let new: BTreeSet<u32> = self.epochs().difference(&before).copied().collect();
        match (new.first(), new.last()) {
            (Some(a), Some(b)) if a == b => eprintln!("run {id}: epoch {a}"),
            (Some(a), Some(b)) => eprintln!("run {id}: epochs {a}-{b} ({})", new.len()),
            _ => {}
        }
        Ok(true)
    }

    /// The epochs the server has points of.
    fn epochs(&self) -> BTreeSet<u32> {
        self.sent.keys().map(|(_, e)| *e).collect()
    }

    /// Send checkpoints whose epoch's record is in (all once ended) and that
    /// changed since sent.
    async fn send_checkpoints(
        &mut self,
        id: uuid::Uuid,
        log: &Log,
        ended: bool,
    ) -> anyhow::Result<()> {
        if self.a.no_checkpoints {
            return Ok(());
        }
        let last = log.last_epoch();
        let warned = &mut self.warned;
        let found = import::checkpoints(&self.dir, &self.shown, &mut |name, why| {
            // Once per file, not at every look.
            if warned.insert(name.to_string()) {
                eprintln!("warning: {why}");
            }
        })?;
        for c in found {
            let Some(stamp) = stamp(&c) else { continue };
            if self.seen.insert(c.name.clone(), stamp) != Some(stamp) {
                self.last_change = Instant::now();
            }
            let whole = ended
                || c.epoch
                    .is_some_and(|e| last.is_some_and(|l| i64::from(l) >= i64::from(e)));
            if !whole || self.uploaded.get(&c.name) == Some(&stamp) {
                continue;
            }
            if import::upload_checkpoint(self.client, id, &c, &self.stored).await? {
                eprintln!("run {id}: {} uploaded", c.name);
                self.checkpoints_sent += 1;
            }
            self.uploaded.insert(c.name.clone(), stamp);
        }
        Ok(())
    }

    /// Heartbeat when one is due and the training shows signs of life.
    async fn heartbeat(&mut self, id: uuid::Uuid, command_runs: bool) -> anyhow::Result<()> {
        let every = Duration::from_secs_f64(f64::from(self.a.lost_after) / 4.0);
        let alive = command_runs || self.last_change.elapsed() < stall(self.a);
        if alive && self.last_beat.elapsed() >= every {
            self.client
                .post::<Value, Value>(&format!("/api/v1/runs/{id}/heartbeat"), None)
                .await
                .context("heartbeat")?;
            self.last_beat = Instant::now();
        }
        Ok(())
    }

    /// The last look after the training ended, retried over a few seconds
    /// when the server cannot be reached.
    async fn last_look(&mut self, ended: bool) -> anyhow::Result<Look> {
        let mut tries = 0;
        loop {
            match self.look(ended, false).await {
                Ok(l) => return Ok(l),
                Err(e) if fatal(&e) || tries + 1 >= LAST_LOOK_TRIES => return Err(e),
                Err(e) => {
                    eprintln!("warning: {e:#}; trying again");
                    tries += 1;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
    }

    async fn finish(&self, id: uuid::Uuid, failure: Option<String>) -> anyhow::Result<()> {
        let body = match failure {
            None => json!({"status": "succeeded"}),
            Some(reason) => json!({"status": "failed", "reason": reason}),
        };
        self.client
            .post::<_, Value>(&format!("/api/v1/runs/{id}/finish"), Some(&body))
            .await
            .context("finishing the run")?;
        Ok(())
    }

    fn summary(&self, id: uuid::Uuid, status: &str) -> String {
        format!(
            "{id}  {status}  {} epochs  {} checkpoints uploaded  {}",
            self.epochs().len(),
            self.checkpoints_sent,
            self.shown.display()
        )
    }
}

fn stall(a: &ImportArgs) -> Duration {
    Duration::from_secs_f64(a.stall.clamp(0.0, 1e9))
}

/// A checkpoint's length and modification time, if it can be read.
fn stamp(c: &Checkpoint) -> Option<(u64, SystemTime)> {
    let meta = std::fs::metadata(&c.path).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

/// 128 + the signal, or the status code, as a shell reports it.
fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(c), _) => u8::try_from(c.clamp(0, 255)).unwrap_or(u8::MAX),
        (None, Some(s)) => u8::try_from((128 + s).clamp(0, 255)).unwrap_or(u8::MAX),
        (None, None) => EXIT_USAGE,
    }
}

/// Follow `a.dirs[0]` (and run `a.command`) until the follow ends.
pub async fn run(
    a: &ImportArgs,
    client: &Client,
    parent: Option<uuid::Uuid>,
) -> anyhow::Result<u8> {
    let mut f = Follower::new(a, client, parent)?;
    let mut child = match a.command.split_first() {
        Some((program, args)) => Some(
            tokio::process::Command::new(program)
                .args(args)
                .spawn()
                .with_context(|| format!("starting `{program}`"))?,
        ),
        None => None,
    };
    let mut sigint = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let poll = Duration::from_secs_f64(a.poll.clamp(0.05, 3600.0));
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    let end = loop {
        tokio::select! {
            _ = tick.tick() => {}
            status = wait(&mut child), if child.is_some() => {
                break End::Command(status.context("waiting for the command")?);
            }
            _ = sigint.recv() => {
                // A terminal's Ctrl-C reaches the command too (one process
                // group); it decides when to stop.
                if child.is_none() {
                    break End::Interrupted(EXIT_INTERRUPTED);
                }
            }
            _ = sigterm.recv() => match &child {
                Some(c) => forward_sigterm(c),
                None => break End::Interrupted(EXIT_TERMINATED),
            },
        }
        match f.look(false, child.is_some()).await {
            Ok(Look::At(last)) if a.epochs.is_some_and(|n| last + 1 >= n) => break End::Epochs,
            Ok(Look::AlreadyDone) => break End::AlreadyDone,
            Ok(_) => failing = false,
            Err(e) if fatal(&e) => match child.is_some() {
                true => break End::Stopped(e),
                false => return Err(e),
            },
            Err(e) => {
                if !failing {
                    eprintln!("warning: {e:#}; trying again every {poll:?}");
                }
                failing = true;
            }
        }
    };
    match end {
        End::AlreadyDone => match child {
            Some(_) => {
                eprintln!("the command runs on; nothing is sent");
                Ok(exit_code(wait(&mut child).await?))
            }
            None => Ok(EXIT_OK),
        },
        End::Stopped(e) => {
            eprintln!("error: {e:#}");
            eprintln!("maelab stops following; the command runs on");
            let status = wait(&mut child).await?;
            Ok(if status.success() {
                EXIT_USAGE
            } else {
                exit_code(status)
            })
        }
        End::Interrupted(code) => {
            if let Err(e) = f.look(false, false).await {
                eprintln!("warning: {e:#}");
            }
            match f.run {
                Some(id) => eprintln!(
                    "stopped following: run {id} stays running (lost after {} s without a \
                     heartbeat); `maelab import --follow {dir}` resumes it, `maelab import {dir}` \
                     finishes it",
                    a.lost_after,
                    dir = f.shown.display()
                ),
                None => eprintln!("stopped following before the first epoch; nothing imported"),
            }
            Ok(code)
        }
        End::Epochs => {
            if f.last_look(false).await? == Look::AlreadyDone {
                return Ok(EXIT_OK);
            }
            let Some(id) = f.run else {
                bail!("no run to finish");
            };
            f.finish(id, None).await?;
            println!("{}", f.summary(id, "succeeded"));
            Ok(EXIT_OK)
        }
        End::Command(status) => {
            let look = f.last_look(true).await;
            let reason = (!status.success()).then(|| {
                format!(
                    "`{}` exited with {}",
                    a.command.join(" "),
                    match (status.code(), status.signal()) {
                        (Some(c), _) => format!("status {c}"),
                        (None, Some(s)) => format!("signal {s}"),
                        (None, None) => "an unknown status".into(),
                    }
                )
            });
            let code = exit_code(status);
            match (look?, f.run) {
                (Look::AlreadyDone, _) => Ok(code),
                (_, None) => {
                    eprintln!(
                        "the command ended without an epoch record in {}; nothing imported \
                         (is the folder its --output_dir?)",
                        f.log_shown().display()
                    );
                    Ok(if status.success() { EXIT_USAGE } else { code })
                }
                (_, Some(id)) => {
                    let failed = reason.is_some();
                    f.finish(id, reason).await?;
                    println!(
                        "{}",
                        f.summary(id, if failed { "failed" } else { "succeeded" })
                    );
                    Ok(code)
                }
            }
        }
    }
}

/// The command's exit; never, without one.
async fn wait(child: &mut Option<tokio::process::Child>) -> std::io::Result<ExitStatus> {
    match child {
        Some(c) => c.wait().await,
        None => std::future::pending().await,
    }
}

/// Pass a SIGTERM on to the command: it decides how to stop, and the follow
/// ends with it.
fn forward_sigterm(child: &tokio::process::Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_lines_count_until_the_training_ends() {
        let bytes = b"{\"epoch\": 0}\n{\"epoch\": 1}\n{\"epo";
        assert_eq!(
            whole_part(bytes, false),
            b"{\"epoch\": 0}\n{\"epoch\": 1}\n"
        );
        assert_eq!(whole_part(bytes, true), &bytes[..]);
        assert_eq!(whole_part(b"{\"epo", false), b"");
    }

    #[test]
    fn bad_lines_count_once_a_good_record_follows_them() {
        let log = mae_log::parse(b"{\"train_loss\": 1, \"epoch\": 0}\n{\"train_loss\": 1,\n");
        assert_eq!(log.bad.len(), 1, "{log:?}");
        assert!(settled_bad(&log, false).is_empty());
        assert_eq!(settled_bad(&log, true).len(), 1);
        let log = mae_log::parse(
            b"{\"train_loss\": 1, \"epoch\": 0}\nnot json\n{\"train_loss\": 1, \"epoch\": 1}\n",
        );
        assert_eq!(settled_bad(&log, false).len(), 1);
    }

    #[test]
    fn later_records_win() {
        let log = mae_log::parse(
            b"{\"train_loss\": 2.0, \"epoch\": 0}\n{\"train_loss\": 1.5, \"epoch\": 0}\n",
        );
        let p = latest_points(&log);
        assert_eq!(p.len(), 1);
        assert_eq!(p[&("train_loss".to_string(), 0)], 1.5);
    }

    #[test]
    fn refusals_end_the_follow_and_the_rest_is_retried() {
        let api = |status| {
            anyhow::Error::new(ApiError {
                status,
                body: crate::http::ErrorBody {
                    error: "x".into(),
                    field: None,
                    reason: "y".into(),
                },
            })
            .context("sending points")
        };
        assert!(fatal(&api(409)));
        assert!(fatal(&api(404)));
        assert!(!fatal(&api(429)));
        assert!(!fatal(&api(503)));
        assert!(fatal(&Stop("replaced".into()).into()));
        assert!(!fatal(&anyhow::anyhow!("cannot reach the maelab server")));
    }

    #[test]
    fn exit_codes_are_the_shells() {
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
    }
}
