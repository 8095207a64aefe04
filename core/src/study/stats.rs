//! Study statistics over seeds: per-arm summaries and arm-vs-baseline comparisons.
//!
//! Pure functions of per-seed values (one `f64` per seed, e.g. each seed's best
//! `test_acc1`); `design/studies.md`, "Statistics". The rules they keep:
//! - **Non-finite values are ignored** (a diverged run's NaN must not poison an
//!   arm); [`Summary::excluded`] counts them and every `n` counts only finite ones.
//! - **Order does not matter**: values are sorted before resampling, so the same
//!   multiset of seeds gives the same interval whatever order rows arrive in.
//! - **Reproducible**: the bootstrap draws from SplitMix64 (written out below,
//!   Steele, Lea & Flood 2014) with a fixed seed and unbiased index sampling
//!   (Lemire 2019), so the same values and [`BootstrapOptions`] give bit-identical
//!   results on every platform and crate upgrade, and the page never flickers.
//! - **Percentile bootstrap** (Efron & Tibshirani 1993, ch. 13): draw `resamples`
//!   resamples with replacement, compute the statistic on each, and take the
//!   `(1 - level)/2` and `(1 + level)/2` quantiles of those replicates by
//!   [`quantile`] (Hyndman & Fan type 7, numpy's default `linear` method).
//!   With n = 3 there are only 10 distinct resample means; the interval is rough
//!   and pages must say so and show the raw values beside it.
//! - **Welch's t-test** (Welch 1947) rather than Student's, which assumes equal
//!   variances (Delacre et al. 2017); the two-sided p-value comes from the
//!   regularized incomplete beta function of `statrs`.
//! - **Probability of improvement** P(X_arm > X_base) over all seed pairs, ties
//!   counting half (Agarwal et al. 2021, rliable).

use serde::{Deserialize, Serialize};

/// Resamples used when [`BootstrapOptions::resamples`] asks for fewer: below
/// this the interval's own Monte-Carlo noise is visible between two seeds.
pub const MIN_RESAMPLES: usize = 1_000;

/// Default RNG seed: "maelab" in ASCII. Fixed so an interval never changes
/// between two page loads.
pub const DEFAULT_SEED: u64 = 0x6d61_656c_6162;

/// How the percentile bootstrap draws and which interval it reports.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BootstrapOptions {
    /// Number of bootstrap resamples (default 10,000). Values below
    /// [`MIN_RESAMPLES`] are raised to it.
    pub resamples: usize,
    /// Seed of the SplitMix64 stream (default [`DEFAULT_SEED`]).
    pub seed: u64,
    /// Coverage of the two-sided interval (default 0.95): the bounds are the
    /// `(1 - level)/2` and `(1 + level)/2` quantiles of the replicates. Values
    /// outside [0, 1] are clamped into it; NaN means the default.
    pub level: f64,
}

impl Default for BootstrapOptions {
    fn default() -> Self {
        Self {
            resamples: 10_000,
            seed: DEFAULT_SEED,
            level: 0.95,
        }
    }
}

impl BootstrapOptions {
    fn resamples(&self) -> usize {
        self.resamples.max(MIN_RESAMPLES)
    }

    /// Probabilities of the lower and upper bound.
    fn tails(&self) -> (f64, f64) {
        let level = if self.level.is_nan() {
            Self::default().level
        } else {
            self.level.clamp(0.0, 1.0)
        };
        ((1.0 - level) / 2.0, (1.0 + level) / 2.0)
    }
}

/// One arm's values of one metric across seeds.
///
/// Every `Option` is `None` exactly when the statistic is undefined for `n`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Finite values summarised.
    pub n: usize,
    /// Non-finite values (NaN, ±inf) left out.
    pub excluded: usize,
    /// Arithmetic mean (`None` when n = 0).
    pub mean: Option<f64>,
    /// Sample standard deviation, `sqrt(Σ(x - mean)² / (n - 1))` (`None` when n < 2).
    pub sd: Option<f64>,
    /// Lower bound of the percentile-bootstrap interval of the mean (`None` when
    /// n = 0; equals the value when n = 1).
    pub ci_low: Option<f64>,
    /// Upper bound of that interval.
    pub ci_high: Option<f64>,
    /// Smallest and largest finite value (`None` when n = 0).
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// An arm against the baseline arm on one metric.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Finite values of the arm and of the baseline.
    pub n_arm: usize,
    pub n_base: usize,
    /// `mean(arm) - mean(base)`.
    pub diff: f64,
    /// Percentile-bootstrap interval of `diff`, each replicate resampling the
    /// arm's and the baseline's values independently with replacement.
    pub ci_low: f64,
    pub ci_high: f64,
    /// Welch's statistic `t = diff / sqrt(s²_arm/n_arm + s²_base/n_base)`.
    /// `None`, like `welch_df` and `p_value`, when either side has n < 2 or
    /// both sample variances are 0 (the test is undefined there).
    pub welch_t: Option<f64>,
    /// Welch–Satterthwaite degrees of freedom
    /// `(a + b)² / (a²/(n_arm - 1) + b²/(n_base - 1))`, `a = s²_arm/n_arm`, `b = s²_base/n_base`.
    pub welch_df: Option<f64>,
    /// Two-sided p-value `P(|T| ≥ |t|)`, T Student-t with `welch_df` degrees of freedom.
    pub p_value: Option<f64>,
    /// Share of all `(arm, base)` value pairs with `arm > base`, ties counting half.
    pub prob_improvement: f64,
    /// True when the interval excludes 0 (`ci_low > 0` or `ci_high < 0`) and
    /// both sides have n ≥ 2: with one seed the bootstrap has no spread to
    /// show, and its zero-width interval would claim a difference it cannot see.
    pub distinguishable: bool,
}

/// Mean, sd, min, max and the bootstrap interval of the mean of `values`,
/// ignoring non-finite ones.
pub fn summarize(values: &[f64], opts: &BootstrapOptions) -> Summary {
    let (sample, excluded) = Sample::new(values);
    let Some(s) = sample else {
        return Summary {
            n: 0,
            excluded,
            mean: None,
            sd: None,
            ci_low: None,
            ci_high: None,
            min: None,
            max: None,
        };
    };
    let mut rng = SplitMix64::new(opts.seed);
    let mut replicates: Vec<f64> = (0..opts.resamples())
        .map(|_| s.shift + s.resample_dev_mean(&mut rng))
        .collect();
    let (lo, hi) = interval(&mut replicates, opts);
    Summary {
        n: s.len(),
        excluded,
        mean: Some(s.mean()),
        sd: s.variance().map(f64::sqrt),
        ci_low: Some(lo),
        ci_high: Some(hi),
        min: s.values.first().copied(),
        max: s.values.last().copied(),
    }
}

/// `arm` against `base`: difference of means with its bootstrap interval,
/// Welch's t-test and the probability of improvement, ignoring non-finite
/// values. `None` when either side has no finite value.
///
/// Each bootstrap replicate draws `n_arm` indices into the arm, then `n_base`
/// into the baseline, from one SplitMix64 stream.
pub fn compare(arm: &[f64], base: &[f64], opts: &BootstrapOptions) -> Option<Comparison> {
    let a = Sample::new(arm).0?;
    let b = Sample::new(base).0?;
    // Shifts are the minima; subtracting them first keeps a 1e-3 difference
    // between two means near 1e6 accurate, and exact 0 for identical arms.
    let shift_diff = a.shift - b.shift;
    let diff = shift_diff + (a.dev_mean - b.dev_mean);

    let mut rng = SplitMix64::new(opts.seed);
    let mut replicates: Vec<f64> = (0..opts.resamples())
        .map(|_| {
            let ma = a.resample_dev_mean(&mut rng);
            let mb = b.resample_dev_mean(&mut rng);
            shift_diff + (ma - mb)
        })
        .collect();
    let (ci_low, ci_high) = interval(&mut replicates, opts);

    let welch = welch(&a, &b, diff);
    Some(Comparison {
        n_arm: a.len(),
        n_base: b.len(),
        diff,
        ci_low,
        ci_high,
        welch_t: welch.map(|w| w.0),
        welch_df: welch.map(|w| w.1),
        p_value: welch.and_then(|(t, df)| two_sided_p(t, df)),
        prob_improvement: prob_improvement(&a, &b),
        distinguishable: (ci_low > 0.0 || ci_high < 0.0) && a.len() >= 2 && b.len() >= 2,
    })
}

/// The `p`-quantile of ascending `sorted` values by linear interpolation between
/// order statistics (Hyndman & Fan 1996 type 7; numpy's default `linear`, R's
/// default): with `h = (n - 1)·p`, `x[⌊h⌋] + (h - ⌊h⌋)·(x[⌊h⌋+1] - x[⌊h⌋])`.
/// `p` is clamped to [0, 1]; `None` for no values or a NaN `p`.
pub fn quantile(sorted: &[f64], p: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    if p.is_nan() {
        return None;
    }
    let h = last as f64 * p.clamp(0.0, 1.0);
    let lo = (h.floor() as usize).min(last);
    let hi = (lo + 1).min(last);
    let frac = h - lo as f64;
    let (x0, x1) = (sorted[lo], sorted[hi]);
    // numpy's `_lerp`: interpolate from the nearer end, so p = 1 gives exactly
    // the maximum and the result stays within [x0, x1].
    Some(if frac >= 0.5 {
        x1 - (x1 - x0) * (1.0 - frac)
    } else {
        x0 + (x1 - x0) * frac
    })
}

/// The finite values of one side, sorted, and their deviations from the
/// minimum (`shift`), which the sums use so that values near 1e6 keep their
/// small digits.
struct Sample {
    values: Vec<f64>,
    shift: f64,
    /// `x - shift`, ascending, first one 0.
    devs: Vec<f64>,
    /// Mean of `devs`.
    dev_mean: f64,
}

impl Sample {
    /// The sample and how many values were non-finite; `None` when no value is finite.
    fn new(values: &[f64]) -> (Option<Self>, usize) {
        let mut finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        let excluded = values.len() - finite.len();
        finite.sort_by(f64::total_cmp);
        let Some(&shift) = finite.first() else {
            return (None, excluded);
        };
        let devs: Vec<f64> = finite.iter().map(|x| x - shift).collect();
        let dev_mean = devs.iter().sum::<f64>() / devs.len() as f64;
        let sample = Self {
            values: finite,
            shift,
            devs,
            dev_mean,
        };
        (Some(sample), excluded)
    }

    fn len(&self) -> usize {
        self.devs.len()
    }

    fn mean(&self) -> f64 {
        self.shift + self.dev_mean
    }

    /// Sample variance (n - 1 denominator), two-pass so it stays accurate for
    /// small spreads; `None` when n < 2.
    fn variance(&self) -> Option<f64> {
        let n = self.len();
        (n >= 2).then(|| {
            let ss: f64 = self.devs.iter().map(|d| (d - self.dev_mean).powi(2)).sum();
            ss / (n - 1) as f64
        })
    }

    /// Mean deviation of one bootstrap resample (n draws with replacement).
    fn resample_dev_mean(&self, rng: &mut SplitMix64) -> f64 {
        let n = self.len();
        let sum: f64 = (0..n).map(|_| self.devs[rng.below(n)]).sum();
        sum / n as f64
    }
}

/// Sorts the replicates and returns the interval's two bounds.
fn interval(replicates: &mut [f64], opts: &BootstrapOptions) -> (f64, f64) {
    replicates.sort_by(f64::total_cmp);
    let (p_lo, p_hi) = opts.tails();
    // The replicates are never empty (at least MIN_RESAMPLES) and p never NaN.
    let lo = quantile(replicates, p_lo).unwrap_or(f64::NAN);
    let hi = quantile(replicates, p_hi).unwrap_or(f64::NAN);
    (lo, hi)
}

/// Welch's `(t, df)`, or `None` when undefined (n < 2 on a side, or no variance at all).
fn welch(a: &Sample, b: &Sample, diff: f64) -> Option<(f64, f64)> {
    let va = a.variance()? / a.len() as f64;
    let vb = b.variance()? / b.len() as f64;
    let se2 = va + vb;
    if se2 <= 0.0 {
        return None;
    }
    let t = diff / se2.sqrt();
    let df = se2 * se2 / (va * va / (a.len() - 1) as f64 + vb * vb / (b.len() - 1) as f64);
    Some((t, df))
}

/// Two-sided Student-t p-value `P(|T| ≥ |t|)` with `df` degrees of freedom,
/// through the identity `P(|T| ≥ |t|) = I_x(df/2, 1/2)`, `x = df / (df + t²)`,
/// `I` the regularized incomplete beta function. Computing the tail directly
/// (not `1 - cdf`) keeps small p-values accurate.
fn two_sided_p(t: f64, df: f64) -> Option<f64> {
    let x = df / (df + t * t);
    statrs::function::beta::checked_beta_reg(df / 2.0, 0.5, x).ok()
}

/// P(arm > base) over all value pairs, ties counting half.
fn prob_improvement(a: &Sample, b: &Sample) -> f64 {
    // The original values: `shift + dev` need not give them back to the bit,
    // and a tie must stay a tie.
    let mut half_wins: u64 = 0;
    for x in &a.values {
        for y in &b.values {
            half_wins += match x.total_cmp(y) {
                std::cmp::Ordering::Greater => 2,
                std::cmp::Ordering::Equal => 1,
                std::cmp::Ordering::Less => 0,
            };
        }
    }
    half_wins as f64 / (2 * a.len() * b.len()) as f64
}

/// SplitMix64 (Steele, Lea & Flood 2014; Vigna's `splitmix64.c`): a 64-bit
/// counter advanced by the golden-ratio increment and hashed. Written out here
/// so that its stream is fixed forever, unlike a crate's generator or its
/// range sampling.
struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform index in `0..n` (n > 0) by Lemire's multiply-and-reject
    /// ("Fast random integer generation in an interval", 2019): the high word of
    /// `r·n` is the index; low words below `2^64 mod n` are rejected, which
    /// removes the bias a plain `r % n` has.
    fn below(&mut self, n: usize) -> usize {
        let n = n as u64;
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        if (m as u64) < n {
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
            }
        }
        (m >> 64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_published_stream() {
        // Seed 1234567, Rosetta Code "Pseudo-random numbers/Splitmix64", which
        // reproduces Vigna's splitmix64.c.
        let mut rng = SplitMix64::new(1_234_567);
        let got: Vec<u64> = (0..5).map(|_| rng.next_u64()).collect();
        assert_eq!(
            got,
            [
                6_457_827_717_110_365_317,
                3_203_168_211_198_807_973,
                9_817_491_932_198_370_423,
                4_593_380_528_125_082_431,
                16_408_922_859_458_223_821,
            ]
        );
    }

    #[test]
    fn below_stays_in_range_and_is_uniform() {
        let mut rng = SplitMix64::new(7);
        for n in [1usize, 2, 3, 5, 7, usize::MAX / 3 + 1, usize::MAX] {
            for _ in 0..1_000 {
                assert!(rng.below(n) < n);
            }
        }
        // 3 buckets, 300,000 draws: each count's sd is about 258, so 2,000 is
        // nearly 8 sd; a modulo-biased or broken sampler would be far off.
        let mut counts = [0usize; 3];
        for _ in 0..300_000 {
            counts[rng.below(3)] += 1;
        }
        for c in counts {
            assert!(c.abs_diff(100_000) < 2_000, "{counts:?}");
        }
    }
}
