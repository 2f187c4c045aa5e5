"""Paired-seed statistics on synthetic numbers whose answer is known, and the compare command."""

import json
import math

import numpy as np
import pytest
from scipy import stats

from benchmark.cli import main
from benchmark.stats import mean_interval, min_detectable_effect, paired_comparison, paired_power


def test_constant_shift_is_detected_exactly():
    a = [0.70, 0.72, 0.75, 0.71, 0.69]
    b = [x - 0.05 for x in a]
    r = paired_comparison(a, b)
    assert r["mean_diff"] == pytest.approx(0.05) and r["sd_diff"] == pytest.approx(0, abs=1e-12)
    assert r["ci_diff"] == pytest.approx([0.05, 0.05]) and r["verdict"] == "A > B"
    assert r["p_ttest"] == 0.0 and r["mde"] == 0.0
    assert r["p_wilcoxon"] == pytest.approx(0.0625)  # the smallest two-sided p with 5 pairs


def test_hand_computed_interval_and_pvalues():
    d = np.array([0.01, 0.03, -0.01, 0.02, 0.05])
    b = np.array([0.6, 0.7, 0.65, 0.62, 0.68])
    r = paired_comparison(b + d, b)
    mean, sd = d.mean(), d.std(ddof=1)  # 0.02, 0.0228...
    half = 2.7764451051977987 * sd / math.sqrt(5)  # t_{0.975, 4}
    assert r["mean_diff"] == pytest.approx(0.02) and r["ci_diff"] == pytest.approx([mean - half, mean + half])
    t = mean / (sd / math.sqrt(5))
    assert r["p_ttest"] == pytest.approx(2 * stats.t.sf(t, 4))
    # signed ranks of |d|: 0.01 ties with -0.01 (ranks 1.5, 1.5), 0.02 -> 3, 0.03 -> 4, 0.05 -> 5: W- = 1.5
    assert r["p_wilcoxon"] == pytest.approx(stats.wilcoxon(d).pvalue)
    assert r["verdict"] == "tied"  # the interval [-0.008, 0.048] holds 0
    assert r["mean_a"] == pytest.approx((b + d).mean()) and r["ci_a"][0] < r["mean_a"] < r["ci_a"][1]


def test_minimum_detectable_effect():
    # at the MDE the power is 80%; the normal approximation (z_0.975 + z_0.8) sd / sqrt(n) is a
    # lower bound that the t test needs more than with few pairs
    sd, n = 0.02, 5
    mde = min_detectable_effect(sd, n)
    assert paired_power(mde, sd, n) == pytest.approx(0.8, abs=1e-6)
    assert mde > (1.959964 + 0.841621) * sd / math.sqrt(n)
    assert mde / sd == pytest.approx(1.682, abs=2e-3)  # G*Power: d = 1.68 at n = 5 (Monte Carlo: 0.800)
    # many pairs: close to the normal approximation
    assert min_detectable_effect(1.0, 400) == pytest.approx((1.959964 + 0.841621) / 20, rel=0.01)
    assert math.isnan(min_detectable_effect(1.0, 1))


def test_mean_interval_and_errors():
    m, lo, hi = mean_interval([1.0, 2.0, 3.0])
    assert m == 2.0 and m - lo == hi - m == pytest.approx(4.302652729911275 / math.sqrt(3))
    assert mean_interval([5.0]) == (5.0, 5.0, 5.0)
    with pytest.raises(Exception, match="at least 2 paired seeds"):
        paired_comparison([1.0], [2.0])
    with pytest.raises(Exception, match="equally long"):
        paired_comparison([1.0, 2.0], [2.0])


def write_result(path, seed, clo, acc):
    path.write_text(json.dumps({"config": {"seed": seed}, "scores": {"clo": clo, "acc": acc}}))
    return str(path)


def test_compare_command_pairs_by_seed(tmp_path, capsys):
    a = [write_result(tmp_path / f"a{s}.json", s, 0.70 + 0.01 * s, 0.8) for s in range(5)]
    # B in another order, one seed more: pairing is by config.seed, the extra seed is ignored
    b = [write_result(tmp_path / f"b{s}.json", s, 0.65 + 0.01 * s + 0.001 * (s % 2), 0.8) for s in (4, 2, 0, 1, 3, 9)]
    assert main(["compare", *a, "--against", *b, "--metric", "clo", "--json"]) == 0
    (r,) = json.loads(capsys.readouterr().out)
    assert r["seeds"] == [0, 1, 2, 3, 4] and r["unpaired_seeds"] == [9]
    assert r["mean_diff"] == pytest.approx(0.05 - 0.0004) and r["verdict"] == "A > B"
    assert main(["compare", *a, "--against", *b]) == 0  # default metrics: those present
    out = capsys.readouterr().out
    assert "clo over 5 paired seeds" in out and "acc over 5" in out and "verdict: tied" in out
    assert main(["compare", *a, "--against", *b, "--metric", "cc_ratio"]) == 2
