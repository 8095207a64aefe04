//! `maelab study submit|show|export|cancel|retry`: studies from a CI.
//!
//! `submit study.toml` checks the document and every `--fail-unless` claim
//! locally (the same `StudySpec` code the server runs), so a typo is refused
//! before anything is queued; `--preview` prints the runs the study would
//! queue; `--wait` follows the study's event stream, prints the results
//! table, and judges each claim by the bootstrap interval of its difference
//! (`read_model::study_results::Claim`), so a pipeline can gate on a
//! comparison across seeds rather than on one run.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use maelab_core::ConfigErrors;
use maelab_core::study::StudySpec;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use uuid::Uuid;

use super::runs::{ExportFormat, export_to, num, parse_id};
use super::sse::{Follow, SseEvent, Step};
use super::{Client, Conn, EXIT_BAR_MISSED, EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE};
use crate::read_model::studies::{ChainRow, ChainRun, METRICS, MetricDef, metric};
use crate::read_model::study_results::Claim;

/// Shown under `maelab study submit --help`.
pub const STUDY_EXIT_CODES: &str = "Exit codes: 0 submitted (with --wait: every chain succeeded \
and every --fail-unless claim is supported); 1 chains failed or were cancelled (with --wait); \
2 a --fail-unless claim is not supported (the 95% interval of the difference does not lie on \
the claimed side of 0, or too few chains succeeded to judge it); 3 usage error, invalid study, \
unknown arm or metric in a claim, refused request or no connection (nothing is submitted).";

#[derive(Debug, Subcommand)]
pub enum StudyCommand {
    /// Submit a study from a TOML file; with --wait, follow it to its end,
    /// print the results and judge the --fail-unless claims.
    #[command(after_help = STUDY_EXIT_CODES)]
    Submit(SubmitArgs),
    /// Show a study: its chains and the results table.
    Show(ShowArgs),
    /// Print a study's per-seed or per-arm rows as CSV or JSON.
    Export(ExportArgs),
    /// Cancel a study: queued runs at once, running ones at their next heartbeat.
    Cancel(IdArgs),
    /// Retry a study's failed or cancelled chains, or one chain (--arm, --seed).
    Retry(RetryArgs),
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The study document (TOML; the API's JSON keys).
    pub file: PathBuf,
    /// Follow the study until every chain has ended, then print its results.
    #[arg(long, conflicts_with = "preview")]
    pub wait: bool,
    /// A claim the results must support, `ARM > ARM on METRIC` (or `<`):
    /// the 95% bootstrap interval of the difference of means must lie
    /// entirely on that side of 0. Implies --wait; exit 2 if not supported.
    /// Repeatable.
    #[arg(long = "fail-unless", value_name = "CLAIM", value_parser = Claim::parse)]
    pub fail_unless: Vec<Claim>,
    /// Print the runs the study would queue, and submit nothing.
    #[arg(long)]
    pub preview: bool,
    /// Seconds between two looks at the study while waiting, if its event
    /// stream is unavailable (the stream is followed otherwise).
    #[arg(long, default_value_t = 5.0, value_parser = super::parse_seconds)]
    pub poll: f64,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    pub study_id: String,
    /// Print the API's JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportRows {
    /// One row per chain and metric.
    Seeds,
    /// One row per arm and metric, with the difference to the baseline.
    Aggregate,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    pub study_id: String,
    #[arg(long, value_enum, default_value_t = ExportFormat::Csv)]
    pub format: ExportFormat,
    #[arg(long, value_enum, default_value_t = ExportRows::Seeds)]
    pub rows: ExportRows,
    /// Write here instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    pub study_id: String,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    pub study_id: String,
    /// Retry only this arm's chain of --seed.
    #[arg(long, requires = "seed")]
    pub arm: Option<String>,
    #[arg(long, requires = "arm")]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub conn: Conn,
}

pub async fn run(command: StudyCommand) -> anyhow::Result<u8> {
    match command {
        StudyCommand::Submit(a) => submit(a).await,
        StudyCommand::Show(a) => show(a).await,
        StudyCommand::Export(a) => export(a).await,
        StudyCommand::Cancel(a) => cancel(a).await,
        StudyCommand::Retry(a) => retry(a).await,
    }
}

/// A study id from the command line, checked before any request.
fn study_id(raw: &str) -> anyhow::Result<Uuid> {
    parse_id(raw, "study")
}

fn report_invalid(file: &std::path::Path, errors: &ConfigErrors) {
    eprintln!("error: {} is not a valid study:", file.display());
    let mut shown: Vec<String> = Vec::new();
    for e in &errors.0 {
        let line = e.to_string();
        if !shown.contains(&line) {
            eprintln!("  {line}");
            shown.push(line);
        }
    }
}

async fn submit(args: SubmitArgs) -> anyhow::Result<u8> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    // The server's own checks, here first: a bad study or claim queues nothing.
    let spec = match StudySpec::from_toml_str(&text) {
        Ok(s) => s,
        Err(e) => {
            report_invalid(&args.file, &e);
            return Ok(EXIT_USAGE);
        }
    };
    let expanded = match spec.expand(usize::MAX) {
        Ok(x) => x,
        Err(e) => {
            report_invalid(&args.file, &e);
            return Ok(EXIT_USAGE);
        }
    };
    let arms: Vec<String> = expanded.arms.iter().map(|a| a.name.clone()).collect();
    for claim in &args.fail_unless {
        if let Err(e) = claim.check(&arms) {
            eprintln!("error: --fail-unless: {e}; nothing was submitted");
            return Ok(EXIT_USAGE);
        }
    }
    // The document as the API takes it: the TOML's own tables, as JSON.
    let doc: toml::Value = toml::from_str(&text)
        .with_context(|| format!("{} is not valid TOML", args.file.display()))?;
    let body = serde_json::to_value(doc).context("converting the study to JSON")?;
    let client = Client::new(&args.conn)?;
    if args.preview {
        let preview: Preview = match client.post("/api/v1/studies/preview", Some(&body)).await {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: the study was refused: {e:#}");
                return Ok(EXIT_USAGE);
            }
        };
        print_preview(&preview);
        return Ok(EXIT_OK);
    }
    let created: Value = match client.post("/api/v1/studies", Some(&body)).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: the study was not submitted: {e:#}");
            return Ok(EXIT_USAGE);
        }
    };
    let study = StudyView::from_value(created)?;
    println!("{}", study.study_id);
    eprintln!(
        "submitted {} ({} arms x {} seeds, {} runs)",
        study.name,
        arms.len(),
        expanded.seeds.len(),
        expanded.run_count()
    );
    if !args.wait && args.fail_unless.is_empty() {
        return Ok(EXIT_OK);
    }
    let poll = Duration::from_secs_f64(args.poll.clamp(0.1, 600.0));
    wait(&client, study.study_id, poll).await?;
    let done: Value = client
        .get(&format!("/api/v1/studies/{}", study.study_id))
        .await?;
    let done = StudyView::from_value(done)?;
    print_results(&done);
    Ok(judge(&done, &args.fail_unless))
}

/// Follow the study's stream (or, while it is down, its detail) until no
/// run or calibration is active and the status is settled; one line per
/// chain state change.
async fn wait(client: &Client, id: Uuid, poll: Duration) -> anyhow::Result<()> {
    let mut follow = Follow::new(client.clone(), format!("/api/v1/studies/{id}/events"), poll);
    let mut seen: HashMap<(String, i64), String> = HashMap::new();
    let mut status = String::new();
    loop {
        let view = match follow.next().await? {
            Step::Event(SseEvent { event, data, .. }) if event == "progress" => {
                match serde_json::from_str::<Value>(&data)
                    .map_err(anyhow::Error::from)
                    .and_then(StudyView::from_value)
                {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::debug!(error = %e, "undecodable progress event");
                        continue;
                    }
                }
            }
            Step::Event(_) => continue,
            Step::Look => {
                let got = client
                    .get::<Value>(&format!("/api/v1/studies/{id}"))
                    .await
                    .and_then(StudyView::from_value);
                match got {
                    Ok(v) => {
                        follow.looked(Ok(()))?;
                        v
                    }
                    Err(e) => {
                        follow.looked(Err(e))?;
                        continue;
                    }
                }
            }
        };
        for c in &view.chains {
            let key = (c.arm.clone(), c.seed);
            if seen.get(&key) != Some(&c.status) {
                let why = c
                    .error
                    .as_deref()
                    .or_else(|| c.runs().find_map(|r| r.error.as_deref()))
                    .filter(|_| matches!(c.status.as_str(), "failed" | "cancelled"))
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default();
                eprintln!("{} seed {}: {}{why}", c.arm, c.seed, c.status);
                seen.insert(key, c.status.clone());
            }
        }
        if view.status != status {
            status.clone_from(&view.status);
            eprintln!(
                "study {id}: {} ({} of {} chains succeeded, {} failed, {} active)",
                view.status,
                view.succeeded(),
                view.chains.len(),
                view.failed(),
                view.active
            );
        }
        if view.settled() {
            return Ok(());
        }
    }
}

/// The exit code: 2 if a claim is not supported, else 1 if a chain failed or
/// was cancelled, else 0. Prints each claim's comparison.
fn judge(study: &StudyView, claims: &[Claim]) -> u8 {
    let rows: Vec<ChainRow> = study.chains.iter().map(ChainView::to_row).collect();
    let mut unsupported = 0;
    for claim in claims {
        let text = format!(
            "{} {} {} on {}",
            claim.arm,
            if claim.greater { ">" } else { "<" },
            claim.other,
            claim.metric
        );
        let digits = metric(&claim.metric).map_or(2, |m| m.digits);
        match claim.judge(&rows) {
            (Some(c), ok) => {
                eprintln!(
                    "claim `{text}`: {}: {} - {} = {} (95% CI {} to {}{}; n = {} vs {})",
                    if ok { "supported" } else { "NOT supported" },
                    claim.arm,
                    claim.other,
                    signed(c.diff, digits),
                    signed(c.ci_low, digits),
                    signed(c.ci_high, digits),
                    c.p_value
                        .map(|p| format!(", Welch p = {p:.3}"))
                        .unwrap_or_default(),
                    c.n_arm,
                    c.n_base
                );
                if !ok {
                    unsupported += 1;
                }
            }
            (None, _) => {
                let n = |arm: &str| {
                    rows.iter()
                        .filter(|r| r.arm == arm && r.values.contains_key(claim.metric.as_str()))
                        .count()
                };
                eprintln!(
                    "claim `{text}`: NOT supported: cannot be judged with n = {} vs {} succeeded chains",
                    n(&claim.arm),
                    n(&claim.other)
                );
                unsupported += 1;
            }
        }
    }
    let failed = study.failed();
    if unsupported > 0 {
        EXIT_BAR_MISSED
    } else if failed > 0 {
        eprintln!(
            "study {}: {failed} of {} chains failed or were cancelled",
            study.study_id,
            study.chains.len()
        );
        EXIT_RUN_FAILED
    } else {
        EXIT_OK
    }
}

async fn show(a: ShowArgs) -> anyhow::Result<u8> {
    let id = study_id(&a.study_id)?;
    let client = Client::new(&a.conn)?;
    let raw: Value = client.get(&format!("/api/v1/studies/{id}")).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&raw)?);
        return Ok(EXIT_OK);
    }
    let s = StudyView::from_value(raw)?;
    println!("study      {}", s.study_id);
    println!("name       {}", s.name);
    println!(
        "status     {} ({} of {} chains succeeded, {} failed, {} active)",
        s.status,
        s.succeeded(),
        s.chains.len(),
        s.failed(),
        s.active
    );
    println!("stages     {}", s.stages);
    println!("baseline   {}", s.baseline_arm);
    if !s.calibration.is_empty() {
        println!();
        println!(
            "{:<20}  {:<8}  {:<8}  {:>9}  {:>8}  {:>7}  {:>11}",
            "CALIBRATED", "STAGE", "DEVICE", "IMAGES/S", "BUDGET_S", "EPOCHS", "IMAGES_SEEN"
        );
        for k in &s.calibration {
            println!(
                "{:<20}  {:<8}  {:<8}  {:>9.1}  {:>8.0}  {:>7}  {:>11}",
                k.arm,
                k.stage,
                k.device,
                k.images_per_second,
                k.budget_seconds,
                k.epochs,
                k.images_seen
            );
        }
    }
    let primary = s.primary_metric();
    println!();
    println!(
        "{:<20}  {:>6}  {:<11}  {:<36}  {:<36}  {:>8}",
        "ARM",
        "SEED",
        "STATUS",
        "PRETRAIN",
        "FINETUNE",
        primary.key.to_uppercase()
    );
    for c in &s.chains {
        let run =
            |r: &Option<ChainRun>| r.as_ref().map_or("-".to_string(), |r| r.run_id.to_string());
        println!(
            "{:<20}  {:>6}  {:<11}  {:<36}  {:<36}  {:>8}",
            c.arm,
            c.seed,
            c.status,
            run(&c.pretrain),
            run(&c.finetune),
            c.values
                .get(primary.key)
                .map_or("-".to_string(), |v| format!("{v:.*}", primary.digits))
        );
    }
    print_results(&s);
    Ok(EXIT_OK)
}

async fn export(a: ExportArgs) -> anyhow::Result<u8> {
    let id = study_id(&a.study_id)?;
    let client = Client::new(&a.conn)?;
    let rows = match a.rows {
        ExportRows::Seeds => "seeds",
        ExportRows::Aggregate => "aggregate",
    };
    let path = |format: &str| format!("/api/v1/studies/{id}/export?format={format}&rows={rows}");
    export_to(&client, a.format, &path("csv"), &path("json"), a.output).await
}

async fn cancel(a: IdArgs) -> anyhow::Result<u8> {
    let id = study_id(&a.study_id)?;
    let client = Client::new(&a.conn)?;
    let answer: Value = client
        .post::<Value, Value>(&format!("/api/v1/studies/{id}/cancel"), None)
        .await?;
    eprintln!(
        "study {id} cancelled: {} queued runs cancelled, {} running told to stop",
        answer["cancelled"].as_u64().unwrap_or(0),
        answer["requested"].as_u64().unwrap_or(0)
    );
    Ok(EXIT_OK)
}

async fn retry(a: RetryArgs) -> anyhow::Result<u8> {
    let id = study_id(&a.study_id)?;
    let client = Client::new(&a.conn)?;
    let mut q = form_urlencoded::Serializer::new(String::new());
    if let (Some(arm), Some(seed)) = (&a.arm, a.seed) {
        q.append_pair("arm", arm);
        q.append_pair("seed", &seed.to_string());
    }
    let q = q.finish();
    let path = if q.is_empty() {
        format!("/api/v1/studies/{id}/retry")
    } else {
        format!("/api/v1/studies/{id}/retry?{q}")
    };
    let answer: Value = client.post::<Value, Value>(&path, None).await?;
    eprintln!(
        "study {id}: {} runs queued again ({} finetunes, {} calibrations)",
        answer["runs"].as_u64().unwrap_or(0),
        answer["finetunes"].as_u64().unwrap_or(0),
        answer["calibrations"].as_u64().unwrap_or(0)
    );
    Ok(EXIT_OK)
}

/// `+1.23` / `-0.40`.
fn signed(x: f64, digits: usize) -> String {
    format!("{x:+.digits$}")
}

/// The results table: per arm, n, the primary metric's mean with its
/// interval, the difference to the baseline with its interval and p, and the
/// verdict sentence.
fn print_results(s: &StudyView) {
    let Some(results) = &s.results else {
        return;
    };
    let m = metric(&results.primary_metric).unwrap_or(&METRICS[0]);
    let d = m.digits;
    println!();
    println!(
        "results: {} ({:.0}% bootstrap intervals over seeds; differences to {})",
        m.label,
        results.confidence * 100.0,
        results.baseline
    );
    println!(
        "{:<20}  {:>5}  {:<26}  {:<28}  {:>7}  {:>7}",
        "ARM", "N", "MEAN [CI]", "DIFF [CI]", "P", "P(IMPR)"
    );
    for arm in &results.arms {
        let r = arm.metrics.iter().find(|r| r.metric == m.key);
        let (mean, diff, p, pi) = match r {
            Some(r) => {
                let sm = &r.summary;
                let mean = match (sm.mean, sm.ci_low, sm.ci_high) {
                    (Some(mu), Some(lo), Some(hi)) => {
                        format!("{mu:.d$} [{lo:.d$}, {hi:.d$}]")
                    }
                    (Some(mu), _, _) => format!("{mu:.d$}"),
                    _ => "-".into(),
                };
                match &r.vs_baseline {
                    Some(c) => (
                        mean,
                        format!(
                            "{} [{}, {}]",
                            signed(c.diff, d),
                            signed(c.ci_low, d),
                            signed(c.ci_high, d)
                        ),
                        num(c.p_value, 3),
                        num(c.prob_improvement, 2),
                    ),
                    None if arm.arm == results.baseline => {
                        (mean, "baseline".into(), String::new(), String::new())
                    }
                    None => (mean, "-".into(), "-".into(), "-".into()),
                }
            }
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        let line = format!(
            "{:<20}  {:>5}  {:<26}  {:<28}  {:>7}  {:>7}",
            arm.arm,
            format!("{}/{}", arm.succeeded, arm.chains),
            mean,
            diff,
            p,
            pi
        );
        println!("{}", line.trim_end());
    }
    let verdicts: Vec<&String> = results
        .arms
        .iter()
        .filter_map(|a| a.verdict.as_ref())
        .collect();
    if !verdicts.is_empty() {
        println!();
        for v in verdicts {
            println!("{v}");
        }
    }
}

fn print_preview(p: &Preview) {
    println!(
        "{} runs in {} chains ({} arms x {} seeds, {}); baseline {}{}",
        p.runs,
        p.arms.len() * p.seeds.len(),
        p.arms.len(),
        p.seeds.len(),
        p.stages,
        p.baseline,
        if p.calibrations > 0 {
            format!("; {} calibrations first (seconds budget)", p.calibrations)
        } else {
            String::new()
        }
    );
    println!(
        "{:<20}  {:>6}  {:<8}  {:<8}  {:>10}  {:>6}  {:<27}  NAME",
        "ARM", "SEED", "KIND", "MODEL", "EPOCHS", "WARMUP", "QUEUED"
    );
    for r in &p.chains {
        println!(
            "{:<20}  {:>6}  {:<8}  {:<8}  {:>10}  {:>6}  {:<27}  {}",
            r.arm,
            r.seed,
            r.kind,
            r.model,
            r.epochs
                .map_or_else(|| "calibrated".to_string(), |e| e.to_string()),
            r.warmup_epochs
                .map_or_else(|| "scaled".to_string(), |w| w.to_string()),
            r.queued,
            r.name
        );
    }
}

// What the CLI reads of the API's answers. The read model's types are
// serialize-only (their metric keys are `&'static str`), so these mirror the
// fields used, and [`ChainView::to_row`] rebuilds the rows a claim is judged on.

/// `POST /api/v1/studies/preview`.
#[derive(Debug, Deserialize)]
struct Preview {
    stages: String,
    baseline: String,
    arms: Vec<String>,
    seeds: Vec<u64>,
    runs: usize,
    #[serde(default)]
    calibrations: usize,
    chains: Vec<PreviewRun>,
}

#[derive(Debug, Deserialize)]
struct PreviewRun {
    arm: String,
    seed: u64,
    kind: String,
    name: String,
    model: String,
    epochs: Option<u32>,
    /// None: scaled to the calibrated epochs.
    warmup_epochs: Option<f64>,
    queued: String,
}

/// A study's detail (`GET /api/v1/studies/{id}`) or a `progress` event.
#[derive(Debug, Deserialize)]
struct StudyView {
    study_id: Uuid,
    name: String,
    #[serde(default)]
    stages: String,
    #[serde(default)]
    baseline_arm: String,
    status: String,
    #[serde(default)]
    active: i64,
    /// The chains (the count is `chains_total`); anything but a list (an
    /// older server sent the count under this key too) reads as none.
    #[serde(default, deserialize_with = "chain_list")]
    chains: Vec<ChainView>,
    #[serde(default)]
    calibration: Vec<CalibrationView>,
    #[serde(default)]
    results: Option<ResultsView>,
}

fn chain_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ChainView>, D::Error> {
    match Value::deserialize(d)? {
        Value::Array(items) => items
            .into_iter()
            .map(|v| serde_json::from_value(v).map_err(serde::de::Error::custom))
            .collect(),
        _ => Ok(Vec::new()),
    }
}

impl StudyView {
    /// Decode from a parsed answer.
    fn from_value(v: Value) -> anyhow::Result<Self> {
        serde_json::from_value(v).context("decoding the study")
    }

    fn succeeded(&self) -> usize {
        self.chains
            .iter()
            .filter(|c| c.status == "succeeded")
            .count()
    }

    fn failed(&self) -> usize {
        self.chains
            .iter()
            .filter(|c| matches!(c.status.as_str(), "failed" | "cancelled"))
            .count()
    }

    /// Nothing runs or calibrates any more, and nothing will.
    fn settled(&self) -> bool {
        self.active == 0 && !matches!(self.status.as_str(), "calibrating" | "running")
    }

    /// What the chain table shows: the results' primary metric, else top-1.
    fn primary_metric(&self) -> &'static MetricDef {
        self.results
            .as_ref()
            .and_then(|r| metric(&r.primary_metric))
            .unwrap_or(&METRICS[0])
    }
}

#[derive(Debug, Deserialize)]
struct ChainView {
    arm: String,
    seed: i64,
    status: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    pretrain: Option<ChainRun>,
    #[serde(default)]
    finetune: Option<ChainRun>,
    #[serde(default)]
    values: BTreeMap<String, f64>,
}

impl ChainView {
    fn runs(&self) -> impl Iterator<Item = &ChainRun> {
        self.pretrain.iter().chain(self.finetune.iter())
    }

    /// The read model's row, for `Claim::judge` (metrics the CLI does not
    /// know are left out).
    fn to_row(&self) -> ChainRow {
        ChainRow {
            arm: self.arm.clone(),
            seed: self.seed,
            status: self.status.clone(),
            error: self.error.clone(),
            pretrain: self.pretrain.clone(),
            finetune: self.finetune.clone(),
            values: self
                .values
                .iter()
                .filter_map(|(k, v)| metric(k).map(|m| (m.key, *v)))
                .collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct CalibrationView {
    arm: String,
    stage: String,
    device: String,
    images_per_second: f64,
    budget_seconds: f64,
    epochs: i64,
    images_seen: i64,
}

#[derive(Debug, Deserialize)]
struct ResultsView {
    baseline: String,
    primary_metric: String,
    #[serde(default = "default_confidence")]
    confidence: f64,
    arms: Vec<ArmView>,
}

fn default_confidence() -> f64 {
    0.95
}

#[derive(Debug, Deserialize)]
struct ArmView {
    arm: String,
    chains: usize,
    succeeded: usize,
    metrics: Vec<MetricView>,
    #[serde(default)]
    verdict: Option<String>,
}

#[derive(Debug, Deserialize)]
struct MetricView {
    metric: String,
    summary: SummaryView,
    #[serde(default)]
    vs_baseline: Option<ComparisonView>,
}

#[derive(Debug, Deserialize)]
struct SummaryView {
    #[serde(default)]
    mean: Option<f64>,
    #[serde(default)]
    ci_low: Option<f64>,
    #[serde(default)]
    ci_high: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct ComparisonView {
    diff: f64,
    ci_low: f64,
    ci_high: f64,
    #[serde(default)]
    p_value: Option<f64>,
    #[serde(default)]
    prob_improvement: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn progress(status: &str, active: i64, chains: Value) -> Value {
        // As the server writes it: the summary's count, then the list.
        let text = format!(
            r#"{{"study_id":"{}","name":"s","stages":"finetune","baseline_arm":"a","status":"{status}","active":{active},"chains_total":2,"chains_succeeded":0,"chains_failed":0,"chains":{chains}}}"#,
            Uuid::nil()
        );
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn a_progress_event_decodes() {
        let chains = json!([
            {"arm": "a", "seed": 0, "status": "succeeded", "error": null, "pretrain": null,
             "finetune": null, "values": {"test_acc1": 50.0, "not_a_metric": 1.0}},
            {"arm": "b", "seed": 0, "status": "failed", "error": "boom", "pretrain": null,
             "finetune": null, "values": {}}
        ]);
        let v = StudyView::from_value(progress("finished", 0, chains)).unwrap();
        assert_eq!(v.chains.len(), 2);
        assert_eq!((v.succeeded(), v.failed()), (1, 1));
        assert!(v.settled());
        let row = v.chains[0].to_row();
        assert_eq!(row.values.get("test_acc1"), Some(&50.0));
        assert_eq!(row.values.len(), 1);
        let running = StudyView::from_value(progress("running", 0, json!([]))).unwrap();
        assert!(!running.settled());
        let active = StudyView::from_value(progress("cancelled", 1, json!([]))).unwrap();
        assert!(!active.settled());
    }

    #[test]
    fn exit_codes_follow_claims_then_failures() {
        let chain = |arm: &str, seed: i64, status: &str, v: Option<f64>| {
            json!({"arm": arm, "seed": seed, "status": status,
                   "values": v.map_or(json!({}), |v| json!({"test_acc1": v}))})
        };
        let mut chains = Vec::new();
        for seed in 0..3 {
            chains.push(chain("a", seed, "succeeded", Some(50.0 + seed as f64)));
            chains.push(chain("b", seed, "succeeded", Some(70.0 + seed as f64)));
        }
        let ok = StudyView::from_value(progress("succeeded", 0, json!(chains))).unwrap();
        let supported = Claim::parse("b > a on test_acc1").unwrap();
        let against = Claim::parse("a > b on test_acc1").unwrap();
        assert_eq!(judge(&ok, &[]), EXIT_OK);
        assert_eq!(judge(&ok, std::slice::from_ref(&supported)), EXIT_OK);
        assert_eq!(judge(&ok, &[supported.clone(), against]), EXIT_BAR_MISSED);
        chains.push(chain("b", 3, "failed", None));
        let failed = StudyView::from_value(progress("finished", 0, json!(chains))).unwrap();
        assert_eq!(judge(&failed, &[]), EXIT_RUN_FAILED);
        assert_eq!(judge(&failed, &[supported]), EXIT_RUN_FAILED);
        // Nothing to judge on: not supported.
        let empty = StudyView::from_value(progress("cancelled", 0, json!([]))).unwrap();
        let claim = Claim::parse("b > a on test_acc1").unwrap();
        assert_eq!(judge(&empty, &[claim]), EXIT_BAR_MISSED);
    }
}
