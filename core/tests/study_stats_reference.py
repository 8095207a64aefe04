"""Independent reference values for core/tests/study_stats.rs (test-only).

Reads JSON on stdin:
    {"resamples": B, "level": 0.95,
     "cases": [{"name": str, "arm": [float], "base": [float]}],
     "quantiles": [{"values": [float], "ps": [float]}]}
and prints JSON with, per case and side: numpy's mean and sd (ddof=1) and the
exact ones (rational arithmetic on the exact binary values, square roots to 50
digits); per case: scipy's Welch test (ttest_ind, equal_var=False), the exact
t and df and scipy's two-sided p-value for them (2 t.sf(|t|, df)), the exact probability of improvement, and the quantiles of the
EXACT bootstrap distribution, found by enumerating all n^n resamples of each
side (every resample equally likely; for the difference, all pairs of
resamples): with numpy.quantile's default (linear) method, as asked, and the
distribution's own quantile F^-1(p) (method "inverted_cdf").

The second is what a Monte-Carlo bootstrap converges to: its p-quantile of B
draws lies between the order statistics around (B - 1) p, and the share of
draws at or below a value x is Binomial(B, F(x)) / B. So its bound is checked
against the band [F^-1(p - d), F^-1(p + d)], d = 6 sqrt(p (1 - p) / B) + 2/B:
6 binomial standard deviations plus the slack of type-7 interpolation between
neighbouring order statistics. A correct sampler leaves the band with
probability below 1e-8 per bound. (The linear quantile of the enumerated list
is not that limit: for n = 3, 1 of the 27 resamples is all-minimum, 3.7% of
the mass, so F^-1(0.025) is the minimum while linear interpolation between the
27 points gives more.)
Undefined values are null.
"""

import itertools
import json
import sys
import warnings
from decimal import Decimal, getcontext
from fractions import Fraction

import numpy as np
import scipy
from scipy import stats

getcontext().prec = 50
MAX_ENUMERATED = 2_000_000


def dec(q: Fraction) -> Decimal:
    return Decimal(q.numerator) / Decimal(q.denominator)


def exact_mean(xs):
    return sum(map(Fraction, xs)) / len(xs)


def exact_var(xs):
    if len(xs) < 2:
        return None
    m = exact_mean(xs)
    return sum((Fraction(x) - m) ** 2 for x in xs) / (len(xs) - 1)


def resample_means(xs):
    """Means of all n^n resamples, or None when there are too many."""
    n = len(xs)
    if n == 0 or n**n > MAX_ENUMERATED:
        return None
    idx = np.array(list(itertools.product(range(n), repeat=n)), dtype=np.intp)
    return np.asarray(xs, dtype=np.float64)[idx].mean(axis=1)


def band(dist, p, resamples):
    if dist is None:
        return None
    d = 6 * np.sqrt(p * (1 - p) / resamples) + 2 / resamples
    lo, limit, hi = np.quantile(dist, [max(p - d, 0.0), p, min(p + d, 1.0)], method="inverted_cdf")
    linear = np.quantile(dist, p)
    return {"limit": float(limit), "linear": float(linear), "lo": float(lo), "hi": float(hi)}


def bands(dist, level, resamples):
    tail = (1 - level) / 2
    return band(dist, tail, resamples), band(dist, 1 - tail, resamples)


def side(xs, level, resamples):
    n = len(xs)
    var = exact_var(xs)
    ci_low, ci_high = bands(resample_means(xs), level, resamples)
    return {
        "n": n,
        "mean_numpy": float(np.mean(xs)),
        "mean_exact": float(exact_mean(xs)),
        "sd_numpy": float(np.std(xs, ddof=1)) if n >= 2 else None,
        "sd_exact": float(dec(var).sqrt()) if var is not None else None,
        "min": min(xs),
        "max": max(xs),
        "ci_low": ci_low,
        "ci_high": ci_high,
    }


def compare(arm, base, level, resamples):
    diff = exact_mean(arm) - exact_mean(base)
    out = {
        "diff_numpy": float(np.mean(arm) - np.mean(base)),
        "diff_exact": float(diff),
        "t_scipy": None,
        "df_scipy": None,
        "p_scipy": None,
        "t_exact": None,
        "df_exact": None,
        "p_exact_t": None,
        "scipy_warnings": [],
    }
    va, vb = exact_var(arm), exact_var(base)
    if va is not None and vb is not None and va + vb > 0:
        a, b = va / len(arm), vb / len(base)
        out["t_exact"] = float(dec(diff) / dec(a + b).sqrt())
        out["df_exact"] = float((a + b) ** 2 / (a**2 / (len(arm) - 1) + b**2 / (len(base) - 1)))
        out["p_exact_t"] = float(2 * stats.t.sf(abs(out["t_exact"]), out["df_exact"]))
        # scipy warns when its naive means lose digits (values near 1e6 with
        # tiny spreads); the caller then trusts the exact values instead.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = stats.ttest_ind(arm, base, equal_var=False)
        out["scipy_warnings"] = [str(w.message) for w in caught]
        out["t_scipy"] = float(res.statistic)
        out["df_scipy"] = float(res.df)
        out["p_scipy"] = float(res.pvalue)
    half_wins = sum(2 if x > y else 1 if x == y else 0 for x in arm for y in base)
    out["poi"] = float(Fraction(half_wins, 2 * len(arm) * len(base)))

    ma, mb = resample_means(arm), resample_means(base)
    dist = None
    if ma is not None and mb is not None and ma.size * mb.size <= MAX_ENUMERATED:
        dist = (ma[:, None] - mb[None, :]).ravel()
    out["ci_low"], out["ci_high"] = bands(dist, level, resamples)
    return out


def main():
    req = json.load(sys.stdin)
    level, resamples = req["level"], req["resamples"]
    cases = []
    for case in req["cases"]:
        arm, base = case["arm"], case["base"]
        cases.append(
            {
                "name": case["name"],
                "arm": side(arm, level, resamples),
                "base": side(base, level, resamples),
                "compare": compare(arm, base, level, resamples),
            }
        )
    quantiles = [
        [float(q) for q in np.quantile(np.asarray(qc["values"], dtype=np.float64), qc["ps"])]
        for qc in req.get("quantiles", [])
    ]
    json.dump(
        {
            "versions": {"numpy": np.__version__, "scipy": scipy.__version__},
            "cases": cases,
            "quantiles": quantiles,
        },
        sys.stdout,
        allow_nan=False,
    )


if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        main()
