//! `maelab runs list|show|export` and `maelab cancel`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;

use super::{Client, Conn, EXIT_OK};
use crate::read_model::{RunDetail, RunPage};

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// List runs (newest first), with filters.
    List(ListArgs),
    /// Show one run.
    Show(ShowArgs),
    /// Print (or write) a run's epoch metrics as CSV, JSON or the MAE log.txt.
    Export(ExportArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long)]
    pub status: Option<String>,
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long)]
    pub kind: Option<String>,
    #[arg(long)]
    pub tag: Option<String>,
    /// Text search in name, preset, tags and id.
    #[arg(long, short)]
    pub q: Option<String>,
    /// Column to sort by (created_at, name, best_acc1, ...).
    #[arg(long)]
    pub sort: Option<String>,
    /// asc or desc.
    #[arg(long)]
    pub order: Option<String>,
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
    #[arg(long, default_value_t = 0)]
    pub offset: i64,
    /// Print the JSON page instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    pub run_id: String,
    /// Print the JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    Csv,
    Json,
}

/// What `runs export` (and `export`) write.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RunExportFormat {
    Csv,
    Json,
    /// The official MAE log.txt: one JSON object per epoch, as Python's
    /// `json.dumps` writes it.
    MaeLog,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    pub run_id: String,
    #[arg(long, value_enum, default_value_t = RunExportFormat::Csv)]
    pub format: RunExportFormat,
    /// Write here instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    pub run_id: String,
    #[command(flatten)]
    pub conn: Conn,
}

/// A query string of the given pairs, values percent-encoded.
fn query(pairs: &[(&str, Option<String>)]) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if let Some(v) = v {
            ser.append_pair(k, v);
        }
    }
    ser.finish()
}

/// An id (of a `what`: run, study) from the command line, checked before
/// any request.
pub(super) fn parse_id(raw: &str, what: &str) -> anyhow::Result<uuid::Uuid> {
    uuid::Uuid::parse_str(raw.trim())
        .with_context(|| format!("`{raw}` is not a {what} id (a UUID)"))
}

/// A run id from the command line.
fn run_id(raw: &str) -> anyhow::Result<uuid::Uuid> {
    parse_id(raw, "run")
}

/// `v` with `digits` decimals, or `-`.
pub(super) fn num(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.digits$}"))
}

/// Fetch an export from the API, from `csv_path` as the CSV the server
/// writes or from `json_path` as JSON, pretty-printed; print it, or write it
/// to `output`.
pub(super) async fn export_to(
    client: &Client,
    format: ExportFormat,
    csv_path: &str,
    json_path: &str,
    output: Option<PathBuf>,
) -> anyhow::Result<u8> {
    let text = match format {
        ExportFormat::Csv => client.get_text(csv_path).await?,
        ExportFormat::Json => {
            let v: Value = client.get(json_path).await?;
            serde_json::to_string_pretty(&v)? + "\n"
        }
    };
    match output {
        Some(path) => {
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        None => print!("{text}"),
    }
    Ok(EXIT_OK)
}

pub async fn run(command: RunsCommand) -> anyhow::Result<u8> {
    match command {
        RunsCommand::List(a) => list(a).await,
        RunsCommand::Show(a) => show(a).await,
        RunsCommand::Export(a) => export(a).await,
    }
}

async fn list(a: ListArgs) -> anyhow::Result<u8> {
    let client = Client::new(&a.conn)?;
    let q = query(&[
        ("status", a.status),
        ("model", a.model),
        ("kind", a.kind),
        ("tag", a.tag),
        ("q", a.q),
        ("sort", a.sort),
        ("order", a.order),
        ("limit", Some(a.limit.to_string())),
        ("offset", Some(a.offset.to_string())),
    ]);
    let page: Value = client.get(&format!("/api/v1/runs?{q}")).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&page)?);
        return Ok(EXIT_OK);
    }
    let page: RunPage = serde_json::from_value(page).context("decoding the run list")?;
    println!(
        "{:<36}  {:<10}  {:<8}  {:<8}  {:>7}  {:>6}  {:>8}  NAME",
        "RUN", "STATUS", "MODEL", "KIND", "EPOCHS", "TOP1", "LOSS"
    );
    for r in &page.runs {
        println!(
            "{:<36}  {:<10}  {:<8}  {:<8}  {:>7}  {:>6}  {:>8}  {}",
            r.run_id,
            r.status,
            r.model,
            r.kind,
            format!("{}/{}", r.epochs_done, r.epochs_total),
            num(r.best_acc1, 2),
            num(r.last_loss, 4),
            r.name
        );
    }
    eprintln!(
        "{} of {} runs (offset {})",
        page.runs.len(),
        page.total,
        page.offset
    );
    Ok(EXIT_OK)
}

async fn show(a: ShowArgs) -> anyhow::Result<u8> {
    let id = run_id(&a.run_id)?;
    let client = Client::new(&a.conn)?;
    let run: Value = client.get(&format!("/api/v1/runs/{id}")).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&run)?);
        return Ok(EXIT_OK);
    }
    let r: RunDetail = serde_json::from_value(run).context("decoding the run")?;
    let s = &r.summary;
    println!("run        {}", s.run_id);
    println!("name       {}", s.name);
    println!(
        "status     {}{}",
        s.status,
        s.error
            .as_deref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default()
    );
    println!("model      {} {} {}", s.model, s.kind, s.preset);
    println!("epochs     {}/{}", s.epochs_done, s.epochs_total);
    println!("best top-1 {}", num(s.best_acc1, 2));
    println!("last loss  {}", num(s.last_loss, 4));
    println!(
        "duration   {}",
        s.duration_seconds.map_or_else(
            || "-".to_string(),
            |d| crate::format::human_duration(d.round() as i64)
        )
    );
    println!("worker     {}", s.worker.as_deref().unwrap_or("-"));
    if let Some(p) = r.queue_position {
        println!("queue      position {p}");
    }
    Ok(EXIT_OK)
}

pub async fn export(a: ExportArgs) -> anyhow::Result<u8> {
    let id = run_id(&a.run_id)?;
    let client = Client::new(&a.conn)?;
    let format = match a.format {
        RunExportFormat::Csv => ExportFormat::Csv,
        RunExportFormat::Json => ExportFormat::Json,
        RunExportFormat::MaeLog => {
            let bytes = client
                .get_bytes(&format!("/api/v1/runs/{id}/artifacts/log.txt"))
                .await?;
            match a.output {
                Some(path) => std::fs::write(&path, bytes)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => std::io::stdout()
                    .write_all(&bytes)
                    .context("writing to standard output")?,
            }
            return Ok(EXIT_OK);
        }
    };
    let path = format!("/api/v1/runs/{id}/epochs");
    export_to(
        &client,
        format,
        &format!("{path}?format=csv"),
        &path,
        a.output,
    )
    .await
}

pub async fn cancel(a: CancelArgs) -> anyhow::Result<u8> {
    let id = run_id(&a.run_id)?;
    let client = Client::new(&a.conn)?;
    let answer: Value = client
        .post::<Value, Value>(&format!("/api/v1/runs/{id}/cancel"), None)
        .await?;
    match answer["outcome"].as_str() {
        Some("requested") => eprintln!("cancel requested: the worker stops at its next heartbeat"),
        _ => eprintln!("cancelled"),
    }
    Ok(EXIT_OK)
}
