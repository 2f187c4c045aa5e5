"""pytest-benchmark: output-strategy search at N = 100,000 samples, K = 7 exits (target < 1 s),
and the KDE exit estimation on the same N, by the current rule and by the one it replaced. Run:
``.venv/bin/pytest benchmarks/test_bench_strategy.py --benchmark-enable``."""

import numpy as np
import pytest
from _exits_before import estimate_exits as estimate_exits_before  # benchmarks/, on sys.path under pytest

from attacks._exits import estimate_exits
from attacks._strategy import exits_under, search_thresholds


@pytest.fixture(scope="module")
def instance():
    rng = np.random.default_rng(0)
    n, k = 100_000, 7
    conf = rng.beta(2, 1, size=(n, k))
    planted = np.append(rng.uniform(0.6, 0.95, k - 1), 0.0)
    target = exits_under(conf, planted)
    flip = rng.random(n) < 0.2  # 20% of the exits disagree with any threshold set
    target[flip] = rng.integers(0, k, flip.sum())
    return conf, target


def test_threshold_search_100k_7_exits(benchmark, instance):
    conf, target = instance
    _, score = benchmark.pedantic(search_thresholds, args=(conf, target), rounds=3, iterations=1)
    assert score >= 0.8 * len(target)


@pytest.mark.parametrize("rule", [
    pytest.param(estimate_exits, id="two-pass-log-time"),  # the default rule
    pytest.param(estimate_exits_before, id="single-pass-linear-time-before"),  # the rule it replaced (frozen copy)
])
def test_kde_exit_estimation_100k(benchmark, rule):
    rng = np.random.default_rng(0)
    exits = rng.integers(0, 7, 100_000)
    lat = 1e-4 * (exits + 1) + 3e-6 * rng.standard_normal(len(exits))
    est = benchmark.pedantic(rule, args=(lat,), rounds=3, iterations=1)
    assert est.num_exits == 7
