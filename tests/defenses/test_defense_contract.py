"""The Defense contract, checked for every registered defense (in-tree plugins and any installed
through the ``stealbench.defenses`` entry point), so a new plugin is tested without writing a test.

A defense must: return an Oracle with the same interface; respect the budget (spend exactly one
query of it per sample asked, refuse past it); be deterministic under a seed; report its cost; and
not leak the victim to the attacker (the attacker's handle reaches no model, oracle or autograd
graph through ordinary attribute access); at its zero setting (``zero_options``, where it has
one) answer exactly as ``none``; and never make an attack weaker when it buys more queries, by more
than noise (``test_more_budget_never_makes_the_attack_weaker``, below).

A defense that needs the owner's resources (``oracle.owner``: the model, the owner's data) says so
with the class attribute ``needs_owner = True``; the contract tests then serve it an oracle with
tiny owner resources (``helpers.tiny_oracle(owner=True)``) instead of skipping it, and check that
without them it refuses with a ``ConfigError``.
"""

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import PROFILE, briefly_trained_oracle, tiny_oracle
from scipy import stats

from benchmark.api.defense import Defense
from benchmark.datasets.synthetic import make_task_split
from benchmark.errors import AccountRefused, BudgetExceeded, ConfigError
from benchmark.oracle import BlackBox, Oracle, OwnerResources, Response, VictimOracle
from benchmark.plugins import DEFENSES
from benchmark.timing import SimulatedTiming

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


def test_every_in_tree_defense_with_a_zero_setting_declares_it():
    """The zero settings the in-tree defenses have (docs/defenses.md); the test above checks each."""
    declared = {n for n in NAMES if getattr(DEFENSES[n], "zero_options", None) is not None}
    assert {"none", "jitter", "reverse_sigmoid", "mad", "adaptive_misinformation", "prada", "timeguard"} <= declared


@pytest.mark.parametrize("name,options", [("jitter", {"keyed": True}), ("jitter", {"dist": "exponential"}),
                                          ("mad", {"top1": True})])
def test_zero_setting_equals_none_in_every_mode(name, options):
    """The zero setting also zeroes the defense's other modes (keyed and exponential jitter, MAD-argmax)."""
    plain = oracle(name, seed=2)
    wrapped = DEFENSES[name](**options, **DEFENSES[name].zero_options).wrap(oracle(name, seed=2), seed=2)
    raw, out = plain.query(X), wrapped.query(X)
    assert torch.equal(out.probs, raw.probs) and torch.equal(out.latency, raw.latency)


# ---- more budget never makes an attack weaker by more than noise ---------------------------------
#
# A cheap knockoff at the oracle level: an attacker with task-like images (fresh ``synthetic`` task
# images, seeded per attack seed) asks the defended service, in batches of 100, and trains a softmax
# regression on 4x4-pooled pixels to the answers' top-1 labels (300 full-batch Adam steps). Budget
# B = 200 and 4B = 800 are paired: the same deployment and seed, the B attacker's queries being the
# first B of the 4B attacker's (a service cannot tell the two apart until query B). Score: agreement
# with the undefended victim's labels on 500 fresh task images. Gain d_s = agreement(4B) -
# agreement(B) on seeds 0, 1, 2. The defense fails if the gain is significantly below -TOLERANCE:
# the one-sided 95% paired t upper bound of mean(d) is below -TOLERANCE. TOLERANCE = 0.03 allows for
# an attack every answer of which is poisoned at any budget (plain MAD and adaptive misinformation
# on this weak victim: the substitute learns the poison a little better with more queries, gains of
# -0.01 to -0.02). Undefended, the gain is +0.06 (each seed positive); a defense that answers
# wrongly past query 300 of an account gives -0.2 (``test_budget_check_catches_*``).

BUDGET, SEEDS, TOLERANCE, BATCH = 200, (0, 1, 2), 0.03, 100


@pytest.fixture(scope="module")
def trained():
    """The tiny victim trained for a few seconds, its owner resources, and its labels on 500 fresh
    task images (the evaluation set)."""
    served = briefly_trained_oracle()
    x = make_task_split(500, torch.Generator().manual_seed(77)).images()
    return served.owner.model, served.owner.task, x, served.query(x).probs.argmax(1)


def _features(x: torch.Tensor) -> torch.Tensor:
    return F.adaptive_avg_pool2d(x, 4).flatten(1)


def substitute_agreement(x: torch.Tensor, labels: torch.Tensor, trained, seed: int) -> float:
    """Agreement with the victim (evaluation set) of a softmax regression trained on (x, labels)."""
    _, _, ev, ev_labels = trained
    f = _features(x)
    mu, sd = (f.mean(0), f.std(0) + 1e-3) if len(x) > 1 else (0.0, 1.0)
    w = torch.zeros(f.shape[1], 10, requires_grad=True)
    b = torch.zeros(10, requires_grad=True)
    if len(x):
        opt = torch.optim.Adam([w, b], lr=0.05)
        z = (f - mu) / sd
        for _ in range(300):
            loss = F.cross_entropy(z @ w + b, labels) + 1e-3 * (w ** 2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return float(((((_features(ev) - mu) / sd) @ w + b).argmax(1) == ev_labels).double().mean())


def budget_gains(defense: Defense, trained, budget: int = BUDGET, seeds=SEEDS) -> np.ndarray:
    """Per seed, agreement at 4 x ``budget`` minus agreement at ``budget`` (see above). A refused
    account ends the attack's queries; it trains on the answers it has."""
    model, task, _, _ = trained
    gains = []
    for s in seeds:
        owner = OwnerResources(model, task, "cpu", "test-sdn-tiny-trained")
        served = defense.wrap(VictimOracle(model, SimulatedTiming(PROFILE, s), 4 * budget, owner=owner), seed=s)
        x = make_task_split(4 * budget, torch.Generator().manual_seed(1000 + s)).images()
        labels = []
        try:
            for i in range(0, len(x), BATCH):
                labels.append(served.query(x[i:i + BATCH], account="thief").probs.argmax(1))
        except AccountRefused:
            pass
        y = torch.cat(labels) if labels else torch.empty(0, dtype=torch.long)
        small = substitute_agreement(x[:len(y[:budget])], y[:budget], trained, s)
        gains.append(substitute_agreement(x[:len(y)], y, trained, s) - small)
    return np.array(gains)


def upper_bound(gains: np.ndarray) -> float:
    """One-sided 95% paired t upper bound of the mean gain."""
    return float(gains.mean() + stats.t.ppf(0.95, len(gains) - 1) * gains.std(ddof=1) / math.sqrt(len(gains)))


def test_more_budget_never_makes_the_attack_weaker(name, trained):
    gains = budget_gains(make(name), trained)
    assert upper_bound(gains) >= -TOLERANCE, (
        f"{name}: 4x the budget made the attack weaker, agreement gains {np.round(gains, 3).tolist()} "
        f"(upper bound {upper_bound(gains):+.3f} < -{TOLERANCE})")


@dataclass(frozen=True)
class WrongPastAThreshold(Defense):
    """A broken defense: past ``after`` queries of an account, every answer's probabilities are
    rotated by one class (a confident wrong label)."""

    acts_on = "output"
    after: int = 300

    def make_state(self, oracle, seed):
        return {}

    def apply(self, state, x, response, account=""):
        seen = state.get(account, 0)
        state[account] = seen + len(x)
        wrong = torch.arange(seen, seen + len(x)) >= self.after
        probs = response.probs.clone()
        probs[wrong] = probs[wrong].roll(1, 1)
        return Response(probs, response.latency)


def test_budget_check_catches_a_defense_that_answers_wrongly_past_a_threshold(trained):
    gains = budget_gains(WrongPastAThreshold(after=int(1.5 * BUDGET)), trained)
    assert upper_bound(gains) < -TOLERANCE


def test_budget_check_has_power_undefended(trained):
    gains = budget_gains(DEFENSES["none"](), trained)
    assert (gains > 0).all() and gains.mean() - (upper_bound(gains) - gains.mean()) > 0  # more budget helps
