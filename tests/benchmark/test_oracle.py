import pytest
import torch
from helpers import PROFILE, tiny_oracle, tiny_victim

from benchmark.errors import BudgetExceeded
from benchmark.oracle import BlackBox
from benchmark.timing import flops_profile


def test_query_returns_probs_and_latency():
    oracle = tiny_oracle()
    r = oracle.query(torch.rand(7, 3, 32, 32))
    assert r.probs.shape == (7, 10) and r.latency.shape == (7,)
    torch.testing.assert_close(r.probs.sum(1), torch.ones(7))
    assert r.latency.dtype == torch.float64 and (r.latency > 0).all()


def test_budget_is_enforced_before_answering():
    oracle = tiny_oracle(budget=10)
    oracle.query(torch.rand(6, 3, 32, 32))
    with pytest.raises(BudgetExceeded, match="4 of 10 left"):
        oracle.query(torch.rand(5, 3, 32, 32))
    assert oracle.used == 6  # the refused batch was not charged or answered
    oracle.query(torch.rand(4, 3, 32, 32))
    assert oracle.remaining == 0
    with pytest.raises(BudgetExceeded):
        oracle.query(torch.rand(1, 3, 32, 32))


def test_bad_query_shape():
    with pytest.raises(ValueError, match="queries must have shape"):
        tiny_oracle().query(torch.rand(2, 1, 32, 32))


def test_simulated_timing_is_reproducible_and_follows_exits():
    x = torch.rand(200, 3, 32, 32)
    a, b = tiny_oracle(seed=3), tiny_oracle(seed=3)
    ra, rb = a.query(x), b.query(x)
    assert torch.equal(ra.latency, rb.latency)
    assert not torch.equal(ra.latency, tiny_oracle(seed=4).query(x).latency)
    exits = a.exit_log[0]
    means = torch.tensor(PROFILE.mean, dtype=torch.float64)[exits]
    assert (ra.latency - means).abs().max() < 8 * 5e-6


def test_black_box_exposes_nothing_of_the_model():
    oracle = tiny_oracle(budget=50)
    box = oracle.black_box()
    assert isinstance(box, BlackBox)
    public = {n for n in dir(box) if not n.startswith("_")}
    assert public == {"query", "budget", "used", "remaining", "num_classes", "input_shape"}
    assert not hasattr(box, "__dict__")
    box.query(torch.rand(5, 3, 32, 32))
    assert box.used == 5 and box.remaining == 45 and oracle.used == 5
    for name in BlackBox.__slots__:
        value = getattr(box, name)
        assert not isinstance(value, torch.nn.Module)


def test_flops_profile_is_machine_independent():
    p = flops_profile(tiny_victim().exit_flops())
    assert list(p.mean) == sorted(p.mean) and p.source == "flops"


@pytest.mark.parametrize("make, error, message", [
    (lambda: torch.rand(3, 3, 32, 32, dtype=torch.float64), TypeError, "dtype torch.float32"),
    (lambda: torch.rand(3, 3, 32, 32).half(), TypeError, "dtype torch.float32"),
    (lambda: (torch.rand(3, 3, 32, 32) * 255).to(torch.uint8), TypeError, "dtype torch.float32"),
    (lambda: torch.rand(3, 3, 32, 32).numpy(), TypeError, "must be a torch.Tensor"),
    (lambda: [[0.5]], TypeError, "must be a torch.Tensor"),
    (lambda: torch.rand(0, 3, 32, 32), ValueError, "empty batch"),
    (lambda: torch.full((2, 3, 32, 32), float("nan")), ValueError, "finite"),
    (lambda: torch.rand(2, 3, 32, 32).index_fill_(0, torch.tensor([1]), float("inf")), ValueError, "finite"),
    (lambda: torch.rand(2, 3, 32, 32) + 0.5, ValueError, r"in \[0, 1\]"),
    (lambda: torch.rand(2, 3, 32, 32) - 0.01, ValueError, r"in \[0, 1\]"),
])
def test_refused_batches_are_not_charged(make, error, message):
    oracle = tiny_oracle(budget=10)
    for target in (oracle, oracle.black_box()):
        with pytest.raises(error, match=message):
            target.query(make())
        assert oracle.used == 0 and oracle.exit_log == []
    # the whole budget is still there, and the ends of the range are inside it
    r = oracle.query(torch.cat([torch.zeros(5, 3, 32, 32), torch.ones(5, 3, 32, 32)]))
    assert torch.isfinite(r.probs).all() and oracle.remaining == 0


def test_exact_extraction_oracle_keeps_real_valued_float64_inputs():
    import numpy as np

    from victims.relu_mlp import MLPOracle, ReLUMLPSpec

    oracle = MLPOracle(ReLUMLPSpec(layers="10-5-5-1").build(0).net, budget=10)
    r = oracle.query(torch.from_numpy(np.random.default_rng(0).normal(scale=100.0, size=(3, 10))))
    assert r.probs.dtype == torch.float64 and oracle.used == 3
    with pytest.raises(ValueError, match="finite"):
        oracle.query(torch.full((2, 10), float("nan"), dtype=torch.float64))
    assert oracle.used == 3
