import importlib.util
import itertools
from pathlib import Path

import numpy as np
import pytest

from attacks._exits import estimate_exits


def _latencies(means, stds, weights, n=10_000, seed=0):
    rng = np.random.default_rng(seed)
    exits = rng.choice(len(means), n, p=np.asarray(weights) / sum(weights))
    lat = np.asarray(means)[exits] + np.asarray(stds)[exits] * rng.standard_normal(n)
    return lat, exits


@pytest.mark.parametrize("weights", [[0.25, 0.25, 0.25, 0.25], [0.64, 0.23, 0.03, 0.10], [0.7, 0.24, 0.01, 0.05]])
def test_kde_recovers_known_exits(weights):
    means, stds = [260e-6, 430e-6, 670e-6, 850e-6], [15e-6, 17e-6, 25e-6, 40e-6]
    lat, exits = _latencies(means, stds, weights)
    est = estimate_exits(lat)
    assert est.num_exits == 4
    # each boundary lies between the neighbouring exit means
    for b, lo, hi in zip(est.boundaries, means[:-1], means[1:]):
        assert lo < b < hi
    assert (est.labels == exits).mean() > 0.99


def test_kde_seven_exits():
    means = [100e-6 * (k + 1) for k in range(7)]
    lat, exits = _latencies(means, [5e-6] * 7, [1] * 7)
    est = estimate_exits(lat)
    assert est.num_exits == 7 and (est.labels == exits).mean() > 0.999


def test_constant_latency_is_one_exit():
    est = estimate_exits(np.full(500, 1e-3))
    assert est.num_exits == 1 and (est.labels == 0).all()


def test_uniform_jitter_hides_exits():
    lat, exits = _latencies([260e-6, 430e-6, 670e-6, 850e-6], [15e-6] * 4, [1, 1, 1, 1])
    rng = np.random.default_rng(1)
    est = estimate_exits(lat + rng.random(len(lat)) * 600e-6)
    assert (est.labels == exits).mean() < 0.8


def test_binned_density_matches_exact_kde():
    from scipy.stats import gaussian_kde

    from attacks._exits import binned_density

    rng = np.random.default_rng(0)
    z = np.concatenate([rng.normal(0.2, 0.02, 3000), rng.normal(0.7, 0.05, 1000)])
    kde = gaussian_kde(z)
    sigma = float(np.sqrt(kde.covariance[0, 0]))
    grid = np.linspace(-0.2, 1.2, 4096)
    exact, binned = kde(grid), binned_density(z, grid, sigma)
    assert np.abs(exact - binned).max() < 0.01 * exact.max()


# a 6-exit victim whose deep exits are rarely used (measured on sdn-tiny built with 6 exits, seed 2)
RARE_MEANS = [221e-6, 355e-6, 461e-6, 565e-6, 683e-6, 854e-6]
RARE_STDS = [8.8e-6, 9.3e-6, 8.0e-6, 9.3e-6, 14.4e-6, 21.3e-6]
RARE_WEIGHTS = [6816, 1542, 236, 36, 35, 1335]


@pytest.mark.parametrize("seed", range(3))
def test_rarely_used_exits_are_recovered(seed):
    lat, exits = _latencies(RARE_MEANS, RARE_STDS, RARE_WEIGHTS, seed=seed)
    est = estimate_exits(lat)
    assert est.num_exits == 6 and (est.labels == exits).mean() > 0.999
    # with the kernel sized by all exits together (half Scott, linear time) the prominence rule
    # alone misses them
    assert estimate_exits(lat, rare_prominence=0.005, log_time=False, refine=False).num_exits < 6


def test_sparse_tail_is_not_an_exit():
    """One exit with a long exponential tail: the low-prominence peaks made by stray samples in the
    tail count as exits on some draws without the significance test, on none with it."""
    draws = [200e-6 + np.random.default_rng(s).exponential(50e-6, 10_000) for s in range(20)]
    assert all(estimate_exits(lat).num_exits == 1 for lat in draws)
    assert max(estimate_exits(lat, min_z=0).num_exits for lat in draws) > 1


def test_exit_recovery_benchmark_script(capsys):
    """benchmarks/bench_exit_recovery.py: one draw of every case, a row each, rare exits found (and the
    calibrated EPYC profile's four exits by the current rule only); the speed table times both rules."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_exit_recovery.py"
    spec = importlib.util.spec_from_file_location("bench_exit_recovery", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    main = module.main
    assert main(["--draws", "1", "--rounds", "1"]) == 0
    recovery, timed = capsys.readouterr().out.split("\n\n")
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in recovery.splitlines()[2:]}
    assert len(rows) == 9 and rows["rare 6-exit"][0].strip() == "1 / 1"
    assert [c.strip() for c in rows["4-exit EPYC profile"][:2]] == ["1 / 1", "0 / 1"]  # current rule, the one before
    speeds = [line.split("|")[1:3] for line in timed.strip().splitlines()[2:]]
    assert [(r.strip().split(" (")[1], int(k)) for r, k in speeds] == [("default)", 7), ("before)", 7)]
    assert main(["--draws", "0", "--rounds", "0"]) == 2


def _separated_profiles(rng, n):
    """Realistic latency profiles: 3-7 exits, consecutive mean ratios 1.2-1.8, spreads 1-6 % of
    the mean, every exit at least 1 % of the queries; kept when the exits are separated: the exact
    mixture density has a valley at most 0.4 x the lower of each neighbouring pair of peaks."""
    from scipy.stats import norm

    out = []
    while len(out) < n:
        k = int(rng.integers(3, 8))
        means = rng.uniform(0.2e-3, 1e-3) * np.cumprod(np.r_[1, rng.uniform(1.2, 1.8, k - 1)])
        stds = means * rng.uniform(0.01, 0.06, k)
        w = 0.01 + (1 - 0.01 * k) * rng.dirichlet(np.ones(k))
        x = np.linspace(means[0] - 4 * stds[0], means[-1] + 4 * stds[-1], 20001)
        d = sum(wk * norm.pdf(x, m, s) for m, s, wk in zip(means, stds, w))
        peak = [d[np.abs(x - m) <= s].max() for m, s in zip(means, stds)]
        valley = [d[(x >= a) & (x <= b)].min() for a, b in itertools.pairwise(means)]
        if all(v <= 0.4 * min(p, q) for v, p, q in zip(valley, peak[:-1], peak[1:])):
            out.append((means, stds, w))
    return out


def test_separated_profiles_are_recovered():
    """Half of Scott's rule over all exits is wider than an exit's own spread when the exits lie
    far apart: it merged separated exits in 28 of these 60 profiles; the kernel from the spread
    within each exit (log time) finds every exit of all 60."""
    profiles = _separated_profiles(np.random.default_rng(0), 60)
    for i, (means, stds, w) in enumerate(profiles):
        lat, exits = _latencies(means, stds, w, seed=i)
        est = estimate_exits(lat)
        assert est.num_exits == len(means), (i, means, stds / means, w)
        assert (est.labels == exits).mean() > 0.98


@pytest.mark.parametrize("seed", range(5))
def test_calibrated_epyc_profile_keeps_four_exits(seed):
    """A profile calibrated on AMD EPYC (2 cores): exits 3 and 4 (6 % and 18 % of the queries)
    lie 0.45 ms apart, 4.1 of their spreads; half of Scott's rule merged them on every draw."""
    means, stds = [0.63e-3, 1.06e-3, 1.74e-3, 2.19e-3], [0.04e-3, 0.05e-3, 0.11e-3, 0.11e-3]
    lat, exits = _latencies(means, stds, [0.64, 0.12, 0.06, 0.18], seed=seed)
    est = estimate_exits(lat)
    assert est.num_exits == 4 and (est.labels == exits).mean() > 0.99
