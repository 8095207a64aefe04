//! A study's answer: per arm and metric, n, mean, sd and a 95% bootstrap
//! interval over seeds; per arm against the baseline, the difference with
//! its bootstrap interval, Welch's t-test and the probability of improvement;
//! a sentence per arm saying what is and is not established; and claims
//! (`wave-both > mae on test_acc1`) judged by the interval of a difference.
//! The statistics are `maelab_core::study::stats`; only succeeded chains
//! count, and n says so.

use serde::Serialize;

use maelab_core::study::stats::{self, BootstrapOptions, Comparison, Summary};

use super::studies::{ChainRow, METRICS, MetricDef, metric};

/// One arm and metric.
#[derive(Debug, Clone, Serialize)]
pub struct MetricResult {
    pub metric: &'static str,
    /// The per-seed values behind the summary, in seed order.
    pub seeds: Vec<i64>,
    pub values: Vec<f64>,
    pub summary: Summary,
    /// Against the baseline arm (None for the baseline itself, or no values).
    pub vs_baseline: Option<Comparison>,
}

/// One arm.
#[derive(Debug, Clone, Serialize)]
pub struct ArmResult {
    pub arm: String,
    pub chains: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub metrics: Vec<MetricResult>,
    /// What the primary metric says against the baseline, in words.
    pub verdict: Option<String>,
}

/// The whole table.
#[derive(Debug, Clone, Serialize)]
pub struct StudyResults {
    pub baseline: String,
    /// The metric verdicts speak of: best top-1 when the study finetunes,
    /// else PSNR.
    pub primary_metric: &'static str,
    pub confidence: f64,
    pub resamples: usize,
    pub bootstrap_seed: u64,
    pub arms: Vec<ArmResult>,
}

/// Aggregate `chains` (arms in `arm_order`) against `baseline`.
pub fn aggregate(chains: &[ChainRow], arm_order: &[String], baseline: &str) -> StudyResults {
    let opts = BootstrapOptions::default();
    let has_classifier = chains.iter().any(|c| c.finetune.is_some());
    let primary = if has_classifier { "test_acc1" } else { "psnr" };
    let values_of = |arm: &str, key: &str| -> (Vec<i64>, Vec<f64>) {
        chains
            .iter()
            .filter(|c| c.arm == arm)
            .filter_map(|c| c.values.get(key).map(|v| (c.seed, *v)))
            .unzip()
    };
    let arms = arm_order
        .iter()
        .map(|arm| {
            let of_arm: Vec<&ChainRow> = chains.iter().filter(|c| c.arm == *arm).collect();
            let metrics: Vec<MetricResult> = METRICS
                .iter()
                .filter_map(|m| {
                    let (seeds, values) = values_of(arm, m.key);
                    if values.is_empty() && chains.iter().all(|c| !c.values.contains_key(m.key)) {
                        return None;
                    }
                    let summary = stats::summarize(&values, &opts);
                    let vs_baseline = if arm == baseline {
                        None
                    } else {
                        stats::compare(&values, &values_of(baseline, m.key).1, &opts)
                    };
                    Some(MetricResult {
                        metric: m.key,
                        seeds,
                        values,
                        summary,
                        vs_baseline,
                    })
                })
                .collect();
            let verdict = metrics
                .iter()
                .find(|r| r.metric == primary)
                .and_then(|r| verdict(arm, baseline, r));
            ArmResult {
                arm: arm.clone(),
                chains: of_arm.len(),
                succeeded: of_arm.iter().filter(|c| c.status == "succeeded").count(),
                failed: of_arm
                    .iter()
                    .filter(|c| matches!(c.status.as_str(), "failed" | "cancelled"))
                    .count(),
                metrics,
                verdict,
            }
        })
        .collect();
    StudyResults {
        baseline: baseline.to_string(),
        primary_metric: primary,
        confidence: opts.level,
        resamples: opts.resamples,
        bootstrap_seed: opts.seed,
        arms,
    }
}

fn fmt(m: &MetricDef, x: f64) -> String {
    format!("{x:.*}", m.digits)
}

/// The sentence for one arm against the baseline on one metric.
fn verdict(arm: &str, baseline: &str, r: &MetricResult) -> Option<String> {
    let m = metric(r.metric)?;
    let c = r.vs_baseline.as_ref()?;
    let (n_a, n_b) = (c.n_arm, c.n_base);
    let better = (c.diff > 0.0) == m.higher_is_better;
    let p = c
        .p_value
        .map(|p| format!(", Welch p = {p:.3}"))
        .unwrap_or_default();
    let head = format!(
        "{arm} vs {baseline} on {}: {}{} (95% CI {} to {}{p}; P(improvement) = {:.2})",
        m.label,
        if c.diff >= 0.0 { "+" } else { "" },
        fmt(m, c.diff),
        fmt(m, c.ci_low),
        fmt(m, c.ci_high),
        c.prob_improvement,
    );
    let rough = if n_a.min(n_b) < 5 {
        format!(
            " With n = {} a bootstrap interval is rough; the per-seed values are listed.",
            n_a.min(n_b)
        )
    } else {
        String::new()
    };
    let n = if n_a == n_b {
        format!("n = {n_a}")
    } else {
        format!("n = {n_a} vs {n_b}")
    };
    let sentence = if n_a < 2 || n_b < 2 {
        // One seed has no spread: its interval is a point, and "excludes 0"
        // would claim a difference from a single run.
        format!(
            "{head}. Not judged: each arm needs at least 2 succeeded seeds ({n}); the per-seed values are listed."
        )
    } else if c.distinguishable && c.p_value.is_some_and(|p| p >= 0.05) {
        // A percentile bootstrap over 2-3 seeds is narrower than its nominal
        // 95%; when Welch's test disagrees, say so rather than pick one.
        format!(
            "{head}. The bootstrap interval excludes 0 but Welch's test does not (p = {:.2}): \
             suggestive at {n}, not established.{rough}",
            c.p_value.unwrap_or(1.0)
        )
    } else if c.distinguishable {
        format!(
            "{head}. {arm} is {} than {baseline}: the interval excludes 0 (n = {n_a} vs {n_b}).{rough}",
            if better { "better" } else { "worse" }
        )
    } else {
        format!("{head}. The interval crosses 0: not distinguishable at {n}.{rough}")
    };
    Some(sentence)
}

/// A claim a CI can gate on: `ARM > OTHER on METRIC` (or `<`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub arm: String,
    pub greater: bool,
    pub other: String,
    pub metric: String,
}

/// Why a claim cannot be judged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error("`{0}` is not a claim; write `ARM > ARM on METRIC` (or `<`)")]
    Syntax(String),
    #[error("`{0}` is not an arm of the study; the arms are {1}")]
    UnknownArm(String, String),
    #[error("`{0}` is not a study metric; the metrics are {1}")]
    UnknownMetric(String, String),
}

impl Claim {
    /// Parse `wave-both > mae on test_acc1`.
    pub fn parse(text: &str) -> Result<Self, ClaimError> {
        let syntax = || ClaimError::Syntax(text.to_string());
        let (lhs, metric) = text.rsplit_once(" on ").ok_or_else(syntax)?;
        let (greater, (arm, other)) = if let Some(p) = lhs.split_once('>') {
            (true, p)
        } else if let Some(p) = lhs.split_once('<') {
            (false, p)
        } else {
            return Err(syntax());
        };
        let (arm, other, metric) = (arm.trim(), other.trim(), metric.trim());
        if arm.is_empty() || other.is_empty() || metric.is_empty() {
            return Err(syntax());
        }
        Ok(Self {
            arm: arm.into(),
            greater,
            other: other.into(),
            metric: metric.into(),
        })
    }

    /// Check the names against the study's arms and the metrics.
    pub fn check(&self, arms: &[String]) -> Result<(), ClaimError> {
        for a in [&self.arm, &self.other] {
            if !arms.contains(a) {
                return Err(ClaimError::UnknownArm(a.clone(), arms.join(", ")));
            }
        }
        if metric(&self.metric).is_none() {
            let all: Vec<&str> = METRICS.iter().map(|m| m.key).collect();
            return Err(ClaimError::UnknownMetric(
                self.metric.clone(),
                all.join(", "),
            ));
        }
        Ok(())
    }

    /// Judge the claim on the succeeded chains: supported when the whole 95%
    /// bootstrap interval of `mean(arm) - mean(other)` is on the claimed side
    /// of 0 and Welch's test agrees (p < 0.05), with 2 or more seeds a side.
    /// Returns the comparison and whether it supports the claim.
    pub fn judge(&self, chains: &[ChainRow]) -> (Option<Comparison>, bool) {
        let values = |arm: &str| -> Vec<f64> {
            chains
                .iter()
                .filter(|c| c.arm == arm)
                .filter_map(|c| c.values.get(self.metric.as_str()).copied())
                .collect()
        };
        let c = stats::compare(
            &values(&self.arm),
            &values(&self.other),
            &BootstrapOptions::default(),
        );
        // `distinguishable` also needs 2 seeds a side: one seed cannot support a
        // claim; and, as in the verdicts, Welch's test must agree (p < 0.05).
        let ok = c.as_ref().is_some_and(|c| {
            c.distinguishable
                && c.p_value.is_some_and(|p| p < 0.05)
                && if self.greater {
                    c.ci_low > 0.0
                } else {
                    c.ci_high < 0.0
                }
        });
        (c, ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comparison(diff: f64, lo: f64, hi: f64, p: Option<f64>, n: usize) -> MetricResult {
        MetricResult {
            metric: "test_acc1",
            seeds: vec![],
            values: vec![],
            summary: stats::summarize(&[], &BootstrapOptions::default()),
            vs_baseline: Some(Comparison {
                n_arm: n,
                n_base: 3,
                diff,
                ci_low: lo,
                ci_high: hi,
                welch_t: None,
                welch_df: None,
                p_value: p,
                prob_improvement: 0.0,
                distinguishable: n >= 2 && (lo > 0.0 || hi < 0.0),
            }),
        }
    }

    #[test]
    fn verdicts_say_what_is_and_is_not_established() {
        let v = |r: MetricResult| verdict("wave", "mae", &r).unwrap_or_default();
        let worse = v(comparison(-1.25, -2.18, -0.33, Some(0.01), 3));
        assert!(worse.contains("wave is worse than mae"), "{worse}");
        let split = v(comparison(-1.25, -2.18, -0.33, Some(0.17), 2));
        assert!(
            split.contains("Welch's test does not (p = 0.17)"),
            "{split}"
        );
        assert!(
            split.contains("not established") && !split.contains("is worse"),
            "{split}"
        );
        let overlap = v(comparison(-0.5, -1.5, 0.4, Some(0.5), 3));
        assert!(
            overlap.contains("not distinguishable at n = 3"),
            "{overlap}"
        );
        let one = v(comparison(0.5, 0.3, 0.7, None, 1));
        assert!(one.contains("Not judged"), "{one}");
    }

    #[test]
    fn claims_parse_and_name_what_is_wrong() {
        let c = Claim::parse("wave-both > mae on test_acc1").unwrap();
        assert_eq!(
            c,
            Claim {
                arm: "wave-both".into(),
                greater: true,
                other: "mae".into(),
                metric: "test_acc1".into()
            }
        );
        assert!(!Claim::parse("a < b on psnr").unwrap().greater);
        assert!(matches!(
            Claim::parse("a = b on psnr"),
            Err(ClaimError::Syntax(_))
        ));
        assert!(matches!(Claim::parse("a > b"), Err(ClaimError::Syntax(_))));
        let arms = vec!["mae".to_string(), "wave-both".to_string()];
        assert!(c.check(&arms).is_ok());
        let bad_arm = Claim::parse("wave > mae on test_acc1").unwrap();
        assert!(matches!(bad_arm.check(&arms), Err(ClaimError::UnknownArm(a, _)) if a == "wave"));
        let bad_metric = Claim::parse("wave-both > mae on top1").unwrap();
        assert!(
            matches!(bad_metric.check(&arms), Err(ClaimError::UnknownMetric(m, _)) if m == "top1")
        );
    }
}
