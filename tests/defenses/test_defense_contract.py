"""The Defense contract, checked for every registered defense (in-tree plugins and any installed
through the ``stealbench.defenses`` entry point), so a new plugin is tested without writing a test.

A defense must: return an Oracle with the same interface; respect the budget (spend exactly one
query of it per sample asked, refuse past it); be deterministic under a seed; report its cost; and
not leak the victim to the attacker (the attacker's handle reaches no model, oracle or autograd
graph through ordinary attribute access); and at its zero setting (``zero_options``, where it has
one) answer exactly as ``none``.

A defense that needs the owner's resources (``oracle.owner``: the model, the owner's data) says so
with the class attribute ``needs_owner = True``; the contract tests then serve it an oracle with
tiny owner resources (``helpers.tiny_oracle(owner=True)``) instead of skipping it, and check that
without them it refuses with a ``ConfigError``.
"""

import math

import pytest
import torch
from helpers import tiny_oracle

from benchmark.api.defense import Defense
from benchmark.errors import BudgetExceeded, ConfigError
from benchmark.oracle import BlackBox, Oracle, Response
from benchmark.plugins import DEFENSES

NAMES = DEFENSES.names()
X = torch.rand(48, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def make(name: str) -> Defense:
    return DEFENSES[name]()  # default options: every defense must work out of the box


def needs_owner(name: str) -> bool:
    return bool(getattr(DEFENSES[name], "needs_owner", False))


def oracle(name: str, **kw) -> Oracle:
    """The tiny oracle, with owner resources where the defense declares it needs them."""
    return tiny_oracle(owner=needs_owner(name), **kw)


@pytest.fixture(params=NAMES)
def name(request):
    return request.param


def test_all_in_tree_defenses_are_covered():
    assert {"none", "jitter", "padding", "rounding", "top1", "reverse_sigmoid", "mad",
            "adaptive_misinformation", "prada", "timeguard", "per_class_exit", "random_exit"} <= set(NAMES)


def test_is_a_frozen_dataclass_defense(name):
    d = make(name)
    assert isinstance(d, Defense)
    assert d.acts_on in ("timing", "output", "none", "both", "detection")
    with pytest.raises(AttributeError):
        d.__setattr__("_contract_probe", 1)  # frozen: options cannot change under a deployment


def test_returns_an_oracle_with_the_same_interface(name):
    inner = oracle(name, budget=100)
    wrapped = make(name).wrap(inner, seed=0)
    assert isinstance(wrapped, Oracle)
    assert (wrapped.budget, wrapped.used, wrapped.remaining) == (100, 0, 100)
    assert wrapped.num_classes == inner.num_classes and wrapped.input_shape == inner.input_shape
    assert wrapped.latency_profile == inner.latency_profile
    r = wrapped.query(X[:16])
    assert isinstance(r, Response)
    assert r.probs.shape == (16, inner.num_classes) and r.probs.dtype == torch.float32
    assert r.latency.shape == (16,) and r.latency.dtype == torch.float64
    assert torch.isfinite(r.probs).all() and (r.probs >= 0).all() and (r.probs <= 1).all()
    assert torch.isfinite(r.latency).all() and (r.latency > 0).all()
    assert isinstance(wrapped.black_box(), BlackBox)


def test_respects_the_budget(name):
    inner = oracle(name, budget=20)
    wrapped = make(name).wrap(inner, seed=0)
    wrapped.query(X[:8])
    assert inner.used == wrapped.used == 8  # one query of the budget per sample, no hidden extra queries
    with pytest.raises(BudgetExceeded):
        wrapped.query(X[:13])  # more than remains: refused whole
    assert inner.used == 8
    wrapped.query(X[:12])
    assert wrapped.remaining == 0
    with pytest.raises(BudgetExceeded):
        wrapped.black_box().query(X[:1])


def test_is_deterministic_under_a_seed(name):
    def answers(seed):
        wrapped = make(name).wrap(oracle(name, seed=seed), seed=seed)
        return [wrapped.query(X[i:i + 16]) for i in range(0, 48, 16)] + [wrapped.query(X[:16])]

    a, b = answers(3), answers(3)
    for ra, rb in zip(a, b):
        assert torch.equal(ra.probs, rb.probs) and torch.equal(ra.latency, rb.latency)


def test_reports_its_cost(name):
    raw = oracle(name, seed=1).query(X)
    wrapped = make(name).wrap(oracle(name, seed=1), seed=1)
    out = wrapped.query(X)
    cost = wrapped.cost()
    assert isinstance(cost, dict) and cost["answered"] == len(X)
    added = cost["added_latency_mean_s"]
    assert isinstance(added, float) and math.isfinite(added)
    assert added == pytest.approx(float((out.latency - raw.latency).mean()), rel=1e-9, abs=1e-15)
    if make(name).acts_on in ("output", "detection"):
        assert added == 0.0
    if make(name).acts_on in ("timing", "detection"):
        assert torch.equal(out.probs, raw.probs)  # a timing defense leaves the answers alone


def _reachable(obj, depth=4, seen=None):
    """Objects reachable from ``obj`` through public (non-underscore) attributes."""
    seen = set() if seen is None else seen
    if id(obj) in seen or depth < 0 or isinstance(obj, (int, float, str, bytes, bool, type(None))):
        return
    seen.add(id(obj))
    yield obj
    for attr in dir(obj):
        if attr.startswith("_"):
            continue
        try:
            value = getattr(obj, attr)
        except Exception:
            continue
        if callable(value) and not isinstance(value, (torch.Tensor, torch.nn.Module, Oracle)):
            continue
        yield from _reachable(value, depth - 1, seen)


def test_does_not_leak_the_victim_to_the_attacker(name):
    wrapped = make(name).wrap(oracle(name), seed=0)
    box = wrapped.black_box()
    assert not hasattr(box, "__dict__")  # a slotted facade: no stray references to the server side
    for obj in _reachable(box):
        assert not isinstance(obj, (torch.nn.Module, Oracle, Defense)), f"attacker can reach {type(obj)}"
    r = box.query(X[:8])
    for t in (r.probs, r.latency):
        assert not t.requires_grad and t.grad_fn is None  # no autograd path back into the victim
        assert not isinstance(t, torch.nn.Parameter)
    # answers are copies: changing them does not change what the server (or a later query) sees
    r.probs.zero_()
    again = make(name).wrap(oracle(name), seed=0).black_box().query(X[:8])
    assert again.probs.abs().sum() > 0


def test_without_owner_resources_refuses_in_one_line(name):
    if not needs_owner(name):
        make(name).wrap(tiny_oracle(), seed=0).query(X[:4])  # works on an oracle without them
        return
    with pytest.raises(ConfigError) as err:
        make(name).wrap(tiny_oracle(), seed=0)
    assert "\n" not in str(err.value) and "owner" in str(err.value)


def test_zero_setting_equals_none(name):
    zero = getattr(DEFENSES[name], "zero_options", None)
    if zero is None:
        pytest.skip(f"{name} has no zero setting")
    plain = oracle(name, seed=2)
    wrapped = DEFENSES[name](**zero).wrap(oracle(name, seed=2), seed=2)
    for i in range(0, len(X), 16):
        raw, out = plain.query(X[i:i + 16]), wrapped.query(X[i:i + 16])
        assert torch.equal(out.probs, raw.probs) and torch.equal(out.latency, raw.latency)
    assert wrapped.cost()["added_latency_mean_s"] == 0.0
