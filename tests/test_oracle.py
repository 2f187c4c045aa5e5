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
