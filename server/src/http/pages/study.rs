//! One study: its status and budget, the fairness note (device, measured
//! throughput, the images each arm saw), the results table (per arm and
//! metric: n, mean with its 95% bootstrap interval, the per-seed values, and
//! the difference to the baseline with its interval, Welch's p and the
//! probability of improvement), a verdict per arm, every chain with its runs
//! (live over the API's study stream, `static/study.js`), grouped curves
//! (mean and min-max band over seeds), reconstructions of one seed per arm
//! at one epoch, export links, and cancel/retry of the study or one chain.
//!
//! Everything shown is read through the API's [`detail`] and
//! `read_model::{studies, artifacts}`: the page adds no query of its own.

use std::collections::{BTreeSet, HashMap};

use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maelab_core::db::studies::{self, StudyError};
use maelab_core::study::Budget;
use maelab_core::study::spec::valid_arm_name;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{PageError, Reader, csrf_value, render};
use crate::auth::{CsrfForm, Submit};
use crate::format::{human_duration, thousands};
use crate::http::api::studies::{StudyDetail, detail};
use crate::http::{AppError, AppState};
use crate::read_model::artifacts;
use crate::read_model::studies::{self as read, ChainRow, ChainRun, CurvePoint, StudySummary};
use crate::read_model::study_results::MetricResult;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/studies/{id}", get(show))
        .route("/studies/{id}/cancel", post(cancel))
        .route("/studies/{id}/retry", post(retry))
}

impl From<StudyError> for PageError {
    fn from(e: StudyError) -> Self {
        match e {
            StudyError::Invalid(errors) => Self::BadRequest(errors.to_string()),
            StudyError::NotFound(id) => Self::NotFound(format!("study {id}")),
            StudyError::Conflict(m) => Self::Conflict(m),
            StudyError::Db(e) => Self::Db(e),
            StudyError::Queue(q) => AppError::Internal(q.into()).into(),
        }
    }
}

/// A study id from the URL; anything that is not one is a 404.
fn parse_id(text: &str) -> Result<Uuid, PageError> {
    super::run::parse_uuid("study", text)
}

/// The results table's headers (the order of `read_model::studies::METRICS`).
pub struct MetricGroup {
    pub key: &'static str,
    pub label: &'static str,
    pub lines: Vec<MetricLine>,
}

/// One arm's row of one metric, formatted.
pub struct MetricLine {
    pub arm: String,
    pub baseline: bool,
    pub n: usize,
    /// `72.31`, or `—` without values.
    pub mean: String,
    /// `[71.02, 73.40]`.
    pub ci: String,
    pub sd: String,
    /// `s0 72.10 · s1 73.02` (a no-break space inside each seed's pair).
    pub seeds: String,
    /// `+1.20 [-0.40, 2.85]`, empty for the baseline.
    pub diff: String,
    /// The interval of the difference crosses 0.
    pub crosses_zero: bool,
    pub p: String,
    pub prob: String,
}

/// One run of a chain as its cell shows it.
pub struct RunCell {
    pub run_id: Uuid,
    pub status: String,
    pub epochs: String,
}

impl RunCell {
    fn of(r: &ChainRun) -> Self {
        Self {
            run_id: r.run_id,
            status: r.status.clone(),
            epochs: format!("{}/{}", r.epochs_done, r.epochs_total),
        }
    }
}

pub struct ChainLine {
    pub arm: String,
    pub seed: i64,
    pub status: String,
    pub error: Option<String>,
    pub pretrain: Option<RunCell>,
    pub finetune: Option<RunCell>,
    pub can_retry: bool,
}

/// One calibration, formatted.
pub struct CalibrationLine {
    pub arm: String,
    pub stage: String,
    pub images_per_second: String,
    pub budget_seconds: String,
    pub budget_images: String,
    pub epochs: i32,
    pub images_seen: String,
}

/// The reconstructions of one arm's chosen seed.
pub struct ReconColumn {
    pub arm: String,
    pub seed: i64,
    pub run_id: Uuid,
    /// (artifact id, name).
    pub images: Vec<(i64, String)>,
}

/// One chart of the grouped curves: per arm the mean over seeds and the
/// min-max band, epochs on x (what `static/study.js` hands to uPlot).
#[derive(Debug, Serialize)]
pub struct CurveChart {
    pub key: String,
    pub title: String,
    pub epochs: Vec<i32>,
    pub arms: Vec<CurveArm>,
}

#[derive(Debug, Serialize)]
pub struct CurveArm {
    pub arm: String,
    /// Position of the arm in the study (its color on every chart).
    pub index: usize,
    pub mean: Vec<Option<f64>>,
    pub low: Vec<Option<f64>>,
    pub high: Vec<Option<f64>>,
    pub n: Vec<Option<i64>>,
}

/// What the page's script starts from.
#[derive(Serialize)]
struct PageData<'a> {
    study_id: Uuid,
    /// `arm/seed` of the succeeded chains the results were computed from.
    succeeded: Vec<String>,
    arms: Vec<&'a str>,
    curves: &'a [CurveChart],
}

#[derive(Template)]
#[template(path = "study.html")]
struct StudyPage {
    s: StudySummary,
    description: Option<String>,
    budget: String,
    seconds_budget: bool,
    device: Option<String>,
    calibration: Vec<CalibrationLine>,
    groups: Vec<MetricGroup>,
    verdicts: Vec<(String, String)>,
    primary_label: &'static str,
    resamples: usize,
    /// The fewest succeeded chains of an arm, when under 5 (a rough interval).
    rough_n: Option<usize>,
    chains: Vec<ChainLine>,
    recons: Vec<ReconColumn>,
    recon_epoch: Option<i32>,
    has_curves: bool,
    data_json: String,
    can_cancel: bool,
    can_retry: bool,
    created: String,
    /// Repeated in the forms' hidden `csrf_token` field.
    csrf: String,
}

fn fmt(x: f64, digits: usize) -> String {
    format!("{x:.digits$}")
}

fn signed(x: f64, digits: usize) -> String {
    if x >= 0.0 {
        format!("+{x:.digits$}")
    } else {
        format!("{x:.digits$}")
    }
}

fn metric_line(arm: &str, baseline: bool, r: &MetricResult, digits: usize) -> MetricLine {
    let s = &r.summary;
    let dash = || "—".to_string();
    let ci = match (s.ci_low, s.ci_high) {
        (Some(lo), Some(hi)) => format!("[{}, {}]", fmt(lo, digits), fmt(hi, digits)),
        _ => String::new(),
    };
    let seeds = r
        .seeds
        .iter()
        .zip(&r.values)
        // A no-break space: a narrow column wraps between seeds, not inside one.
        .map(|(seed, v)| format!("s{seed}\u{a0}{}", fmt(*v, digits)))
        .collect::<Vec<_>>()
        .join(" · ");
    let c = r.vs_baseline.as_ref();
    MetricLine {
        arm: arm.to_string(),
        baseline,
        n: s.n,
        mean: s.mean.map_or_else(dash, |m| fmt(m, digits)),
        ci,
        sd: s.sd.map_or_else(String::new, |sd| fmt(sd, digits)),
        seeds,
        diff: c.map_or_else(String::new, |c| {
            format!(
                "{} [{}, {}]",
                signed(c.diff, digits),
                signed(c.ci_low, digits),
                signed(c.ci_high, digits)
            )
        }),
        crosses_zero: c.is_some_and(|c| c.ci_low <= 0.0 && c.ci_high >= 0.0),
        p: c.and_then(|c| c.p_value)
            .map_or_else(String::new, |p| format!("{p:.3}")),
        prob: c.map_or_else(String::new, |c| format!("{:.2}", c.prob_improvement)),
    }
}

/// The results as the table's groups: one per metric, one line per arm.
fn metric_groups(d: &StudyDetail) -> Vec<MetricGroup> {
    let mut groups: Vec<MetricGroup> = Vec::new();
    for def in read::METRICS {
        let lines: Vec<MetricLine> = d
            .results
            .arms
            .iter()
            .filter_map(|a| {
                let r = a.metrics.iter().find(|m| m.metric == def.key)?;
                Some(metric_line(
                    &a.arm,
                    a.arm == d.results.baseline,
                    r,
                    def.digits,
                ))
            })
            .collect();
        if !lines.is_empty() {
            groups.push(MetricGroup {
                key: def.key,
                label: def.label,
                lines,
            });
        }
    }
    groups
}

fn budget_text(budget: &serde_json::Value) -> (String, bool) {
    let secs = |s: f64| human_duration(s.round() as i64);
    match serde_json::from_value::<Budget>(budget.clone()) {
        Ok(Budget::Config) => ("each run's own epochs (its config's)".into(), false),
        Ok(Budget::Epochs { pretrain, finetune }) => {
            let parts: Vec<String> = [("pretraining", pretrain), ("finetuning", finetune)]
                .into_iter()
                .filter_map(|(what, e)| {
                    e.map(|e| format!("{e} epoch{} of {what}", if e == 1 { "" } else { "s" }))
                })
                .collect();
            (
                format!("equal epochs: {} per chain", parts.join(" + ")),
                false,
            )
        }
        Ok(Budget::Seconds { pretrain, finetune }) => {
            let parts: Vec<String> = [("pretraining", pretrain), ("finetuning", finetune)]
                .into_iter()
                .filter_map(|(what, s)| s.map(|s| format!("{} of {what}", secs(s))))
                .collect();
            (
                format!(
                    "equal wall clock: {} per chain, turned into epochs by each arm's measured images/s",
                    parts.join(" + ")
                ),
                true,
            )
        }
        Err(_) => (budget.to_string(), false),
    }
}

/// The grouped curves: for each stage and metric with points, one chart.
fn curve_charts(points: &[CurvePoint], arms: &[String]) -> Vec<CurveChart> {
    const CHARTS: [(&str, &str, &str); 6] = [
        ("pretrain", "train_loss", "Training loss, pretraining"),
        (
            "pretrain",
            "psnr",
            "PSNR of masked patches (dB), pretraining",
        ),
        ("pretrain", "test_acc1", "Top-1 (%), pretraining"),
        ("finetune", "train_loss", "Training loss, finetuning"),
        ("finetune", "test_acc1", "Top-1 (%), finetuning"),
        ("finetune", "psnr", "PSNR (dB), finetuning"),
    ];
    let mut out = Vec::new();
    for (kind, metric, title) in CHARTS {
        let mine: Vec<&CurvePoint> = points
            .iter()
            .filter(|p| p.kind == kind && p.metric == metric)
            .collect();
        if mine.is_empty() {
            continue;
        }
        let epochs: Vec<i32> = mine
            .iter()
            .map(|p| p.epoch)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let at: HashMap<i32, usize> = epochs.iter().enumerate().map(|(i, e)| (*e, i)).collect();
        let chart_arms = arms
            .iter()
            .enumerate()
            .filter_map(|(index, arm)| {
                let of_arm: Vec<&&CurvePoint> = mine.iter().filter(|p| p.arm == *arm).collect();
                if of_arm.is_empty() {
                    return None;
                }
                let mut a = CurveArm {
                    arm: arm.clone(),
                    index,
                    mean: vec![None; epochs.len()],
                    low: vec![None; epochs.len()],
                    high: vec![None; epochs.len()],
                    n: vec![None; epochs.len()],
                };
                for p in of_arm {
                    if let Some(&i) = at.get(&p.epoch) {
                        a.mean[i] = Some(p.mean);
                        a.low[i] = Some(p.low);
                        a.high[i] = Some(p.high);
                        a.n[i] = Some(p.n);
                    }
                }
                Some(a)
            })
            .collect();
        out.push(CurveChart {
            key: format!("{kind}-{metric}"),
            title: title.to_string(),
            epochs,
            arms: chart_arms,
        });
    }
    out
}

/// A reconstruction: its epoch, artifact id and name.
type Recon = (i32, i64, String);

/// One seed per arm (the lowest with a succeeded pretrain), at the latest
/// epoch every shown arm has reconstructions of.
async fn reconstructions(
    state: &AppState,
    chains: &[ChainRow],
    arms: &[String],
) -> Result<(Vec<ReconColumn>, Option<i32>), PageError> {
    let mut columns: Vec<(ReconColumn, Vec<Recon>)> = Vec::new();
    for arm in arms {
        let chosen = chains
            .iter()
            .filter(|c| c.arm == *arm)
            .filter_map(|c| {
                c.pretrain
                    .as_ref()
                    .filter(|p| p.status == "succeeded")
                    .map(|p| (c.seed, p.run_id))
            })
            .min_by_key(|(seed, _)| *seed);
        let Some((seed, run_id)) = chosen else {
            continue;
        };
        let list = artifacts::list(&state.db, run_id, Some("reconstruction"))
            .await
            .map_err(|e| match e {
                crate::read_model::ReadError::Db(e) => PageError::Db(e),
                other => PageError::BadRequest(other.to_string()),
            })?;
        let images: Vec<Recon> = list
            .into_iter()
            .filter_map(|a| Some((a.epoch?, a.artifact_id?, a.name)))
            .collect();
        if images.is_empty() {
            continue;
        }
        columns.push((
            ReconColumn {
                arm: arm.clone(),
                seed,
                run_id,
                images: Vec::new(),
            },
            images,
        ));
    }
    let mut common: Option<BTreeSet<i32>> = None;
    for (_, images) in &columns {
        let mine: BTreeSet<i32> = images.iter().map(|(e, _, _)| *e).collect();
        common = Some(match common {
            None => mine,
            Some(prev) => prev.intersection(&mine).copied().collect(),
        });
    }
    let Some(epoch) = common.and_then(|c| c.last().copied()) else {
        return Ok((Vec::new(), None));
    };
    Ok((
        columns
            .into_iter()
            .map(|(mut col, images)| {
                col.images = images
                    .into_iter()
                    .filter(|(e, _, _)| *e == epoch)
                    .map(|(_, id, name)| (id, name))
                    .collect();
                col
            })
            .collect(),
        Some(epoch),
    ))
}

async fn show(
    _: Reader,
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let study_id = parse_id(&id)?;
    let d = detail(&state, study_id).await?;
    let arms: Vec<String> = d.arms.iter().map(|a| a.arm.clone()).collect();
    let points = read::curves(&state.db, study_id).await?;
    let curves = curve_charts(&points, &arms);
    let (recons, recon_epoch) = reconstructions(&state, &d.chains, &arms).await?;
    let (budget, seconds_budget) = budget_text(&d.budget);
    let mut devices: Vec<String> = Vec::new();
    for c in &d.calibration {
        let name = match &c.gpu_name {
            Some(g) => format!("{} ({g})", c.device),
            None => c.device.clone(),
        };
        if !devices.contains(&name) {
            devices.push(name);
        }
    }
    let calibration = d
        .calibration
        .iter()
        .map(|c| CalibrationLine {
            arm: c.arm.clone(),
            stage: c.stage.clone(),
            images_per_second: fmt(c.images_per_second, 1),
            budget_seconds: fmt(c.budget_seconds, 0),
            budget_images: thousands(c.budget_images),
            epochs: c.epochs,
            images_seen: thousands(c.images_seen),
        })
        .collect();
    let chains = d
        .chains
        .iter()
        .map(|c| ChainLine {
            arm: c.arm.clone(),
            seed: c.seed,
            status: c.status.clone(),
            error: c.error.clone(),
            pretrain: c.pretrain.as_ref().map(RunCell::of),
            finetune: c.finetune.as_ref().map(RunCell::of),
            can_retry: matches!(c.status.as_str(), "failed" | "cancelled"),
        })
        .collect();
    let succeeded: Vec<String> = d
        .chains
        .iter()
        .filter(|c| c.status == "succeeded")
        .map(|c| format!("{}/{}", c.arm, c.seed))
        .collect();
    let data_json = serde_json::to_string(&PageData {
        study_id,
        succeeded,
        arms: arms.iter().map(String::as_str).collect(),
        curves: &curves,
    })
    .map_err(|e| PageError::BadRequest(format!("cannot encode the page data: {e}")))?;
    let verdicts = d
        .results
        .arms
        .iter()
        .filter_map(|a| a.verdict.clone().map(|v| (a.arm.clone(), v)))
        .collect();
    let rough_n = d
        .results
        .arms
        .iter()
        .map(|a| a.succeeded)
        .filter(|n| *n > 0)
        .min()
        .filter(|n| *n < 5);
    let primary_label = read::metric(d.results.primary_metric).map_or("", |m| m.label);
    let groups = metric_groups(&d);
    let s = d.summary.clone();
    let open = s.cancelled_at.is_none();
    render(&StudyPage {
        description: d
            .spec
            .get("description")
            .and_then(serde_json::Value::as_str)
            .map(str::to_string),
        budget,
        seconds_budget,
        device: (!devices.is_empty()).then(|| devices.join(", ")),
        calibration,
        groups,
        verdicts,
        primary_label,
        resamples: d.results.resamples,
        rough_n,
        chains,
        recons,
        recon_epoch,
        has_curves: !curves.is_empty(),
        data_json,
        can_cancel: open
            && (s.active > 0 || matches!(s.status.as_str(), "calibrating" | "running")),
        can_retry: s.chains_failed > 0 || !open,
        created: s.created_at.format("%Y-%m-%d %H:%M UTC").to_string(),
        csrf: csrf_value(&headers),
        s,
    })
}

async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    post: Result<CsrfForm<Vec<(String, String)>, Submit>, AppError>,
) -> Result<Response, PageError> {
    let study_id = parse_id(&id)?;
    let post = post?;
    post.may_change_study(&state.db, study_id).await?;
    let token = post.token;
    let done = studies::cancel_study(&state.db, study_id).await?;
    tracing::info!(%study_id, by = %token.name, cancelled = done.cancelled,
                   requested = done.requested, "study cancel from its page");
    state.live.changes().tick();
    Ok(Redirect::to(&format!("/studies/{study_id}")).into_response())
}

/// Which chain to retry; neither field: the whole study.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RetryForm {
    arm: Option<String>,
    seed: Option<String>,
}

async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
    post: Result<CsrfForm<RetryForm, Submit>, AppError>,
) -> Result<Response, PageError> {
    let study_id = parse_id(&id)?;
    let post = post?;
    post.may_change_study(&state.db, study_id).await?;
    let CsrfForm { token, form, .. } = post;
    let arm = form.arm.filter(|a| !a.is_empty());
    // Checked here so that odd text (a NUL, a megabyte) never reaches a query.
    if let Some(a) = arm.as_deref().filter(|a| !valid_arm_name(a)) {
        let shown: String = a.chars().take(64).collect();
        return Err(PageError::BadRequest(format!(
            "arm `{shown}` is not an arm name: up to 100 letters, digits and `_.=,+-`"
        )));
    }
    let seed = form
        .seed
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim()
                .parse::<u64>()
                .map_err(|_| PageError::BadRequest(format!("seed `{s}` is not a whole number")))
        })
        .transpose()?;
    let chain = match (&arm, seed) {
        (Some(arm), Some(seed)) => Some((arm.as_str(), seed)),
        (None, None) => None,
        _ => {
            return Err(PageError::BadRequest(
                "retry one chain with both its arm and its seed".into(),
            ));
        }
    };
    let done = studies::retry_study(&state.db, study_id, chain).await?;
    tracing::info!(%study_id, by = %token.name, ?chain, runs = done.runs,
                   finetunes = done.finetunes, calibrations = done.calibrations,
                   "study retry from its page");
    state.live.changes().tick();
    Ok(Redirect::to(&format!("/studies/{study_id}")).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_read_naturally() {
        assert_eq!(signed(1.2, 2), "+1.20");
        assert_eq!(signed(-0.4, 1), "-0.4");
    }

    #[test]
    fn an_epoch_budget_counts_its_epochs() {
        let text = |b: Budget| budget_text(&serde_json::to_value(b).expect("json")).0;
        assert_eq!(
            text(Budget::Epochs {
                pretrain: Some(1),
                finetune: Some(3)
            }),
            "equal epochs: 1 epoch of pretraining + 3 epochs of finetuning per chain"
        );
        assert_eq!(
            text(Budget::Epochs {
                pretrain: None,
                finetune: Some(1)
            }),
            "equal epochs: 1 epoch of finetuning per chain"
        );
    }

    #[test]
    fn curves_become_one_chart_per_stage_and_metric() {
        let p = |arm: &str, kind: &str, metric: &str, epoch: i32, mean: f64| CurvePoint {
            arm: arm.into(),
            kind: kind.into(),
            epoch,
            metric: metric.into(),
            n: 2,
            mean,
            low: mean - 1.0,
            high: mean + 1.0,
        };
        let points = vec![
            p("mae", "pretrain", "train_loss", 0, 1.0),
            p("mae", "pretrain", "train_loss", 1, 0.5),
            p("wave", "pretrain", "train_loss", 0, 0.9),
            p("wave", "finetune", "test_acc1", 0, 30.0),
        ];
        let arms = vec!["mae".to_string(), "wave".to_string()];
        let charts = curve_charts(&points, &arms);
        let keys: Vec<&str> = charts.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["pretrain-train_loss", "finetune-test_acc1"]);
        let loss = &charts[0];
        assert_eq!(loss.epochs, [0, 1]);
        assert_eq!(loss.arms.len(), 2);
        assert_eq!(loss.arms[1].mean, [Some(0.9), None]);
        assert_eq!(loss.arms[1].high, [Some(1.9), None]);
        assert_eq!(charts[1].arms[0].arm, "wave");
        assert_eq!(charts[1].arms[0].index, 1, "an arm keeps its color");
    }
}
