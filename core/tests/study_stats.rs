//! Study statistics checked against values computed independently: small
//! cases worked by hand here, and `study_stats_reference.py` (numpy, scipy,
//! exact rational arithmetic and the exact bootstrap distribution by full
//! enumeration of the resamples).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use maelab_core::study::stats::{
    BootstrapOptions, MIN_RESAMPLES, Summary, compare, quantile, summarize,
};
use serde_json::{Value, json};

/// `got` equals `want` within `rel` of the larger magnitude (exactly, at 0).
fn assert_close(what: &str, got: f64, want: f64, rel: f64) {
    assert_near(what, got, want, rel, 0.0);
}

/// `got` equals `want` within `rel` of the larger magnitude plus `abs`.
fn assert_near(what: &str, got: f64, want: f64, rel: f64, abs: f64) {
    let tol = rel * got.abs().max(want.abs()) + abs;
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got:e}, want {want:e} (tolerance {rel:e} relative + {abs:e})"
    );
}

fn opts() -> BootstrapOptions {
    BootstrapOptions::default()
}

// ---- hand-worked cases ----

#[test]
fn mean_sd_min_max_of_one_to_four() {
    let s = summarize(&[3.0, 1.0, 4.0, 2.0], &opts());
    assert_eq!((s.n, s.excluded), (4, 0));
    assert_eq!(s.mean, Some(2.5));
    // Σ(x - 2.5)² = 2.25 + 0.25 + 0.25 + 2.25 = 5, / (n - 1) = 5/3.
    assert_close("sd", s.sd.unwrap(), (5.0f64 / 3.0).sqrt(), 1e-15);
    assert_eq!((s.min, s.max), (Some(1.0), Some(4.0)));
    let (lo, hi) = (s.ci_low.unwrap(), s.ci_high.unwrap());
    assert!(
        (1.0..2.5).contains(&lo) && (2.5..=4.0).contains(&hi) && hi > 2.5,
        "{lo} {hi}"
    );
}

#[test]
fn empty_single_and_two_values() {
    let s = summarize(&[], &opts());
    assert_eq!(s.n, 0);
    assert_eq!(
        (s.mean, s.sd, s.ci_low, s.ci_high, s.min, s.max),
        (None, None, None, None, None, None)
    );

    let s = summarize(&[0.7], &opts());
    assert_eq!((s.n, s.mean, s.sd), (1, Some(0.7), None));
    assert_eq!((s.ci_low, s.ci_high), (Some(0.7), Some(0.7)));

    // [0, 1]: resample means 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4, so
    // both 2.5% and 97.5% quantiles sit on the extremes.
    let s = summarize(&[0.0, 1.0], &opts());
    assert_eq!((s.ci_low, s.ci_high), (Some(0.0), Some(1.0)));

    assert_eq!(compare(&[], &[1.0], &opts()), None);
    assert_eq!(compare(&[1.0], &[], &opts()), None);
}

#[test]
fn at_three_seeds_the_interval_of_the_mean_is_the_range() {
    // Each extreme is resampled three times with probability 1/27 = 3.7%, more
    // than the 2.5% tail: the 95% interval of a 3-seed mean is [min, max].
    let s = summarize(&[0.712, 0.698, 0.731], &opts());
    assert_eq!((s.ci_low, s.ci_high), (Some(0.698), Some(0.731)));
}

#[test]
fn identical_values_give_zero_width_and_no_t_test() {
    let s = summarize(&[0.5; 3], &opts());
    assert_eq!(
        (s.mean, s.sd, s.ci_low, s.ci_high),
        (Some(0.5), Some(0.0), Some(0.5), Some(0.5))
    );

    let c = compare(&[0.5; 3], &[0.5; 3], &opts()).unwrap();
    assert_eq!((c.diff, c.ci_low, c.ci_high), (0.0, 0.0, 0.0));
    assert_eq!((c.welch_t, c.welch_df, c.p_value), (None, None, None));
    assert_eq!(c.prob_improvement, 0.5);
    assert!(!c.distinguishable);

    let c = compare(&[1.0; 3], &[0.0; 3], &opts()).unwrap();
    assert_eq!(
        (c.diff, c.ci_low, c.ci_high, c.prob_improvement),
        (1.0, 1.0, 1.0, 1.0)
    );
    assert_eq!(c.p_value, None);
    assert!(c.distinguishable);
}

#[test]
fn probability_of_improvement_counts_ties_half() {
    // 1 vs {2,2,4}: 0; 2 vs {2,2,4}: ½+½+0; 3 vs {2,2,4}: 1+1+0. 3 of 9 pairs.
    let c = compare(&[1.0, 2.0, 3.0], &[2.0, 2.0, 4.0], &opts()).unwrap();
    assert_close("poi", c.prob_improvement, 1.0 / 3.0, 1e-15);
    let c = compare(&[2.0], &[2.0], &opts()).unwrap();
    assert_eq!(c.prob_improvement, 0.5);
    // A tie between sides with different minima: 0.1 vs 0.1 is half a win
    // out of 4 pairs, though (0.1 - (-2)) + (-2) is not 0.1 in binary.
    let c = compare(&[-2.0, 0.1], &[0.1, 5.0], &opts()).unwrap();
    assert_eq!(c.prob_improvement, 0.125);
    let c = compare(&[5.0, 6.0], &[1.0, 2.0, 3.0], &opts()).unwrap();
    assert_eq!(c.prob_improvement, 1.0);
}

#[test]
fn welch_by_hand() {
    // [1,2,3]: mean 2, s² 1; [4,6,8]: mean 6, s² 4. se² = 1/3 + 4/3 = 5/3,
    // t = -4 / sqrt(5/3); df = (5/3)² / ((1/3)²/2 + (4/3)²/2) = 50/17.
    let c = compare(&[1.0, 2.0, 3.0], &[4.0, 6.0, 8.0], &opts()).unwrap();
    assert_eq!(c.diff, -4.0);
    assert_close("t", c.welch_t.unwrap(), -4.0 / (5.0f64 / 3.0).sqrt(), 1e-14);
    assert_close("df", c.welch_df.unwrap(), 50.0 / 17.0, 1e-14);
    assert!(c.distinguishable, "{c:?}");

    // A zero-variance baseline leaves df = n_arm - 1, where Student's t has a
    // closed form. df = 2: P(|T| ≥ t) = 1 - t / sqrt(2 + t²). [1,2,3] vs [0,0,0]:
    // t = 2 / sqrt(1/3) = sqrt(12), p = 1 - sqrt(12/14).
    let c = compare(&[1.0, 2.0, 3.0], &[0.0; 3], &opts()).unwrap();
    assert_close("t", c.welch_t.unwrap(), 12f64.sqrt(), 1e-14);
    assert_close("df", c.welch_df.unwrap(), 2.0, 1e-14);
    assert_close(
        "p (df 2)",
        c.p_value.unwrap(),
        1.0 - (12.0f64 / 14.0).sqrt(),
        1e-12,
    );
    // df = 1 (Cauchy): P(|T| ≥ t) = 1 - (2/π) atan t. [0,2] vs [0,0,0]: s² = 2,
    // t = 1 / sqrt(2/2) = 1, p = 1 - (2/π)(π/4) = 1/2.
    let c = compare(&[0.0, 2.0], &[0.0; 3], &opts()).unwrap();
    assert_close("t", c.welch_t.unwrap(), 1.0, 1e-14);
    assert_close("df", c.welch_df.unwrap(), 1.0, 1e-14);
    assert_close("p (df 1)", c.p_value.unwrap(), 0.5, 1e-12);

    // One seed on a side: no variance estimate, no test, and a difference
    // whose interval excludes 0 is still not called distinguishable.
    let c = compare(&[0.7], &[0.6, 0.65, 0.62], &opts()).unwrap();
    assert_eq!((c.welch_t, c.welch_df, c.p_value), (None, None, None));
    assert!(c.ci_low > 0.0 && !c.distinguishable, "{c:?}");
    let c = compare(&[0.7], &[0.6], &opts()).unwrap();
    assert_eq!(
        (c.ci_low, c.ci_high, c.distinguishable),
        (c.diff, c.diff, false)
    );
}

#[test]
fn quantile_is_numpy_linear() {
    let x = [1.0, 2.0, 3.0, 4.0];
    // h = (n - 1) p: p = 0.25 -> h = 0.75 -> 1 + 0.75 (2 - 1).
    assert_eq!(quantile(&x, 0.25), Some(1.75));
    assert_eq!(quantile(&x, 0.5), Some(2.5));
    assert_eq!(quantile(&x, 0.0), Some(1.0));
    assert_eq!(quantile(&x, 1.0), Some(4.0));
    assert_eq!(quantile(&x, 7.0), Some(4.0));
    assert_eq!(quantile(&x, f64::NAN), None);
    assert_eq!(quantile(&[], 0.5), None);
    assert_eq!(quantile(&[5.0], 0.3), Some(5.0));
}

#[test]
fn non_finite_values_are_ignored_and_counted() {
    let clean = summarize(&[1.0, 2.0, 3.0], &opts());
    let dirty = summarize(
        &[1.0, f64::NAN, 2.0, f64::INFINITY, 3.0, f64::NEG_INFINITY],
        &opts(),
    );
    assert_eq!(dirty.excluded, 3);
    assert_eq!(
        dirty,
        Summary {
            excluded: 3,
            ..clean
        }
    );

    let clean = compare(&[1.0, 2.0, 3.0], &[2.0, 2.5], &opts());
    let dirty = compare(
        &[f64::NAN, 1.0, 2.0, 3.0],
        &[2.0, f64::INFINITY, 2.5],
        &opts(),
    );
    assert_eq!(dirty, clean);
    assert_eq!(compare(&[f64::NAN], &[1.0], &opts()), None);
    assert_eq!(summarize(&[f64::NAN], &opts()).mean, None);
}

#[test]
fn reproducible_order_free_and_seeded() {
    let arm = [71.2, 69.8, 73.1, 70.4, 72.6];
    let base = [68.9, 70.3, 67.5];
    assert_eq!(summarize(&arm, &opts()), summarize(&arm, &opts()));
    assert_eq!(compare(&arm, &base, &opts()), compare(&arm, &base, &opts()));

    // The same seeds in another order: the same numbers.
    let shuffled = [72.6, 70.4, 71.2, 73.1, 69.8];
    assert_eq!(summarize(&shuffled, &opts()), summarize(&arm, &opts()));
    assert_eq!(
        compare(&shuffled, &[70.3, 67.5, 68.9], &opts()),
        compare(&arm, &base, &opts())
    );

    // Another RNG seed moves the Monte-Carlo bounds a little, nothing else.
    // (Eight irregular values: with five, the bounds often sit on the same atom
    // of the 126-valued resample-mean distribution whatever the seed.)
    let eight = [
        0.4137, 0.4719, 0.3911, 0.5203, 0.4458, 0.4626, 0.4032, 0.4897,
    ];
    let other = BootstrapOptions { seed: 1, ..opts() };
    let (a, b) = (summarize(&eight, &opts()), summarize(&eight, &other));
    assert_eq!((a.mean, a.sd), (b.mean, b.sd));
    assert_ne!((a.ci_low, a.ci_high), (b.ci_low, b.ci_high));

    // Too few resamples are raised to the minimum.
    let few = BootstrapOptions {
        resamples: 10,
        ..opts()
    };
    let min = BootstrapOptions {
        resamples: MIN_RESAMPLES,
        ..opts()
    };
    assert_eq!(summarize(&arm, &few), summarize(&arm, &min));
}

#[test]
fn level_bounds_the_interval() {
    let x = [0.712, 0.698, 0.731, 0.705];
    let full = summarize(
        &x,
        &BootstrapOptions {
            level: 1.0,
            ..opts()
        },
    );
    // level 1: the extreme replicates, which include the all-min and all-max resamples.
    assert_eq!((full.ci_low, full.ci_high), (Some(0.698), Some(0.731)));
    let narrow = summarize(
        &x,
        &BootstrapOptions {
            level: 0.5,
            ..opts()
        },
    );
    let wide = summarize(&x, &opts());
    assert!(wide.ci_low < narrow.ci_low && narrow.ci_high < wide.ci_high);
    let nan = summarize(
        &x,
        &BootstrapOptions {
            level: f64::NAN,
            ..opts()
        },
    );
    assert_eq!(nan, wide);
}

// ---- the independent reference (numpy/scipy) ----

struct Case {
    name: &'static str,
    arm: Vec<f64>,
    base: Vec<f64>,
}

fn cases() -> Vec<Case> {
    let c = |name, arm: &[f64], base: &[f64]| Case {
        name,
        arm: arm.to_vec(),
        base: base.to_vec(),
    };
    vec![
        // The study size: 3 seeds an arm (top-1 accuracies).
        c("n3 vs n3", &[0.712, 0.698, 0.731], &[0.689, 0.703, 0.675]),
        c(
            "n5 vs n3",
            &[71.2, 69.8, 73.1, 70.4, 72.6],
            &[68.9, 70.3, 67.5],
        ),
        c("ties across sides", &[0.1, -2.0, 0.3], &[0.1, 0.3, 0.9]),
        c("n4 vs n2", &[31.05, 29.87, 30.6, 30.02], &[29.1, 30.4]),
        // One side without variance; both sides without variance.
        c("zero-variance arm", &[0.5, 0.5, 0.5], &[0.4, 0.45, 0.52]),
        c("identical", &[0.5, 0.5, 0.5], &[0.5, 0.5, 0.5]),
        c("one seed", &[0.7], &[0.6, 0.65, 0.62]),
        // Large offsets: 1e6 plus noise of order 1, and of order 1e-3.
        c(
            "offset 1e6, noise 1",
            &[
                1_000_000.25,
                1_000_001.5,
                1_000_000.75,
                1_000_002.125,
                1_000_000.5,
            ],
            &[1_000_000.0, 1_000_000.375, 999_999.5],
        ),
        c(
            "offset 1e6, noise 1e-3",
            &[1_000_000.001_2, 1_000_000.003_1, 1_000_000.000_7],
            &[1_000_000.000_4, 999_999.999_1, 1_000_000.001_0],
        ),
        // Far apart (a small p-value) and more seeds (larger df, no enumeration).
        c(
            "separated",
            &[100.0, 100.1, 99.9, 100.05, 99.95],
            &[0.0, 0.1, -0.1],
        ),
        c(
            "n8 vs n6",
            &[0.41, 0.47, 0.39, 0.52, 0.44, 0.46, 0.40, 0.49],
            &[0.38, 0.42, 0.36, 0.41, 0.35, 0.43],
        ),
    ]
}

/// The project's virtualenv python (scripts/env.sh sets MAELAB_VENV), else python3.
fn python() -> PathBuf {
    let venv = std::env::var_os("MAELAB_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv"));
    let candidate = venv.join("bin/python");
    if candidate.exists() {
        candidate
    } else {
        PathBuf::from("python3")
    }
}

/// Runs the reference script, or `None` (skip) when numpy/scipy are missing
/// outside CI. In CI a missing scipy is a failure: the check must not vanish.
fn reference(request: &Value) -> Option<Value> {
    let python = python();
    let have_scipy = Command::new(&python)
        .args(["-c", "import numpy, scipy"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have_scipy {
        let msg = format!(
            "numpy/scipy not importable by {}: run `scripts/setup --test`",
            python.display()
        );
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{msg}");
        }
        eprintln!("skipped: scipy not installed ({msg})");
        return None;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/study_stats_reference.py");
    let mut child = Command::new(&python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the reference script");
    // serde_json writes each f64 as its shortest round-trip decimal, which
    // Python parses back to the same binary value.
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "reference script failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("reference JSON"))
}

/// A number of the reference's answer; `None` for its null (undefined).
fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key)
        .unwrap_or_else(|| panic!("reference lacks {key}"))
        .as_f64()
}

/// A Monte-Carlo bound must lie in the reference band (the exact bootstrap
/// distribution's quantiles at p ∓ 6 binomial sd; see the script's doc).
/// `slack` absorbs rounding between numpy's means and ours.
fn assert_in_band(what: &str, got: f64, band: &Value, slack: f64) -> f64 {
    let (lo, hi) = (num(band, "lo").unwrap(), num(band, "hi").unwrap());
    assert!(
        lo - slack <= got && got <= hi + slack,
        "{what}: {got} outside the exact band [{lo}, {hi}] (limit {}, linear {})",
        band["limit"],
        band["linear"]
    );
    hi - lo
}

#[test]
fn matches_numpy_scipy_and_the_exact_bootstrap() {
    let opts = BootstrapOptions::default();
    assert!(opts.resamples >= 10_000);
    let cases = cases();
    let mut rng_values = Vec::new();
    let mut state = 0.123_f64;
    for _ in 0..1_001 {
        // A deterministic irregular list for the quantile check.
        state = (state * 9_301.0 + 0.497).fract();
        rng_values.push(state * 100.0 - 30.0);
    }
    let ps = [
        0.0,
        0.01,
        0.025,
        0.1,
        0.25,
        1.0 / 3.0,
        0.5,
        0.9,
        0.975,
        0.999,
        1.0,
    ];
    let request = json!({
        "resamples": opts.resamples,
        "level": opts.level,
        "cases": cases.iter().map(|c| json!({"name": c.name, "arm": c.arm, "base": c.base})).collect::<Vec<_>>(),
        "quantiles": [
            {"values": [1.0, 2.0, 3.0, 4.0], "ps": ps},
            {"values": rng_values, "ps": ps},
        ],
    });
    let Some(reference) = reference(&request) else {
        return;
    };
    println!("reference: {}", reference["versions"]);

    // Quantile: same operations as numpy's linear method, so equal to the last bit or so.
    let mut sorted = rng_values.clone();
    sorted.sort_by(f64::total_cmp);
    for (values, want) in [
        (&vec![1.0, 2.0, 3.0, 4.0], &reference["quantiles"][0]),
        (&sorted, &reference["quantiles"][1]),
    ] {
        for (p, w) in ps.iter().zip(want.as_array().unwrap()) {
            assert_close(
                &format!("quantile p={p}"),
                quantile(values, *p).unwrap(),
                w.as_f64().unwrap(),
                1e-15,
            );
        }
    }

    for (case, want) in cases.iter().zip(reference["cases"].as_array().unwrap()) {
        let name = case.name;
        assert_eq!(want["name"], name);
        let scale = case
            .arm
            .iter()
            .chain(&case.base)
            .fold(0.0f64, |m, x| m.max(x.abs()));
        // A mean or difference near 0 (e.g. of [0, 0.1, -0.1]) is only as exact
        // as sums of values of this size can be: a few ulp of `scale`.
        let abs = 8.0 * f64::EPSILON * scale;
        // Bootstrap means near 1e6 differ between numpy and us by a few ulp of 1e6.
        let slack = 1e-12 * scale;
        let mut widths = Vec::new();

        for (side, values) in [("arm", &case.arm), ("base", &case.base)] {
            let s = summarize(values, &opts);
            let w = &want[side];
            let what = |stat: &str| format!("{name}: {side} {stat}");
            assert_eq!(s.n as u64, w["n"].as_u64().unwrap(), "{}", what("n"));
            let mean = s.mean.unwrap();
            assert_near(
                &what("mean"),
                mean,
                num(w, "mean_exact").unwrap(),
                1e-15,
                abs,
            );
            assert_near(
                &what("mean vs numpy"),
                mean,
                num(w, "mean_numpy").unwrap(),
                1e-9,
                abs,
            );
            match (s.sd, num(w, "sd_exact"), num(w, "sd_numpy")) {
                (Some(sd), Some(exact), Some(np)) => {
                    assert_near(&what("sd"), sd, exact, 1e-12, abs);
                    assert_near(&what("sd vs numpy"), sd, np, 1e-9, abs);
                }
                (None, None, None) => {}
                other => panic!("{}: {other:?}", what("sd")),
            }
            assert_eq!(s.min, num(w, "min"), "{}", what("min"));
            assert_eq!(s.max, num(w, "max"), "{}", what("max"));
            if !w["ci_low"].is_null() {
                widths.push(assert_in_band(
                    &what("ci_low"),
                    s.ci_low.unwrap(),
                    &w["ci_low"],
                    slack,
                ));
                widths.push(assert_in_band(
                    &what("ci_high"),
                    s.ci_high.unwrap(),
                    &w["ci_high"],
                    slack,
                ));
            }
        }

        let c = compare(&case.arm, &case.base, &opts).unwrap();
        let w = &want["compare"];
        let what = |stat: &str| format!("{name}: {stat}");
        assert_near(
            &what("diff"),
            c.diff,
            num(w, "diff_exact").unwrap(),
            1e-12,
            abs,
        );
        assert_near(
            &what("diff vs numpy"),
            c.diff,
            num(w, "diff_numpy").unwrap(),
            1e-9,
            abs,
        );
        // scipy's t carries numpy's error in the difference of means (`abs`),
        // relative to that difference; ours is checked against the exact t.
        let scipy_rel = 1e-9_f64.max(abs / c.diff.abs().max(f64::MIN_POSITIVE));
        match (c.welch_t, c.welch_df, c.p_value) {
            (Some(t), Some(df), Some(p)) => {
                assert_close(&what("t"), t, num(w, "t_exact").unwrap(), 1e-12);
                assert_close(&what("df"), df, num(w, "df_exact").unwrap(), 1e-12);
                // scipy's t distribution at the exact t and df.
                assert_close(&what("p vs t.sf"), p, num(w, "p_exact_t").unwrap(), 1e-9);
                let warned = w["scipy_warnings"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty());
                if warned {
                    // scipy says its own moments lost digits (constant data);
                    // the exact values above are the reference here.
                    println!(
                        "{name}: ttest_ind not compared, scipy warned {}",
                        w["scipy_warnings"]
                    );
                } else {
                    assert_close(
                        &what("t vs ttest_ind"),
                        t,
                        num(w, "t_scipy").unwrap(),
                        scipy_rel,
                    );
                    assert_close(
                        &what("df vs ttest_ind"),
                        df,
                        num(w, "df_scipy").unwrap(),
                        1e-9,
                    );
                    assert_close(
                        &what("p vs ttest_ind"),
                        p,
                        num(w, "p_scipy").unwrap(),
                        scipy_rel,
                    );
                }
            }
            (None, None, None) => {
                assert!(
                    w["t_exact"].is_null() && w["p_scipy"].is_null(),
                    "{}",
                    what("welch defined")
                );
            }
            other => panic!("{}: {other:?}", what("welch")),
        }
        assert_close(
            &what("prob_improvement"),
            c.prob_improvement,
            num(w, "poi").unwrap(),
            1e-15,
        );
        if !w["ci_low"].is_null() {
            widths.push(assert_in_band(
                &what("diff ci_low"),
                c.ci_low,
                &w["ci_low"],
                slack,
            ));
            widths.push(assert_in_band(
                &what("diff ci_high"),
                c.ci_high,
                &w["ci_high"],
                slack,
            ));
        }
        let excludes_0 = c.ci_low > 0.0 || c.ci_high < 0.0;
        assert_eq!(
            c.distinguishable,
            excludes_0 && c.n_arm >= 2 && c.n_base >= 2
        );
        println!(
            "{name}: diff {:.6} CI [{:.6}, {:.6}] p {:?} PoI {:.4}; widest exact band {:.3e}",
            c.diff,
            c.ci_low,
            c.ci_high,
            c.p_value,
            c.prob_improvement,
            widths.iter().fold(0.0f64, |m, w| m.max(*w)),
        );
    }
}
