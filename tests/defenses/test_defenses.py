"""Each defense changes what it should and nothing else."""

import pytest
import torch
from helpers import PROFILE, tiny_oracle

from benchmark.options import build_plugin
from benchmark.plugins import DEFENSES
from benchmark.timing import LatencyProfile

X = torch.rand(64, 3, 32, 32)


def _pair(name, seed=0, **opts):
    raw = tiny_oracle(seed=seed).query(X)
    defended = build_plugin(DEFENSES[name], opts, "defense").wrap(tiny_oracle(seed=seed), seed=seed)
    return raw, defended.query(X), defended


def test_none_changes_nothing():
    raw, out, d = _pair("none")
    assert torch.equal(raw.probs, out.probs) and torch.equal(raw.latency, out.latency)
    assert d.cost()["added_latency_mean_s"] == 0


def test_jitter_changes_only_latency_and_reports_it():
    raw, out, d = _pair("jitter", size=1.0)
    assert torch.equal(raw.probs, out.probs)
    extra = out.latency - raw.latency
    span = PROFILE.mean[-1] - PROFILE.mean[0]
    assert (extra >= 0).all() and (extra <= span).all() and extra.std() > span / 10
    assert d.cost()["added_latency_mean_s"] == pytest.approx(float(extra.mean()))


def test_iid_jitter_differs_on_repeats_keyed_does_not():
    exact = LatencyProfile(PROFILE.mean, (0.0,) * 4, "noiseless")  # raw latency repeats exactly
    x = X[:8]
    iid = build_plugin(DEFENSES["jitter"], {}, "defense").wrap(tiny_oracle(profile=exact), seed=0)
    assert not torch.equal(iid.query(x).latency, iid.query(x).latency)
    keyed = build_plugin(DEFENSES["jitter"], {"keyed": "true"}, "defense").wrap(tiny_oracle(profile=exact), seed=0)
    first = keyed.query(x).latency
    assert torch.equal(first, keyed.query(x).latency)
    assert first.unique().numel() > 1  # still random across different inputs
    other_key = build_plugin(DEFENSES["jitter"], {"keyed": "true"}, "defense").wrap(tiny_oracle(profile=exact), seed=1)
    assert not torch.equal(first, other_key.query(x).latency)


def test_padding_makes_latency_constant():
    raw, out, d = _pair("padding")
    assert torch.equal(raw.probs, out.probs)
    assert out.latency.unique().numel() == 1
    assert float(out.latency[0]) == pytest.approx(PROFILE.mean[-1] + 4 * PROFILE.std[-1])
    assert d.cost()["added_latency_mean_s"] > 0


def test_rounding_changes_only_probs():
    raw, out, _ = _pair("rounding", decimals=1)
    assert torch.equal(raw.latency, out.latency)
    assert torch.equal(out.probs, torch.round(raw.probs, decimals=1))
    assert not torch.equal(raw.probs, out.probs)


def test_top1_is_label_only():
    raw, out, _ = _pair("top1")
    assert torch.equal(raw.latency, out.latency)
    assert torch.equal(out.probs.argmax(1), raw.probs.argmax(1))
    assert set(out.probs.unique().tolist()) == {0.0, 1.0}


def test_defended_oracle_shares_the_budget():
    oracle = tiny_oracle(budget=10)
    d = build_plugin(DEFENSES["jitter"], {}, "defense").wrap(oracle, seed=0)
    d.query(X[:10])
    assert d.used == oracle.used == 10 and d.remaining == 0
