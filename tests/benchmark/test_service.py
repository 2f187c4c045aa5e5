"""The service boundary: attacks in their own process reach nothing of the victim, the budget is
the server's, and a defense's cost is measured on honest traffic in the same stream."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import tiny_oracle
from service_plugins import Cheater, Garbage, Hostile

from benchmark.api.defense import Defense
from benchmark.config import RunConfig
from benchmark.data import Split
from benchmark.errors import AccountRefused, BudgetExceeded, InvalidQuery, InvalidQueryType
from benchmark.oracle import Response
from benchmark.plugins import DEFENSES
from benchmark.runner import run
from benchmark.service import attacker, protocol
from benchmark.service.server import Service, carve_honest

FAST = dict(timing_profile="flops", victim_options={"epochs": 1})


def _service(defense: Defense | None = None, budget: int = 100, honest: int = 40, accounts: int = 1) -> Service:
    gen = torch.Generator().manual_seed(0)
    split = Split((torch.rand(honest, 3, 32, 32, generator=gen) * 255).to(torch.uint8), torch.arange(honest) % 10)
    return Service(tiny_oracle(budget + 2 * honest), defense or DEFENSES["none"](), 0, budget, split,
                   attacker_accounts=accounts, exit_flops=[1, 2, 3, 4])


def _ask(service: Service, x, account: int = 0):
    return protocol.decode_answer(attacker.handle(service, protocol.encode_query(protocol.OP_QUERY, account, x)))


def test_hostile_attack_reaches_nothing_and_extra_queries_are_refused():
    budget = 64
    r = run(RunConfig(attack="knockoff", defense="none", budget=budget, **FAST), progress=False,
            attack=Hostile()).to_json()
    d = r["attack"]["details"]
    assert d["reached"] == []
    assert d["refused"] == 1 and d["answered"] == budget  # edited counters changed nothing server-side
    assert r["scores"]["queries"] == budget


def test_the_hostile_attack_does_reach_an_in_process_oracle():
    """The same routes succeed against the in-process handle: the test above can fail."""
    oracle = tiny_oracle(budget=64)
    from benchmark.plugins import VICTIMS

    stolen = Hostile().run(oracle.black_box(), Split(torch.zeros(8, 3, 32, 32, dtype=torch.uint8),
                                                      torch.zeros(8, dtype=torch.long)), 64,
                           type("Ctx", (), {"substitute": VICTIMS["sdn-tiny"]()})())
    assert any(r.startswith("closure:") for r in stolen.details["reached"])


def test_a_defense_that_is_honest_only_on_a_second_deployment_pays_its_real_cost():
    cfg = RunConfig(attack="knockoff", budget=200, attack_options={"epochs": 1}, **FAST)
    cheat = run(cfg, progress=False, defense=Cheater()).to_json()["defense"]["cost"]
    plain = run(cfg, progress=False, defense=Garbage()).to_json()["defense"]["cost"]
    assert plain["accuracy_lost"] > 0.5
    assert cheat["accuracy_lost"] == pytest.approx(plain["accuracy_lost"], abs=0)


def test_padding_costs_honest_users_the_same_whichever_attack_runs():
    costs = [run(RunConfig(attack=a, defense="padding", budget=300, attack_options={"epochs": 1}, **FAST),
                 progress=False).to_json()["defense"]["cost"] for a in ("knockoff", "noise")]
    a, b = (c["added_latency_mean_s"] for c in costs)
    assert a > 0 and abs(a - b) / a < 0.02
    assert costs[0]["honest_queries"] == costs[1]["honest_queries"] > 0


def test_queries_cross_as_plain_arrays_checked_before_charging():
    service = _service(budget=10)
    x = torch.rand(4, 3, 32, 32)
    used, probs, lat = _ask(service, x.numpy())
    assert used == 4 and probs.shape == (4, 10) and lat.shape == (4,)
    for bad, err in ((x.double().numpy(), InvalidQueryType), ((x * 2).numpy(), InvalidQuery),
                     (np.full((2, 3, 32, 32), np.nan, np.float32), InvalidQuery), (x[:, :1].numpy(), InvalidQuery)):
        with pytest.raises(err):
            _ask(service, bad)
    assert service.used == 4
    with pytest.raises(InvalidQuery):  # a payload that does not match its header
        protocol.decode_query(protocol.encode_query(protocol.OP_QUERY, 0, x.numpy())[:-4])
    with pytest.raises(BudgetExceeded):
        _ask(service, torch.rand(7, 3, 32, 32).numpy())
    assert service.used == 4
    with pytest.raises(InvalidQuery):  # an account this client was not given
        _ask(service, x.numpy(), account=3)


def test_honest_traffic_interleaves_and_every_image_is_answered_once():
    service = _service(budget=100, honest=40)
    for _ in range(5):
        _ask(service, torch.rand(10, 3, 32, 32).numpy())
    mid = service._next
    assert 0 < mid < 40  # half the budget used: about half the honest images asked so far
    service.finish()
    cost = service.cost()
    assert cost["honest_queries"] == 40 and cost["accuracy_lost"] == 0 and cost["added_latency_mean_s"] == 0
    assert cost["flops_savings_kept"] == pytest.approx(1.0) and cost["honest_share"] == pytest.approx(40 / 90)


class _Accounts(Defense):
    """Records which account asked; refuses any account after 12 of its queries."""

    def make_state(self, oracle, seed):
        return {}

    def apply(self, state, x, response: Response, account: str = "") -> Response:
        state[account] = state.get(account, 0) + len(x)
        if state[account] > 12:
            raise AccountRefused(f"account {account} refused")
        return response


def test_accounts_share_one_budget_are_opaque_and_can_be_refused():
    service = _service(_Accounts(), budget=100, honest=0, accounts=3)
    for acct in range(3):
        _ask(service, torch.rand(4, 3, 32, 32).numpy(), account=acct)
    assert service.used == 12
    seen = [k for k in service.deployment.state]
    assert set(seen) == set(service.attacker_ids) and len(set(seen)) == 3
    assert all(len(a) == 8 and int(a, 16) >= 0 for a in seen)  # random hex, not "attacker-0"
    _ask(service, torch.rand(8, 3, 32, 32).numpy(), account=0)
    with pytest.raises(AccountRefused):
        _ask(service, torch.rand(8, 3, 32, 32).numpy(), account=0)
    with pytest.raises(AccountRefused):  # refused for good
        _ask(service, torch.rand(1, 3, 32, 32).numpy(), account=0)
    _ask(service, torch.rand(1, 3, 32, 32).numpy(), account=1)  # the others still served


def test_honest_part_of_the_test_split_is_disjoint_and_seeded():
    test = Split(torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1).expand(100, 1, 2, 2).contiguous(),
                 torch.arange(100))
    score, honest = carve_honest(test, 0)
    assert len(score) == len(honest) == 50
    assert not set(score.y.tolist()) & set(honest.y.tolist())
    assert torch.equal(carve_honest(test, 0)[1].y, honest.y) and not torch.equal(carve_honest(test, 1)[1].y, honest.y)


def test_the_substitute_of_a_per_class_victim_is_its_family_without_the_owner_rule():
    from benchmark.api.attack import StolenModel
    from benchmark.options import build_plugin
    from benchmark.plugins import VICTIMS
    from benchmark.runner import substitute_spec

    cfg = RunConfig(attack="ours", victim_options={"exit_rule": "per-class"})
    spec = build_plugin(VICTIMS["sdn-tiny"], cfg.victim_options, "victim")
    sub = substitute_spec(cfg, spec)
    assert sub.exit_rule == "owner" and type(sub) is type(spec)
    model = type(sub)().build(10, (3, 32, 32), exits=4)  # how ours and the baselines build theirs
    assert attacker.encode_stolen(StolenModel(model), sub)
    with pytest.raises(TypeError, match="not built by"):  # what the victim's own spec gave: a per-class net
        attacker.encode_stolen(StolenModel(model), spec)
    plain = build_plugin(VICTIMS["sdn-tiny"], {}, "victim")
    assert substitute_spec(RunConfig(attack="ours"), plain) is plain
