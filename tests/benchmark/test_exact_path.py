"""The exact-extraction family on the one run path: served by the same ``Service`` (the defense
wrapped once, float64 answers on the wire, the cost measured on the honest traffic), the weight
set crossing back from the attack's process as arrays."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from benchmark.api.attack import ExtractedWeights
from benchmark.api.defense import Defense
from benchmark.config import RunConfig
from benchmark.runner import run
from benchmark.service import attacker, protocol


def test_float64_answers_cross_the_wire_bit_identical():
    probs = np.random.default_rng(0).normal(size=(3, 2)) * 1e-7 + 1.0
    lat = np.arange(3, dtype=np.float64)
    used, p, la = protocol.decode_answer(protocol.encode_answer(7, probs, lat, float64=True))
    assert used == 7 and p.dtype == np.float64 and np.array_equal(p, probs) and np.array_equal(la, lat)
    msg = protocol.encode_answer(7, probs, lat)  # the default stays float32, status OK
    assert msg[4] == protocol.OK and protocol.decode_answer(msg)[1].dtype == np.float32


def test_extracted_weights_cross_back_as_arrays():
    rng = np.random.default_rng(1)
    w = [rng.normal(size=(5, 4)), np.asfortranarray(rng.normal(size=(5, 5))), rng.normal(size=(1, 5))]
    b = [rng.normal(size=5), rng.normal(size=5), rng.normal(size=1)]
    stolen = ExtractedWeights(model=None, details={"complete": False, "per_layer": [{"layer": 1}]}, sizes=(4, 5, 5, 1),
                              weights=w, biases=b, recovered=[np.ones(5, bool), np.zeros(5, bool)], complete=False)
    back = attacker.decode_stolen(attacker.encode_weights(stolen), None, 1, (4,), "cpu")
    assert isinstance(back, ExtractedWeights) and back.sizes == (4, 5, 5, 1) and back.details == stolen.details
    assert all(np.array_equal(x, y) and x.dtype == y.dtype for x, y in zip(back.weights + back.biases, w + b))
    assert [r.tolist() for r in back.recovered] == [r.tolist() for r in stolen.recovered]
    x = rng.normal(size=(8, 4))
    assert np.array_equal(back.predict(x), stolen.predict(x))


@dataclass(frozen=True)
class CountingWraps(Defense):
    """Records, per process, each wrap (one deployment) and every query's account."""

    acts_on: ClassVar[str] = "none"
    log: ClassVar[list] = []

    def make_state(self, oracle: Any, seed: int) -> Any:
        CountingWraps.log.append(("wrap", os.getpid()))
        return None

    def apply(self, state: Any, x: torch.Tensor, response: Any, account: str = "") -> Any:
        CountingWraps.log.append((account, os.getpid()))
        return response


def test_one_deployment_serves_the_attack_in_its_own_process_and_the_honest_user():
    CountingWraps.log.clear()
    cfg = RunConfig(attack="cryptanalytic", victim="relu-mlp", victim_options={"layers": "10-5-5-1"})
    result = run(cfg, progress=False, defense=CountingWraps())
    log = CountingWraps.log
    assert [e for e in log if e[0] == "wrap"] == [("wrap", os.getpid())]  # wrapped once, here
    assert {pid for _, pid in log} == {os.getpid()}  # the defense never ran in the attack's process
    accounts = {a for a, _ in log if a != "wrap"}
    assert len(accounts) == 2  # the attacker's account and the honest user's
    cost = result.defense["cost"]
    assert cost["honest_queries"] == 2_000 and cost["labels_changed"] == 0.0 and cost["honest_refused"] == 0
    assert result.scores["neurons_recovered"] == 1.0 and result.scores["complete"]
