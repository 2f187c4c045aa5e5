import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from attacks._strategy import NEVER, agreement, best_threshold, exits_under, search_thresholds


def brute_force(conf, target):
    """Global optimum over the candidate sets (victim-exit-k confidences plus 'never')."""
    k_exits = conf.shape[1]
    cands = [[*sorted(set(conf[target == k, k].tolist())), NEVER] for k in range(k_exits - 1)]
    best = -1
    for combo in itertools.product(*cands):
        t = np.array([*combo, 0.0])
        best = max(best, agreement(conf, target, t))
    return best


instances = st.integers(1, 10).flatmap(lambda n: st.integers(2, 4).flatmap(lambda k: st.tuples(
    st.lists(st.lists(st.sampled_from([0.1, 0.3, 0.5, 0.7, 0.9, 0.95]), min_size=k, max_size=k), min_size=n,
             max_size=n),
    st.lists(st.integers(0, k - 1), min_size=n, max_size=n))))


@settings(max_examples=300, deadline=None)
@given(instances)
def test_search_is_exact_per_coordinate_and_never_worse_than_brute_force_allows(inst):
    conf, target = np.array(inst[0], dtype=float), np.array(inst[1])
    t, score = search_thresholds(conf, target)
    assert score == agreement(conf, target, t)  # the reported count is the real count
    optimum = brute_force(conf, target)
    assert score <= optimum
    k_exits = conf.shape[1]
    if k_exits == 2:
        assert score == optimum  # one free threshold: the sweep is exact
    for k in range(k_exits - 1):  # coordinate-wise optimal: no single change helps
        for c in [*conf[target == k, k].tolist(), NEVER]:
            t2 = t.copy()
            t2[k] = c
            assert agreement(conf, target, t2) <= score


@settings(max_examples=200, deadline=None)
@given(instances)
def test_best_threshold_matches_enumeration(inst):
    conf, target = np.array(inst[0], dtype=float), np.array(inst[1])
    rng = np.random.default_rng(len(target))
    t = np.append(rng.choice([0.2, 0.6, NEVER], conf.shape[1] - 1), 0.0)
    for k in range(conf.shape[1] - 1):
        _, score = best_threshold(conf, target, t, k)
        enum = max(agreement(conf, target, np.where(np.arange(len(t)) == k, c, t))
                   for c in [*conf[target == k, k].tolist(), NEVER])
        assert score == enum


def test_recovers_planted_thresholds():
    rng = np.random.default_rng(0)
    conf = rng.random((5000, 5))
    planted = np.array([0.8, 0.7, 0.9, 0.6, 0.0])
    target = exits_under(conf, planted)
    t, score = search_thresholds(conf, target)
    assert score == len(target)
    assert (exits_under(conf, t) == target).all()


def test_brute_force_gap_is_small_on_random_instances():
    """Coordinate ascent is a local search; on random small instances its result stays close to the
    global optimum (and equals it on most)."""
    rng = np.random.default_rng(1)
    gaps, exact = [], 0
    for _ in range(60):
        n, k = rng.integers(5, 12), rng.integers(3, 4)
        conf = rng.random((n, k)).round(2)
        target = rng.integers(0, k, n)
        opt, (_, got) = brute_force(conf, target), search_thresholds(conf, target)
        gaps.append((opt - got) / n)
        exact += opt == got
    assert exact >= 45 and max(gaps) <= 0.2
