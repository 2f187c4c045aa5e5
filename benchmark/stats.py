"""Paired-seed statistics: is configuration A better than B on a score, run on the same seeds?

Seed s of A and seed s of B share the victim and the queries, so the comparison is on the paired
differences d_s = a_s - b_s (n seeds):

- ``mean_diff`` and its 95% t interval: mean(d) -/+ t_{0.975, n-1} * sd(d) / sqrt(n);
- ``p_ttest``: two-sided paired t test (``scipy.stats.ttest_rel``);
- ``p_wilcoxon``: two-sided Wilcoxon signed-rank test (``scipy.stats.wilcoxon``; exact for small n;
  1.0 when every difference is 0). With 5 seeds its smallest possible p is 0.0625, so at 5 seeds
  only the t test can reach 0.05;
- ``mde``: minimum detectable effect, the smallest true mean difference the paired t test finds
  (two-sided, alpha 0.05) with 80% power given sd(d) and n (noncentral t), in the score's units;
- ``mean_a`` / ``mean_b`` with their own 95% t intervals.

``verdict``: ``A > B`` or ``A < B`` when the interval of the difference excludes 0, else ``tied``.
Used by ``python -m benchmark compare A.json... --against B.json...``. Documented in docs/metrics.md.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import optimize, stats

from benchmark.errors import ConfigError


def mean_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the mean with its two-sided t interval (low = high = mean for one value)."""
    x = np.asarray(values, dtype=np.float64)
    m = float(x.mean())
    if len(x) < 2:
        return m, m, m
    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return m, m - half, m + half


def _power_nc(nc: float, df: int, alpha: float) -> float:
    """Power of the two-sided t test (df) at noncentrality ``nc``."""
    crit = stats.t.ppf(1 - alpha / 2, df)
    p = float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))
    return 1.0 if math.isnan(p) else p  # scipy's nct gives nan far in the tail, where the power is 1


def paired_power(effect: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t test to find a true mean difference ``effect``."""
    if n < 2 or sd <= 0:
        return float("nan")
    return _power_nc(effect * math.sqrt(n) / sd, n - 1, alpha)


def min_detectable_effect(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest mean difference the two-sided paired t test detects with ``power`` (score units);
    0 if the differences do not vary, nan with fewer than 2 pairs."""
    if n < 2:
        return float("nan")
    if sd <= 0:
        return 0.0
    df = n - 1
    hi = float(stats.t.ppf(1 - alpha / 2, df)) + 3.0
    while _power_nc(hi, df, alpha) < power:
        hi *= 2
    nc = optimize.brentq(lambda c: _power_nc(c, df, alpha) - power, 0.0, hi, xtol=1e-12)
    return float(nc * sd / math.sqrt(n))


def paired_comparison(a_scores: Sequence[float], b_scores: Sequence[float], alpha: float = 0.05,
                      power: float = 0.8) -> dict:
    """Paired comparison of A and B (same seeds, in the same order); see the module docstring."""
    a = np.asarray(a_scores, dtype=np.float64)
    b = np.asarray(b_scores, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ConfigError(f"paired comparison needs two equally long lists of scores, got {len(a)} and {len(b)}")
    if len(a) < 2:
        raise ConfigError(f"paired comparison needs at least 2 paired seeds, got {len(a)}")
    d = a - b
    n = len(d)
    sd = float(d.std(ddof=1))
    mean, low, high = mean_interval(d, 1 - alpha)
    if sd > 0:
        p_t = float(stats.ttest_rel(a, b).pvalue)
    else:
        p_t = 1.0 if mean == 0 else 0.0
    p_w = 1.0 if not np.any(d != 0) else float(stats.wilcoxon(a, b).pvalue)
    ma, la, ha = mean_interval(a, 1 - alpha)
    mb, lb, hb = mean_interval(b, 1 - alpha)
    verdict = "A > B" if low > 0 else "A < B" if high < 0 else "tied"
    return {"n": n, "mean_a": ma, "ci_a": [la, ha], "mean_b": mb, "ci_b": [lb, hb],
            "mean_diff": mean, "ci_diff": [low, high], "sd_diff": sd, "p_ttest": p_t, "p_wilcoxon": p_w,
            "mde": min_detectable_effect(sd, n, alpha, power), "power": power, "alpha": alpha, "verdict": verdict}


# ---- result files ---------------------------------------------------------------------------

def load_scores(paths: Sequence[str | Path], metric: str) -> dict[int, float]:
    """seed -> ``scores[metric]`` of each result JSON (one file per seed)."""
    out: dict[int, float] = {}
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read result {path}: {exc}") from None
        seed = data.get("config", {}).get("seed")
        value = data.get("scores", {}).get(metric)
        if seed is None or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: no config.seed or no numeric scores.{metric}")
        if seed in out:
            raise ConfigError(f"{path}: seed {seed} given twice on one side")
        out[int(seed)] = float(value)
    return out


def compare_files(a_paths: Sequence[str | Path], b_paths: Sequence[str | Path], metric: str) -> dict:
    """Pair the result files of A and B by seed and compare ``metric``; the seeds both sides have."""
    a, b = load_scores(a_paths, metric), load_scores(b_paths, metric)
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        raise ConfigError(f"need at least 2 seeds present on both sides, got {seeds}")
    out = paired_comparison([a[s] for s in seeds], [b[s] for s in seeds])
    return {"metric": metric, "seeds": seeds, "unpaired_seeds": sorted(set(a) ^ set(b)), **out}


def format_comparison(r: dict) -> str:
    """One readable block for the CLI."""
    return (f"{r['metric']} over {r['n']} paired seeds {r['seeds']}\n"
            f"  A: {r['mean_a']:.4f} [{r['ci_a'][0]:.4f}, {r['ci_a'][1]:.4f}]\n"
            f"  B: {r['mean_b']:.4f} [{r['ci_b'][0]:.4f}, {r['ci_b'][1]:.4f}]\n"
            f"  A - B: {r['mean_diff']:+.4f}, 95% CI [{r['ci_diff'][0]:+.4f}, {r['ci_diff'][1]:+.4f}], "
            f"paired t p = {r['p_ttest']:.4g}, Wilcoxon p = {r['p_wilcoxon']:.4g}\n"
            f"  minimum detectable effect (80% power, alpha 0.05): {r['mde']:.4f}\n"
            f"  verdict: {r['verdict']}"
            + (f"\n  seeds on one side only (ignored): {r['unpaired_seeds']}" if r["unpaired_seeds"] else ""))
