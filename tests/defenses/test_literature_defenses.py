"""The defenses of the literature (issue 18), each shown doing what its paper says, in a way that
would fail if the mechanism were missing: reverse sigmoid, MAD, adaptive misinformation, PRADA,
TimeGuard, and keyed jitter keyed on the canonical form of the input."""

import numpy as np
import pytest
import torch
from helpers import PROFILE, briefly_trained_oracle, tiny_oracle
from scipy import stats

from benchmark.datasets.synthetic import make_task_split
from benchmark.errors import AccountRefused
from benchmark.oracle import Response
from benchmark.plugins import DEFENSES
from benchmark.timing import LatencyProfile
from defenses.mad import mad_perturb
from defenses.reverse_sigmoid import reverse_sigmoid

GEN = torch.Generator().manual_seed(0)
X = torch.rand(64, 3, 32, 32, generator=GEN)
# answers of every shape: near-uniform, peaked, one-hot-like (logits of growing scale)
PROBS = torch.softmax(torch.randn(64, 10, generator=GEN) * torch.linspace(0.1, 8, 64)[:, None], 1)
LAT = torch.full((64,), 1e-4, dtype=torch.float64)


def _images(n: int, seed: int) -> torch.Tensor:
    return make_task_split(n, torch.Generator().manual_seed(seed)).images()


# ---- reverse sigmoid ---------------------------------------------------------------------------

def test_reverse_sigmoid_matches_the_formula_and_keeps_the_label():
    beta, gamma = 0.8, 0.3
    d = DEFENSES["reverse_sigmoid"](beta=beta, gamma=gamma)
    out = d.apply(None, X, Response(PROBS, LAT)).probs
    assert torch.equal(out.argmax(1), PROBS.argmax(1))
    assert torch.allclose(out.sum(1), torch.ones(64), atol=1e-5) and (out >= 0).all()
    # the paper's formula, written out independently in numpy
    y = PROBS.double().numpy().clip(1e-7, 1 - 1e-7)
    r = beta * (1 / (1 + np.exp(-gamma * np.log(y / (1 - y)))) - 0.5)
    expect = np.clip(PROBS.double().numpy() - r, 0, None)
    expect /= expect.sum(1, keepdims=True)
    same_label = expect.argmax(1) == PROBS.argmax(1).numpy()
    assert same_label.mean() > 0.5  # most rows need no label fix: the formula itself is checked
    np.testing.assert_allclose(out.numpy()[same_label], expect[same_label], atol=1e-6)
    assert (out - PROBS).abs().sum(1).mean() > 0.1  # it really perturbs


def test_reverse_sigmoid_keeps_the_label_where_the_formula_alone_would_not():
    y = torch.tensor([[0.30, 0.29, 0.01, 0.01, 0.39 - 0.01 * 0] + [0.0] * 5])
    y = y / y.sum()
    out = reverse_sigmoid(y, beta=1.0, gamma=0.1)
    assert int(out.argmax()) == int(y.argmax())


@pytest.mark.parametrize("beta", [0.1, 0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("gamma", [0.01, 0.1, 0.5, 1.0, 2.0, 10.0])
def test_reverse_sigmoid_keeps_the_label_as_the_strictly_largest_entry(beta, gamma):
    # beta = gamma = 1 maps every entry to 1/2 (a uniform answer); with many classes the clipped
    # tiny entries all get one value, which can tie above the victim's label
    gen = torch.Generator().manual_seed(round(100 * beta + gamma * 7))
    for classes in (2, 10, 100):
        for dtype in (torch.float32, torch.float64):
            y = torch.softmax(torch.randn(300, classes, generator=gen, dtype=torch.float64)
                              * torch.linspace(0.1, 30, 300, dtype=torch.float64)[:, None], 1).to(dtype)
            out = reverse_sigmoid(y, beta=beta, gamma=gamma)
            label = y.argmax(1)
            assert out.dtype == dtype and torch.equal(out.argmax(1), label)
            rest = out.clone()
            rest[torch.arange(len(out)), label] = -1.0
            assert (out[torch.arange(len(out)), label] > rest.amax(1)).all()
            assert torch.allclose(out.sum(1), torch.ones(len(out), dtype=dtype), atol=1e-5) and (out >= 0).all()


# ---- MAD ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("top1", [False, True])
def test_mad_stays_within_the_l1_budget(top1):
    eps = 0.4
    wrapped = DEFENSES["mad"](epsilon=eps, top1=top1).wrap(tiny_oracle(owner=True), seed=0)
    d, state = wrapped.defense, wrapped.state
    out = d.apply(state, X, Response(PROBS, LAT)).probs
    l1 = (out.double() - PROBS.double()).abs().sum(1)
    assert (l1 <= eps + 1e-6).all() and l1.mean() > eps / 4  # within budget, and uses it
    assert torch.allclose(out.sum(1), torch.ones(64), atol=1e-5) and (out >= 0).all()
    if top1:
        assert torch.equal(out.argmax(1), PROBS.argmax(1))
    else:
        assert not torch.equal(out.argmax(1), PROBS.argmax(1))  # plain MAD may flip labels


def _deviation(cand, y, p):
    u = lambda v: v / v.norm(dim=-1, keepdim=True)  # noqa: E731
    return (u(cand - p) - u(y - p)).norm(dim=-1)


def test_mad_maximises_the_angular_deviation_of_the_surrogate_gradient():
    wrapped = DEFENSES["mad"](epsilon=0.4).wrap(tiny_oracle(owner=True), seed=0)
    p = wrapped.defense.surrogate_probs(wrapped.state, X)
    y = PROBS.double()
    eye = torch.eye(10, dtype=torch.float64)
    # plain MAD: the vertex it moves towards is the one of largest deviation
    out = mad_perturb(y, p, 0.4, top1=False)
    dev_vertices = _deviation(eye[None], y[:, None], p[:, None])  # (B, K)
    towards = (out - y).argmax(1)
    assert torch.equal(towards, dev_vertices.argmax(1))
    # MAD-argmax: no argmax-keeping step of the budget towards any vertex deviates more
    out1 = mad_perturb(y, p, 0.4, top1=True)
    best = _deviation(out1, y, p)
    for k in range(10):
        for a in (0.01, 0.05, 0.1):
            cand = (1 - a) * y + a * eye[k]
            ok = (cand.argmax(1) == y.argmax(1)) & ((cand - y).abs().sum(1) <= 0.4)
            assert (best[ok] >= _deviation(cand, y, p)[ok] - 1e-9).all()
    # and the surrogate is not the victim: its answers differ
    assert not torch.allclose(p.float(), tiny_oracle().query(X).probs, atol=1e-3)


# ---- adaptive misinformation -------------------------------------------------------------------

def test_adaptive_misinformation_gates_between_victim_and_misinformation():
    wrapped = DEFENSES["adaptive_misinformation"](tau=0.5, nu=1000).wrap(tiny_oracle(owner=True), seed=0)
    d, state = wrapped.defense, wrapped.state
    msp = PROBS.amax(1)
    confident, unsure = msp > 0.6, msp < 0.4
    assert confident.sum() > 5 and unsure.sum() > 5
    out = d.apply(state, X, Response(PROBS, LAT)).probs
    misinfo = d.misinfo_probs(state, X)
    assert torch.allclose(out[confident], PROBS[confident], atol=1e-6)  # in distribution: the victim
    assert torch.allclose(out[unsure], misinfo[unsure], atol=1e-6)  # out of distribution: misinformation
    assert not torch.allclose(misinfo[unsure], PROBS[unsure], atol=1e-2)


def test_misinformation_model_is_trained_to_be_wrong_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("STEALBENCH_CACHE", str(tmp_path))
    oracle = tiny_oracle(owner=True)
    wrapped = DEFENSES["adaptive_misinformation"](misinfo_epochs=10).wrap(oracle, seed=0)
    task = oracle.owner.task
    p_true = wrapped.defense.misinfo_probs(wrapped.state, task.train.images()).gather(1, task.train.y[:, None])
    assert float(p_true.mean()) < 0.07  # well below chance (0.1): it learned to avoid the true class
    cached = list((tmp_path / "defenses" / "adaptive_misinformation").glob("*.pt"))
    assert len(cached) == 1
    again = DEFENSES["adaptive_misinformation"](misinfo_epochs=10).wrap(oracle, seed=0)
    assert torch.equal(again.defense.misinfo_probs(again.state, X), wrapped.defense.misinfo_probs(wrapped.state, X))


# ---- PRADA -------------------------------------------------------------------------------------

def _jacobian_stream(n: int, seeds: int = 10, step: float = 0.1, seed: int = 1) -> torch.Tensor:
    """Papernot-style augmentation: each round adds every sample moved by step * sign(direction)."""
    gen = torch.Generator().manual_seed(seed)
    s = _images(seeds, 7)
    while len(s) < n:
        s = torch.cat([s, (s + step * torch.sign(torch.randn(s.shape, generator=gen))).clamp(0, 1)])
    return s[:n]


def test_prada_alarms_on_a_jacobian_stream_and_refuses_the_account():
    wrapped = DEFENSES["prada"]().wrap(tiny_oracle(budget=10_000), seed=0)
    stream = _jacobian_stream(600)
    with pytest.raises(AccountRefused):
        for i in range(0, len(stream), 50):
            wrapped.query(stream[i:i + 50], account="thief")
    alarms = wrapped.state["alarms"]
    assert set(alarms) == {"thief"} and alarms["thief"] <= 200
    with pytest.raises(AccountRefused):  # refused from then on, whatever it sends
        wrapped.query(_images(5, 9), account="thief")
    wrapped.query(_images(5, 9), account="someone-else")  # other accounts are still served


def test_prada_raises_no_alarm_on_honest_iid_traffic():
    wrapped = DEFENSES["prada"]().wrap(tiny_oracle(budget=10_000), seed=0)
    for a in range(3):
        honest = _images(400, 100 + a)
        for i in range(0, len(honest), 50):
            wrapped.query(honest[i:i + 50], account=f"honest-{a}")
    assert wrapped.state["alarms"] == {}  # false-alarm rate 0 of 3 accounts
    assert all(w >= 0.9 for w in wrapped.state["w"].values()) and len(wrapped.state["w"]) == 3


# ---- TimeGuard ---------------------------------------------------------------------------------

def _timeguard(sigma=0.5, seed=0):
    exact = LatencyProfile(PROFILE.mean, (0.0,) * 4, "noiseless")
    return DEFENSES["timeguard"](sigma=sigma).wrap(tiny_oracle(profile=exact), seed=seed)


def test_timeguard_delays_are_per_input_half_normal_and_capped():
    wrapped = _timeguard(sigma=0.5)
    d, state = wrapped.defense, wrapped.state
    span = PROFILE.mean[-1] - PROFILE.mean[0]
    many = torch.rand(2000, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    delays = d.delays(state, many)
    assert stats.kstest(delays, stats.halfnorm(scale=0.5 * span).cdf).pvalue > 0.01
    assert stats.kstest(delays, stats.expon(scale=0.5 * span).cdf).pvalue < 1e-6  # not some other shape
    raw = tiny_oracle(profile=LatencyProfile(PROFILE.mean, (0.0,) * 4, "noiseless")).query(X)
    out = wrapped.query(X)
    cap = max(PROFILE.mean)
    expect = torch.maximum(raw.latency, torch.clamp(raw.latency + torch.from_numpy(d.delays(state, X)), max=cap))
    assert torch.allclose(out.latency, expect, rtol=0, atol=1e-15)
    assert (out.latency <= cap + 1e-15).all() and (out.latency > raw.latency).any()
    assert torch.equal(out.probs, raw.probs)
    assert torch.equal(wrapped.query(X).latency, out.latency)  # deterministic per input: repeats do not average
    stored = _images(16, 12)  # images as stored (uint8 levels): a one-float step keeps the delay
    assert torch.equal(wrapped.query(torch.nextafter(stored, torch.zeros_like(stored))).latency,
                       wrapped.query(stored).latency)


# ---- keyed jitter ------------------------------------------------------------------------------

def test_keyed_jitter_survives_a_one_float_step_perturbation():
    exact = LatencyProfile(PROFILE.mean, (0.0,) * 4, "noiseless")
    keyed = DEFENSES["jitter"](keyed=True).wrap(tiny_oracle(profile=exact), seed=0)
    x = _images(16, 11)  # stored images: uint8 levels / 255
    first = keyed.query(x).latency
    down = torch.nextafter(x, torch.zeros_like(x))
    up = torch.nextafter(x, torch.ones_like(x))
    assert not torch.equal(down, x) and not torch.equal(up, x)
    assert torch.equal(keyed.query(down).latency, first) and torch.equal(keyed.query(up).latency, first)
    assert first.unique().numel() == len(x)  # distinct images, distinct delays
    level = x.clone()
    level[:, 0, 0, 0] = torch.where(level[:, 0, 0, 0] < 0.5, level[:, 0, 0, 0] + 1 / 255, level[:, 0, 0, 0] - 1 / 255)
    assert (keyed.query(level).latency != first).all()  # the stated limit: a whole level is a new image


def test_keyed_delay_limit_a_pixel_on_a_half_level_boundary_flips_the_key():
    """The stated limit of any quantised key: an attacker who puts a pixel exactly on a rounding
    boundary (half a level off a stored value) draws a fresh delay with one float step there."""
    exact = LatencyProfile(PROFILE.mean, (0.0,) * 4, "noiseless")
    keyed = DEFENSES["jitter"](keyed=True).wrap(tiny_oracle(profile=exact), seed=0)
    x = _images(8, 13)
    x[:, 0, 0, 0] = 100.5 / 255
    below = x.clone()
    below[:, 0, 0, 0] = torch.nextafter(x[:, 0, 0, 0], torch.zeros(8))
    above = x.clone()
    above[:, 0, 0, 0] = torch.nextafter(x[:, 0, 0, 0], torch.ones(8))
    assert (keyed.query(below).latency != keyed.query(above).latency).all()


# ---- exit policies (CCS 2023) ------------------------------------------------------------------

def _spread(exits: torch.Tensor, pred: torch.Tensor, rates: np.ndarray, n_exits: int = 4) -> float:
    """Largest gap between a predicted class's exit rates and the overall target rates."""
    worst = 0.0
    for c in pred.unique():
        sel = pred == c
        if sel.sum() < 10:
            continue
        r = np.bincount(exits[sel].numpy(), minlength=n_exits) / int(sel.sum())
        worst = max(worst, float(np.abs(r - rates).max()))
    return worst


@pytest.fixture(scope="module")
def spread_exit_oracle():
    """The tiny victim trained for a few seconds (so it predicts several classes) with thresholds at
    quantiles of each exit's confidence on the owner's validation split (so exits spread)."""
    oracle = briefly_trained_oracle(LatencyProfile(PROFILE.mean, (0.0,) * 4, "noiseless"))
    model, task = oracle.owner.model, oracle.owner.task
    with torch.no_grad():
        conf = [torch.softmax(lg, 1).amax(1) for lg in model(task.val.images())]
    model.set_thresholds([float(conf[k].quantile(q)) for k, q in enumerate((0.7, 0.7, 0.6))] + [0.0])
    return oracle


def test_per_class_exit_balances_exit_rates_across_predicted_classes(spread_exit_oracle):
    oracle = spread_exit_oracle
    exact = LatencyProfile(PROFILE.mean, (0.0,) * 4, "noiseless")
    wrapped = DEFENSES["per_class_exit"]().wrap(oracle, seed=0)
    val = oracle.owner.task.val.images()
    native = oracle.query(val)
    out = wrapped.query(val)
    rates = wrapped.state["rates"]
    pred = out.probs.argmax(1)
    assert _spread(out.exits, pred, rates) < 0.12  # every predicted class exits alike (on the calibration split)
    assert _spread(native.exits, native.probs.argmax(1), rates) > 2 * _spread(out.exits, pred, rates)
    # the answer is the chosen exit's softmax, its latency that exit's (noiseless profile)
    every = torch.stack([torch.softmax(lg, 1) for lg in oracle.owner.model(val)])
    assert torch.allclose(out.probs, every[out.exits, torch.arange(len(val))], atol=1e-6)
    assert torch.allclose(out.latency, torch.tensor(exact.mean, dtype=torch.float64)[out.exits])


def test_random_exit_at_rho_one_exits_independently_of_the_input(spread_exit_oracle):
    oracle = spread_exit_oracle
    wrapped = DEFENSES["random_exit"](rho=1.0).wrap(oracle, seed=0)
    x = _images(600, 21)
    out = wrapped.query(x)
    rates = wrapped.state["rates"]
    counts = np.bincount(out.exits.numpy(), minlength=4)
    keep = rates > 0
    assert stats.chisquare(counts[keep], rates[keep] * len(x)).pvalue > 0.001
    pce = DEFENSES["per_class_exit"]().wrap(oracle, seed=0).query(x).exits
    assert (out.exits != pce).float().mean() > 0.2  # not PCE's decisions
    half = DEFENSES["random_exit"](rho=0.5).wrap(oracle, seed=0).query(x).exits
    agree = float((half == pce).float().mean())
    assert 0.5 < agree < 0.95  # about half of the exits follow PCE, the rest are drawn
