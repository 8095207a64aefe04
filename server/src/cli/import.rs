//! `maelab import DIR...`: folders of the official MAE output (`log.txt` and
//! `checkpoint-N.pth`, facebookresearch/mae `--output_dir`) as external runs
//! through the ingest API (docs/ingest.md), one run per folder.
//!
//! - Every folder is read and checked before anything is sent: a `log.txt`
//!   with bad lines ([`super::mae_log`]) refuses the whole import, naming
//!   every bad line, unless `--skip-bad-lines`.
//! - Pretraining and finetuning are told apart by the keys (`test_loss` or
//!   `test_acc1`: finetune); `--pretrain-of RUN` links finetunes only.
//! - Idempotent: `client_run_id` is `mae-log:` + sha256(folder name + the
//!   log's first line), which stays the same while a training appends epochs,
//!   so the second import of a folder finds the run (200, not 201) and sends
//!   nothing; an import cut short, or a `--follow` ([`super::follow`])
//!   stopped, finds its run still running and completes it (points are
//!   upserts, checkpoints already stored with the same sha256 are not sent
//!   again). A finished run whose log has grown since is refused, naming both
//!   (a finished run takes no more points). Runs imported before this key
//!   (`mae-import:` + sha256(name + whole log)) are looked up first.
//! - Points (step = epoch) go in batches of at most 1,000; checkpoints are
//!   streamed from disk (never unpickled) with their sha256, those over the
//!   server's artifact limit skipped with a warning; then the run finishes
//!   `succeeded`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use maelab_core::db::ingest::MAX_POINTS;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use super::mae_log::{self, Log};
use super::{ApiError, Client, Conn, EXIT_OK, EXIT_USAGE};
use crate::http::api::ingest::MAX_ARTIFACT_BYTES;
use crate::read_model::artifacts::valid_name;

/// Shown under `maelab import --help`.
pub const AFTER_HELP: &str = "Exit codes: 0 every folder imported (or imported before: nothing \
is sent twice); 3 usage error, a folder refused (no log.txt, bad lines without --skip-bad-lines, \
no epochs, --pretrain-of on a pretraining log: nothing is sent then), a refused request or no \
connection (a run cut short stays running; import the folder again to complete it). \
With --follow: 0 the run finished (--epochs reached, or the command succeeded); the command's \
own code when it failed (the run is marked failed); 130 interrupted (the run stays running: \
--follow again resumes it, a plain import finishes it); 3 as above.";

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Folders of the official MAE code's output (its --output_dir): log.txt,
    /// and checkpoint-N.pth files listed as checkpoints (never unpickled).
    #[arg(required = true, value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// The pretraining run (an id) these finetuning logs start from.
    #[arg(long, value_name = "RUN")]
    pub pretrain_of: Option<String>,
    /// Import the good lines of a log.txt that has bad ones, listing what was
    /// skipped (without it such a folder is refused).
    #[arg(long)]
    pub skip_bad_lines: bool,
    /// Leave the checkpoint-N.pth files out.
    #[arg(long)]
    pub no_checkpoints: bool,
    /// The run's name (one folder only; default: the folder's name).
    #[arg(long)]
    pub name: Option<String>,
    /// A tag for the runs (repeat for more).
    #[arg(long = "tag", value_name = "T")]
    pub tags: Vec<String>,
    /// Follow a training while it writes (one folder): the run appears with
    /// the first epoch and is sent each new one and each checkpoint its
    /// epoch's record completes, heartbeating between them. It ends with
    /// --epochs, with the command given after `--`, or when interrupted.
    #[arg(long)]
    pub follow: bool,
    /// With --follow: the training's epochs; the run finishes `succeeded`
    /// when epoch N-1 is logged.
    #[arg(long, value_name = "N", requires = "follow", value_parser = clap::value_parser!(u32).range(1..=i32::MAX as i64))]
    pub epochs: Option<u32>,
    /// With --follow: seconds between looks at the folder (polling works on
    /// the network filesystems clusters write to).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 5.0,
        requires = "follow",
        value_parser = super::parse_seconds
    )]
    pub poll: f64,
    /// With --follow: after this many seconds without a new epoch or
    /// checkpoint the heartbeats stop, so the server marks the run lost (it
    /// runs again when epochs resume). Not while the command runs.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 7200.0,
        requires = "follow",
        value_parser = super::parse_seconds
    )]
    pub stall: f64,
    /// With --follow: the run's lost_after_seconds (heartbeats go every
    /// quarter of it).
    #[arg(long, value_name = "SECONDS", default_value_t = 600, requires = "follow", value_parser = clap::value_parser!(i32).range(10..=604_800))]
    pub lost_after: i32,
    /// With --follow: the training command to run (after `--`); the run
    /// finishes when it exits, `succeeded` on status 0, else `failed`.
    #[arg(last = true, value_name = "COMMAND", requires = "follow")]
    pub command: Vec<String>,
    #[command(flatten)]
    pub conn: Conn,
}

/// A checkpoint file to upload.
#[derive(Debug)]
pub(super) struct Checkpoint {
    pub path: PathBuf,
    pub name: String,
    pub epoch: Option<i32>,
}

/// A folder read and checked, ready to send.
#[derive(Debug)]
struct Folder {
    dir: PathBuf,
    name: String,
    log: Log,
    log_sha256: String,
    client_run_id: String,
    legacy_client_run_id: String,
    checkpoints: Vec<Checkpoint>,
}

impl Folder {
    fn kind(&self) -> &'static str {
        if self.log.is_finetune() {
            "finetune"
        } else {
            "pretrain"
        }
    }
}

/// The idempotency key of a folder's run: its name and its log's first line
/// (without the line end), which a training appending epochs leaves alone,
/// so a log imported again grown, or followed, finds the same run.
pub fn client_run_id(folder_name: &str, log: &[u8]) -> String {
    let first = log.split(|b| *b == b'\n').next().unwrap_or_default();
    let first = first.strip_suffix(b"\r").unwrap_or(first);
    let mut h = Sha256::new();
    h.update(folder_name.as_bytes());
    h.update(b"\n");
    h.update(first);
    format!("mae-log:{}", hex::encode(h.finalize()))
}

/// A folder's last component (of its canonical path), as the run's name and
/// key take it.
pub(super) fn folder_name(dir: &Path) -> String {
    dir.file_name()
        .map_or_else(|| "/".to_string(), |n| n.to_string_lossy().into_owned())
}

/// The key imports used before [`client_run_id`]: the name and the whole log.
fn legacy_client_run_id(folder_name: &str, log: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(folder_name.as_bytes());
    h.update(log);
    format!("mae-import:{}", hex::encode(h.finalize()))
}

/// Read and check one folder; warnings and notes go to stderr, a refusal is
/// the error.
fn prepare(dir: &Path, a: &ImportArgs) -> anyhow::Result<Folder> {
    let canonical = dir
        .canonicalize()
        .with_context(|| format!("cannot open {}", dir.display()))?;
    if !canonical.is_dir() {
        bail!("not a folder");
    }
    let folder_name = folder_name(&canonical);
    let log_path = canonical.join("log.txt");
    let bytes = std::fs::read(&log_path)
        .with_context(|| format!("no log.txt to read ({})", log_path.display()))?;
    let log = mae_log::parse(&bytes);
    let shown = dir.join("log.txt");
    if !log.bad.is_empty() {
        let lines: Vec<String> = log.bad.iter().map(|b| format!("  {b}")).collect();
        if !a.skip_bad_lines {
            bail!(
                "{} has {} bad line{} (--skip-bad-lines imports the rest):\n{}",
                shown.display(),
                log.bad.len(),
                if log.bad.len() == 1 { "" } else { "s" },
                lines.join("\n")
            );
        }
        eprintln!(
            "{}: skipping {} bad line{}:\n{}",
            shown.display(),
            log.bad.len(),
            if log.bad.len() == 1 { "" } else { "s" },
            lines.join("\n")
        );
    }
    for note in log.notes() {
        eprintln!("{}: note: {note}", shown.display());
    }
    if log.records.is_empty() {
        bail!("{} has no epoch records", shown.display());
    }
    if a.pretrain_of.is_some() && !log.is_finetune() {
        bail!(
            "{} is a pretraining log (no test_loss or test_acc1); --pretrain-of links a \
             finetune to its pretraining: import this folder without it",
            shown.display()
        );
    }
    let checkpoints = if a.no_checkpoints {
        Vec::new()
    } else {
        checkpoints(&canonical, dir, &mut |_, why| eprintln!("warning: {why}"))?
    };
    Ok(Folder {
        dir: dir.to_path_buf(),
        client_run_id: client_run_id(&folder_name, &bytes),
        legacy_client_run_id: legacy_client_run_id(&folder_name, &bytes),
        name: a.name.clone().unwrap_or(folder_name),
        log_sha256: hex::encode(Sha256::digest(&bytes)),
        log,
        checkpoints,
    })
}

/// The folder's `checkpoint-*.pth` files in epoch order, less those the
/// server would refuse (warned about).
/// `skip` hears each file left out: its name and why.
pub(super) fn checkpoints(
    canonical: &Path,
    shown: &Path,
    skip: &mut dyn FnMut(&str, String),
) -> anyhow::Result<Vec<Checkpoint>> {
    let mut found = Vec::new();
    for entry in
        std::fs::read_dir(canonical).with_context(|| format!("listing {}", shown.display()))?
    {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(middle) = name
            .strip_prefix("checkpoint-")
            .and_then(|n| n.strip_suffix(".pth"))
        else {
            continue;
        };
        let meta = std::fs::metadata(entry.path())?;
        if !meta.is_file() {
            continue;
        }
        let path = shown.join(&name);
        if !valid_name(&name) {
            skip(
                &name,
                format!(
                    "skipping {}: not a name the server stores (letters, digits, `.`, `_`, `-`)",
                    path.display()
                ),
            );
            continue;
        }
        if meta.len() > MAX_ARTIFACT_BYTES as u64 {
            skip(
                &name,
                format!(
                    "skipping {}: {} MiB is over the server's limit of {} MiB per artifact",
                    path.display(),
                    meta.len().div_ceil(1 << 20),
                    MAX_ARTIFACT_BYTES >> 20
                ),
            );
            continue;
        }
        let epoch = middle.parse::<i32>().ok().filter(|e| *e >= 0);
        found.push(Checkpoint {
            path: entry.path(),
            name,
            epoch,
        });
    }
    found.sort_by(|x, y| {
        (x.epoch.is_none(), x.epoch, &x.name).cmp(&(y.epoch.is_none(), y.epoch, &y.name))
    });
    Ok(found)
}

/// Bytes read from disk per chunk, hashing or uploading.
const CHUNK: usize = 1 << 20;

/// A file's sha256 (hex) and length, read in chunks.
async fn sha256_file(path: &Path) -> anyhow::Result<(String, u64)> {
    let mut file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut len = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .await
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            return Ok((hex::encode(hasher.finalize()), len));
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
}

/// A file as a streamed request body, read in chunks.
async fn file_body(path: &Path) -> anyhow::Result<reqwest::Body> {
    let file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let stream = futures::stream::try_unfold(file, |mut file| async move {
        let mut buf = vec![0u8; CHUNK];
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok::<_, std::io::Error>(None);
        }
        buf.truncate(n);
        Ok(Some((buf, file)))
    });
    Ok(reqwest::Body::wrap_stream(stream))
}

#[derive(Debug, Serialize)]
pub(super) struct PointOut<'a> {
    pub key: &'a str,
    pub step: u32,
    pub value: f64,
}

/// Send `points` to run `id` in batches the server takes.
pub(super) async fn post_points(
    client: &Client,
    id: uuid::Uuid,
    points: &[PointOut<'_>],
) -> anyhow::Result<()> {
    for (i, batch) in points.chunks(MAX_POINTS).enumerate() {
        client
            .post::<_, Value>(
                &format!("/api/v1/runs/{id}/metrics"),
                Some(&json!({"points": batch})),
            )
            .await
            .with_context(|| format!("sending points (batch {})", i + 1))?;
    }
    Ok(())
}

pub async fn run(a: ImportArgs) -> anyhow::Result<u8> {
    if a.name.is_some() && a.dirs.len() > 1 {
        bail!(
            "--name names one run: give one folder with it (without it each run is named after its folder)"
        );
    }
    let parent = a
        .pretrain_of
        .as_deref()
        .map(|r| super::runs::parse_id(r, "run"))
        .transpose()?;
    if a.follow {
        if a.dirs.len() > 1 {
            bail!("--follow follows one folder: start one `maelab import --follow` per training");
        }
        let client = writer(&a)?;
        check_parent(&client, parent).await?;
        return super::follow::run(&a, &client, parent).await;
    }
    let mut folders = Vec::new();
    let mut refused = 0;
    for dir in &a.dirs {
        match prepare(dir, &a) {
            Ok(f) => folders.push(f),
            Err(e) => {
                eprintln!("error: {}: {e:#}", dir.display());
                refused += 1;
            }
        }
    }
    if refused > 0 {
        eprintln!(
            "{refused} of {} folder{} refused; nothing imported",
            a.dirs.len(),
            if a.dirs.len() == 1 { "" } else { "s" }
        );
        return Ok(EXIT_USAGE);
    }
    let client = writer(&a)?;
    check_parent(&client, parent).await?;
    let mut failed = 0;
    for f in &folders {
        match import(&client, f, &a.tags, parent).await {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("error: {}: {e:#}", f.dir.display());
                failed += 1;
            }
        }
    }
    Ok(if failed > 0 { EXIT_USAGE } else { EXIT_OK })
}

/// A client that may write: imports need a token.
fn writer(a: &ImportArgs) -> anyhow::Result<Client> {
    if a.conn.token.as_deref().is_none_or(str::is_empty) {
        bail!(
            "an import writes runs: set MAELAB_TOKEN or --token (maelab token create --name import)"
        );
    }
    Client::new(&a.conn)
}

/// `--pretrain-of` names a run the server has.
async fn check_parent(client: &Client, parent: Option<uuid::Uuid>) -> anyhow::Result<()> {
    if let Some(p) = parent {
        client
            .get::<Value>(&format!("/api/v1/runs/{p}"))
            .await
            .with_context(|| format!("--pretrain-of {p}"))?;
    }
    Ok(())
}

/// A folder's run as the server has it: created now, or found.
pub(super) struct OpenRun {
    pub id: uuid::Uuid,
    /// The run as the server answered (a found run's status, epochs, parent).
    pub run: Value,
    pub created: bool,
}

/// The run this token imported under `legacy_key` before, if any.
async fn find_legacy(client: &Client, legacy_key: &str) -> anyhow::Result<Option<Value>> {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("client_run_id", legacy_key);
    match client
        .get::<Value>(&format!("/api/v1/runs/external?{}", q.finish()))
        .await
    {
        Ok(run) => Ok(Some(run)),
        Err(e)
            if e.downcast_ref::<ApiError>()
                .is_some_and(|a| a.status == 404) =>
        {
            Ok(None)
        }
        Err(e) => Err(e.context("looking for an earlier import")),
    }
}

/// Create the run `body` describes, or find the one created before with its
/// `client_run_id` (or, first, with `legacy_key`).
pub(super) async fn open_run(
    client: &Client,
    body: &Value,
    legacy_key: Option<&str>,
) -> anyhow::Result<OpenRun> {
    let found = match legacy_key {
        Some(k) => find_legacy(client, k).await?,
        None => None,
    };
    let (created, run) = match found {
        Some(run) => (false, run),
        None => {
            let (status, run): (u16, Value) = client
                .post_status("/api/v1/runs/external", body)
                .await
                .context("creating the run")?;
            (status == 201, run)
        }
    };
    let id = run["run_id"]
        .as_str()
        .and_then(|s| uuid::Uuid::parse_str(s).ok())
        .context("the server's answer has no run_id")?;
    Ok(OpenRun { id, run, created })
}

/// What a run found again asks for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Again {
    /// Running (cut short, or followed and stopped) or lost: send the rest.
    Complete,
    /// Finished with every epoch the log has: nothing to send.
    Done,
}

/// Decide about a run found again for a log with `epochs` epochs; a run
/// that cannot take what the log has now is the error.
pub(super) fn again(
    run: &Value,
    epochs: usize,
    dir: &Path,
    parent: Option<uuid::Uuid>,
) -> anyhow::Result<Again> {
    let id = run["run_id"].as_str().unwrap_or("?");
    match run["status"].as_str().unwrap_or("") {
        "succeeded" => {
            let had_epochs = run["epochs_done"].as_u64().unwrap_or(0);
            if had_epochs < epochs as u64 {
                bail!(
                    "run {id}, imported from this folder when its log had {had_epochs} epoch{}, \
                     is finished and takes no more; log.txt has {epochs} now (`maelab import \
                     --follow` keeps a run open while a training writes)",
                    if had_epochs == 1 { "" } else { "s" }
                );
            }
            let had = run["parent_run_id"].as_str().map(str::to_string);
            if had != parent.map(|p| p.to_string()) {
                eprintln!(
                    "warning: {}: imported before with parent {}; left unchanged",
                    dir.display(),
                    had.as_deref().unwrap_or("none")
                );
            }
            Ok(Again::Done)
        }
        "running" | "lost" => Ok(Again::Complete),
        other => {
            bail!("run {id}, imported from this folder before, is {other} and takes no more writes")
        }
    }
}

/// Send one folder; the summary line.
async fn import(
    client: &Client,
    f: &Folder,
    tags: &[String],
    parent: Option<uuid::Uuid>,
) -> anyhow::Result<String> {
    let folder = f.dir.canonicalize().unwrap_or_else(|_| f.dir.clone());
    let body = json!({
        "name": f.name,
        "tags": tags,
        "kind": f.kind(),
        "client_run_id": f.client_run_id,
        "parent_run": parent,
        "config": {
            "source": "mae-import",
            "folder": folder.to_string_lossy(),
            "log_sha256": f.log_sha256,
            "epochs": f.log.last_epoch().map_or(1, |e| u64::from(e) + 1),
        },
    });
    let OpenRun { id, run, created } =
        open_run(client, &body, Some(&f.legacy_client_run_id)).await?;
    if !created {
        match again(&run, f.log.epochs(), &f.dir, parent)? {
            Again::Done => {
                return Ok(format!(
                    "{id}  {}  already imported  {}",
                    f.kind(),
                    f.dir.display()
                ));
            }
            Again::Complete => eprintln!(
                "{}: run {id} was imported partly before; completing it",
                f.dir.display()
            ),
        }
    }
    send(client, f, id, !created)
        .await
        .with_context(|| format!("run {id} stays running until the same import completes it"))
}

/// (name, sha256) of the checkpoints stored for run `id`.
pub(super) async fn stored_checkpoints(
    client: &Client,
    id: uuid::Uuid,
) -> anyhow::Result<HashSet<(String, String)>> {
    let list: Vec<Value> = client
        .get(&format!("/api/v1/runs/{id}/artifacts?kind=checkpoint"))
        .await?;
    Ok(list
        .iter()
        .filter_map(|a| {
            Some((
                a["name"].as_str()?.to_string(),
                a["sha256"].as_str()?.to_string(),
            ))
        })
        .collect())
}

/// Upload one checkpoint unless `stored` has it with the same digest or it
/// grew past the server's limit (warned about); whether it was sent.
pub(super) async fn upload_checkpoint(
    client: &Client,
    id: uuid::Uuid,
    c: &Checkpoint,
    stored: &HashSet<(String, String)>,
) -> anyhow::Result<bool> {
    let (sha256, len) = sha256_file(&c.path).await?;
    if stored.contains(&(c.name.clone(), sha256.clone())) {
        return Ok(false);
    }
    if len > MAX_ARTIFACT_BYTES as u64 {
        eprintln!(
            "warning: skipping {}: it grew past the server's limit per artifact",
            c.path.display()
        );
        return Ok(false);
    }
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("kind", "checkpoint");
    if let Some(e) = c.epoch {
        q.append_pair("epoch", &e.to_string());
    }
    q.append_pair("sha256", &sha256);
    client
        .put_stream::<Value>(
            &format!("/api/v1/runs/{id}/artifacts/{}?{}", c.name, q.finish()),
            file_body(&c.path).await?,
            len,
            "application/octet-stream",
        )
        .await
        .with_context(|| format!("uploading {}", c.path.display()))?;
    Ok(true)
}

/// Points, checkpoints, finish.
async fn send(
    client: &Client,
    f: &Folder,
    id: uuid::Uuid,
    resumed: bool,
) -> anyhow::Result<String> {
    let points: Vec<PointOut> = f
        .log
        .points()
        .map(|(key, step, value)| PointOut { key, step, value })
        .collect();
    post_points(client, id, &points).await?;
    let distinct: HashSet<(&str, u32)> = points.iter().map(|p| (p.key, p.step)).collect();
    let stored = if resumed && !f.checkpoints.is_empty() {
        stored_checkpoints(client, id).await?
    } else {
        HashSet::new()
    };
    for c in &f.checkpoints {
        upload_checkpoint(client, id, c, &stored).await?;
    }
    client
        .post::<_, Value>(
            &format!("/api/v1/runs/{id}/finish"),
            Some(&json!({"status": "succeeded"})),
        )
        .await
        .context("finishing the run")?;
    Ok(format!(
        "{id}  {}  {} epochs  {} points  {} checkpoints  {}",
        f.kind(),
        f.log.epochs(),
        distinct.len(),
        f.checkpoints.len(),
        f.dir.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_run_id_is_the_folder_name_and_first_line_hashed() {
        let a = client_run_id("out", b"{\"epoch\": 0}\n");
        assert!(a.starts_with("mae-log:"));
        assert_eq!(a.len(), "mae-log:".len() + 64);
        // A log that grew, or whose first line is still being written, or
        // was written on Windows, is the same run.
        for same in [
            &b"{\"epoch\": 0}\n{\"epoch\": 1}\n"[..],
            b"{\"epoch\": 0}",
            b"{\"epoch\": 0}\r\n{\"epoch\": 1}\r\n",
        ] {
            assert_eq!(a, client_run_id("out", same));
        }
        assert_ne!(a, client_run_id("out2", b"{\"epoch\": 0}\n"));
        assert_ne!(a, client_run_id("out", b"{\"epoch\": 1}\n"));
        // Name and line are kept apart: moving a byte across is another run.
        assert_ne!(client_run_id("ab", b"c\n"), client_run_id("a", b"bc\n"));
    }

    #[test]
    fn the_legacy_key_hashes_the_whole_log() {
        let a = legacy_client_run_id("out", b"{\"epoch\": 0}\n");
        assert!(a.starts_with("mae-import:"));
        assert_ne!(
            a,
            legacy_client_run_id("out", b"{\"epoch\": 0}\n{\"epoch\": 1}\n")
        );
    }
}
