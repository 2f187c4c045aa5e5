"""Exact extraction (cryptanalytic attack) on relu-mlp victims: end to end through the run path,
the counting of every query by the oracle, the attack never holding the victim, the numeric
steps on their own, and behaviour under an output-rounding defense and tight budgets."""

from __future__ import annotations

import ast
import gc
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from attacks.cryptanalytic import Cryptanalytic, ExtractedMLP
from attacks.cryptanalytic._access import Access, estimate_noise
from attacks.cryptanalytic._critical_points import random_line, sweep_line
from attacks.cryptanalytic._driver import run as run_extraction
from attacks.cryptanalytic._network import PartialNetwork
from attacks.cryptanalytic._signs import recover_signs
from attacks.cryptanalytic._solve import wrong_signs_from_solve
from attacks.cryptanalytic._state import ExtractionState, Settings, new_state
from benchmark.api.attack import AttackContext
from benchmark.api.defense import Defense
from benchmark.config import RunConfig
from benchmark.errors import ConfigError
from benchmark.exact import score
from benchmark.exact_scoring import align
from benchmark.options import build_plugin
from benchmark.oracle import BlackBox, Oracle, Response
from benchmark.plugins import ATTACKS, DEFENSES
from benchmark.runner import run
from victims.relu_mlp import MLPOracle, ReLUMLPSpec

ROOT = Path(__file__).resolve().parents[2]


def exact_config(layers: str, seed: int = 0, **kw: Any) -> RunConfig:
    victim_options = {"layers": layers}
    victim_options.update(kw.pop("victim_options", {}))
    return RunConfig(attack="cryptanalytic", victim="relu-mlp", victim_options=victim_options, seed=seed, **kw)


# ---- end to end: full recovery -----------------------------------------------------------------

@pytest.mark.parametrize("layers,seed", [("10-5-5-1", 0), ("10-5-5-1", 3), ("20-10-10-1", 1)])
def test_full_recovery_end_to_end(layers, seed):
    result = run(exact_config(layers, seed), progress=False)
    s = result.scores
    assert s["neurons_recovered"] == 1.0
    assert s["max_weight_error_log2"] <= -30
    assert s["output_agreement"] == 1.0  # all 10,000 random inputs, 1e-6 relative
    assert s["label_agreement"] == 1.0
    assert s["complete"] and result.attack["details"]["not_recovered"] == []
    assert result.victim["layers"] == [int(v) for v in layers.split("-")]
    assert result.attack["options"]["layers"] == layers  # the public architecture, filled in
    # per-layer split of time and queries; everything adds up to what the oracle counted
    per_layer = sum(s[f"l{k}_signature_queries"] + s[f"l{k}_sign_queries"] for k in (1, 2))
    assert per_layer + s["output_layer_queries"] == s["queries"]
    assert all(s[f"l{k}_sign_queries"] > 0 and s[f"l{k}_signature_seconds"] > 0 for k in (1, 2))
    assert result.to_json()["schema_version"] >= 1


def test_random_victim_reports_label_agreement_on_random_inputs():
    s = run(exact_config("10-5-5-1", 0), progress=False).scores
    assert s["max_output_diff_real"] is None and "random" in s["label_agreement_on"]


# ---- every query is counted by the oracle itself ----------------------------------------------

class CountingOracle(Oracle):
    """An independent tally of every input row that reaches the victim."""

    def __init__(self, inner: MLPOracle) -> None:
        super().__init__(inner.budget, inner.num_classes, inner.input_shape)
        self.inner = inner
        self.rows = 0
        self.calls = 0

    def _answer(self, x: torch.Tensor) -> Response:
        self.rows += len(x)
        self.calls += 1
        return self.inner._answer(x)


def test_every_query_is_counted_by_the_oracle_including_linearity_checks(monkeypatch):
    import attacks.cryptanalytic._signs as signs

    victim = ReLUMLPSpec(layers="10-5-5-1").build(2)
    oracle = CountingOracle(MLPOracle(victim.net, 10**7))
    wiggle_rows = []
    real_vote = signs.wiggle_vote

    def spy(access, *args, **kwargs):  # queries made by each wiggle sample, checks included
        before = oracle.rows
        out = real_vote(access, *args, **kwargs)
        wiggle_rows.append(oracle.rows - before)
        return out

    monkeypatch.setattr(signs, "wiggle_vote", spy)
    attack = Cryptanalytic(layers="10-5-5-1")
    stolen = attack.run(oracle.black_box(), None, oracle.budget, AttackContext(seed=0, progress=False))
    assert oracle.used == oracle.rows  # Oracle.query counted exactly the rows answered
    assert stolen.details["queries"] == oracle.used
    logs = stolen.details["per_layer"]
    parts = sum(log["signature_queries"] + log["sign_queries"] for log in logs)
    out = stolen.details["output_layer"]
    assert parts + out["queries"] + out["self_check_queries"] == oracle.used
    # each wiggle sample queries six points (two linearity checks among them), all counted
    assert wiggle_rows and all(q % 6 == 0 for q in wiggle_rows)
    assert sum(log["sign_queries"] for log in logs) >= sum(wiggle_rows)


# ---- the attack never holds the victim ---------------------------------------------------------

ATTACK_SIDE = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "attacks" / "cryptanalytic").glob("*.py"))
PLUGIN = "attacks/cryptanalytic/__init__.py"


def test_attack_side_is_the_whole_package():
    assert PLUGIN in ATTACK_SIDE and len(ATTACK_SIDE) > 8


@pytest.mark.parametrize("path", ATTACK_SIDE)
def test_attack_side_code_never_reaches_behind_the_black_box(path):
    tree = ast.parse((ROOT / path).read_text())
    names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    names |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    forbidden = {"parameters_numpy", "__closure__", "_weights", "_net", "inner", "cell_contents", "MLPOracle",
                 "ReLUMLP", "_query", "linears"}
    assert not names & forbidden
    imports = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not any(m and (m.startswith("victims.relu_mlp") and path != PLUGIN) for m in imports)
    assert "benchmark.exact_scoring" not in imports and "benchmark.exact" not in imports  # scoring is server side


def test_extraction_state_holds_only_the_black_box():
    victim = ReLUMLPSpec(layers="10-5-5-1").build(1)
    oracle = MLPOracle(victim.net, 10**7)
    bb = oracle.black_box()
    rng = np.random.default_rng(0)
    state = new_state(Access(bb, rng), victim.sizes, Settings(), rng)
    run_extraction(state)
    assert isinstance(state, ExtractionState) and state.output is not None
    true_arrays = [id(a) for a in victim.net.parameters_numpy()[0]]
    seen, stack = set(), [state]
    while stack:  # everything reachable from the extraction, not looking inside the BlackBox
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (type, BlackBox)) or obj is victim:
            continue
        seen.add(id(obj))
        assert not isinstance(obj, (Oracle, torch.nn.Module)), type(obj)
        assert id(obj) not in true_arrays
        stack.extend(gc.get_referents(obj))


def test_run_takes_a_black_box_and_the_layer_sizes_only():
    attack = Cryptanalytic(layers="10-5-5-1")
    victim = ReLUMLPSpec(layers="10-5-5-2").build(0)
    with pytest.raises(ConfigError):  # architecture must match what the oracle shows
        attack.run(MLPOracle(victim.net, 10**6).black_box(), None, 10**6, AttackContext())
    with pytest.raises(ConfigError):
        Cryptanalytic().sizes()


# ---- the steps on their own (truth from the victim, server side) --------------------------------

def true_crossings(ws, bs, line):
    ts = np.linspace(line.lo, line.hi, 100_001)
    h, out = line.point(ts), []
    for w, b in zip(ws[:-1], bs[:-1]):
        z = h @ w.T + b
        flips = np.nonzero(np.sign(z[1:]) != np.sign(z[:-1]))
        out.extend(ts[flips[0]])
        h = np.maximum(z, 0)
    return np.sort(out)


def test_critical_points_are_found_and_refined_to_float64_precision():
    victim = ReLUMLPSpec(layers="10-5-5-1").build(0)
    ws, bs = victim.net.parameters_numpy()
    access = Access(MLPOracle(victim.net, 10**6).black_box(), np.random.default_rng(0))
    estimate_noise(access, np.random.default_rng(1), 1.0)
    rng = np.random.default_rng(2)
    for i in range(3):
        line = sweep_line(access, random_line(i, 10, rng, 1.0, 3 * math.sqrt(10)))
        truth = true_crossings(ws, bs, line)
        assert len(line.kinks) == len(truth) and not line.unresolved
        for k in line.kinks:
            x, h, dist = line.point(k.t), None, math.inf
            h = x
            for w, b in zip(ws[:-1], bs[:-1]):
                z = w @ h + b
                dist = min(dist, float(np.min(np.abs(z) / np.linalg.norm(w, axis=1))))
                h = np.maximum(z, 0)
            assert dist < 1e-11  # on a neuron's critical surface to ~float64 precision


def test_neuron_wiggle_signs_of_a_contractive_first_layer():
    victim = ReLUMLPSpec(layers="20-10-10-1").build(3)
    ws, bs = victim.net.parameters_numpy()
    rng = np.random.default_rng(0)
    access = Access(MLPOracle(victim.net, 10**6).black_box(), rng)
    estimate_noise(access, rng, 1.0)
    flip = rng.choice([-1.0, 1.0], size=10)
    norms = np.linalg.norm(ws[0], axis=1)
    rows, biases = ws[0] / norms[:, None] * flip[:, None], bs[0] / norms * flip
    used = access.used
    results = recover_signs(access, PartialNetwork(20), rows, biases, rng, 1.0, samples=15)
    assert [r.sign for r in results] == list(flip)  # +1 means "as given", so the truth is flip
    assert all(r.votes >= 15 for r in results)
    assert access.used - used >= 6 * 15 * 10


def test_output_solve_names_wrong_last_layer_signs():
    victim = ReLUMLPSpec(layers="10-8-6-1").build(0)
    ws, bs = victim.net.parameters_numpy()
    net = PartialNetwork(10)
    net.add_layer(ws[0], bs[0])
    signs = np.ones(6)
    signs[[1, 4]] = -1
    x = np.random.default_rng(0).normal(size=(200, 10))
    f = MLPOracle(victim.net, 10**6).query(torch.from_numpy(x)).probs.numpy()
    wrong = wrong_signs_from_solve(net, ws[1] * signs[:, None], bs[1] * signs, np.ones(6), x, f)
    assert wrong is not None and list(np.nonzero(wrong)[0]) == [1, 4]


def test_alignment_is_invariant_to_permutation_and_positive_scale():
    victim = ReLUMLPSpec(layers="6-5-4-2").build(0)
    ws, bs = victim.net.parameters_numpy()
    rng = np.random.default_rng(0)
    p1, p2 = rng.permutation(5), rng.permutation(4)
    s1, s2 = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 4)
    ew = [ws[0][p1] * s1[:, None], (ws[1][p2][:, p1] / s1[None, :]) * s2[:, None], ws[2][:, p2] / s2[None, :]]
    eb = [bs[0][p1] * s1, bs[1][p2] * s2, bs[2]]
    al = align(ws, bs, ew, eb)
    assert al.max_error_log2 < -40 and all(r.all() for r in al.recovered)
    ew[0][2] *= -1
    eb[0][2] *= -1
    al = align(ws, bs, ew, eb)
    flipped = p1[2]  # the victim neuron behind extracted row 2
    assert not al.sign_correct[0][flipped] and not al.recovered[0][flipped]
    assert al.recovered[0].sum() == 4


# ---- defenses, budgets, bad input -------------------------------------------------------------

@dataclass(frozen=True)
class LocalRounding(Defense):
    """Round raw outputs to ``decimals`` (a local stand-in for the rounding defense plugin)."""

    acts_on = "output"
    decimals: int = 6

    def apply(self, state, x, response):
        return Response(torch.round(response.probs, decimals=self.decimals), response.latency)


@pytest.mark.parametrize("decimals", [10, 5])
def test_under_rounding_the_attack_ends_with_a_score_and_a_statement(decimals):
    victim = ReLUMLPSpec(layers="10-5-5-1").build(0)
    oracle = MLPOracle(victim.net, 200_000)
    wrapped = LocalRounding(decimals=decimals).wrap(oracle, seed=0)
    t0 = time.perf_counter()
    stolen = Cryptanalytic(layers="10-5-5-1").run(wrapped.black_box(), None, oracle.budget,
                                                   AttackContext(seed=0, progress=False))
    assert time.perf_counter() - t0 < 120
    assert isinstance(stolen, ExtractedMLP)
    assert [w.shape for w in stolen.weights] == [(5, 10), (5, 5), (1, 5)]
    s = score(victim, stolen, oracle.used, 1.0, 0)
    assert all(math.isfinite(s[k]) for k in ("neurons_recovered", "max_weight_error_log2", "output_agreement"))
    assert stolen.details["noise_floor"] > 1e-12  # the rounding was noticed
    if decimals == 5:  # too coarse: the attack must say what it could not recover
        assert not stolen.complete and stolen.details["not_recovered"]
        assert s["max_weight_error_log2"] > -20


def test_rounding_defense_plugin_through_run():
    if "rounding" not in DEFENSES:
        pytest.skip("rounding defense not registered")
    result = run(exact_config("10-5-5-1", 0, defense="rounding", defense_options={"decimals": "4"}), progress=False)
    assert result.defense["name"] == "rounding" and "labels_changed" in result.defense["cost"]
    assert result.attack["details"]["not_recovered"]  # a clear statement
    assert 0 <= result.scores["neurons_recovered"] <= 1


def test_budget_too_small_is_a_one_line_config_error():
    with pytest.raises(ConfigError) as err:
        run(exact_config("10-5-5-1", budget=500), progress=False)
    assert "\n" not in str(err.value) and "budget" in str(err.value)


def test_budget_running_out_mid_attack_still_gives_a_scored_result():
    attack = build_plugin(ATTACKS["cryptanalytic"], {"layers": "20-10-10-1"}, "attack")
    budget = 3_000  # enough to start (check_budget), far from enough to finish
    attack.check_budget(budget)
    result = run(exact_config("20-10-10-1", budget=budget), progress=False)
    assert result.scores["queries"] <= budget
    statement = " ".join(result.attack["details"]["not_recovered"])
    assert "stopped" in statement and "budget" in statement
    assert result.scores["neurons_recovered"] < 1 and not result.scores["complete"]


def test_time_limit_stops_cleanly():
    result = run(exact_config("20-10-10-1", attack_options={"time_limit": "0.05"}), progress=False)
    assert any("time limit" in s for s in result.attack["details"]["not_recovered"])


@pytest.mark.parametrize("opts", [{"layers": "10-5"}, {"sign_samples": "0"}, {"wiggle": "shake"},
                                  {"easy_confidence": "0.2"}, {"lines": "1"}, {"scale": "-1"}])
def test_bad_attack_options(opts):
    with pytest.raises(ConfigError):
        build_plugin(ATTACKS["cryptanalytic"], opts, "attack")


def test_attack_layers_must_match_the_victim():
    with pytest.raises(ConfigError):
        run(exact_config("10-5-5-1", attack_options={"layers": "10-6-5-1"}), progress=False)


def test_multi_exit_attacks_are_refused_on_relu_mlp():
    with pytest.raises(ConfigError):
        run(RunConfig(attack="ours", victim="relu-mlp", victim_options={"layers": "10-5-5-1"}), progress=False)
