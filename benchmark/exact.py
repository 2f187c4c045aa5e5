"""The run path for exact (cryptanalytic) extraction of ``relu-mlp`` victims.

``benchmark.runner.run`` dispatches here when the victim plugin's ``kind`` is ``"relu-mlp"``:
victim -> ``MLPOracle`` (raw float64 outputs, counts every query) -> defense -> attack (a
``BlackBox`` and the public layer sizes only) -> server-side scores -> ``Result``.

Scores (``Result.scores``):

- ``neurons_recovered``: share of hidden neurons whose sign and signature are recovered (after
  alignment, right sign and largest row error within 2^-20 of the row's largest weight);
  ``neurons_identified``: right sign and a row pointing the same way (cosine >= 0.999).
- ``max_weight_error_log2``: log2 of the largest absolute weight or bias error after aligning
  neuron order and scale (as Carlini et al. and Foerster et al. report it).
- ``output_agreement``: share of 10,000 random Gaussian inputs on which the reconstruction's
  outputs match the victim's to 1e-6 relative; ``max_output_diff``: the largest absolute output
  difference there; ``label_agreement`` (and ``max_output_diff_real``) on the victim task's test
  inputs when the victim was trained, else on the random inputs.
- ``queries`` (all, counted by the oracle), ``attack_seconds``, and per layer
  ``l{k}_signature_queries`` / ``l{k}_signature_seconds`` / ``l{k}_sign_queries`` /
  ``l{k}_sign_seconds`` (signature includes the critical-point search and the precision step),
  plus ``output_layer_queries`` / ``output_layer_seconds``.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from typing import Any

import numpy as np
import torch

from benchmark.api.attack import AttackContext
from benchmark.api.defense import defense_name
from benchmark.config import RunConfig
from benchmark.errors import ConfigError
from benchmark.exact_scoring import align, labels, output_agreement, predict
from benchmark.options import build_plugin, plugin_options
from benchmark.plugins import ATTACKS, DEFENSES, VICTIMS
from benchmark.result import Result, environment

RANDOM_INPUTS = 10_000


def run_exact(config: RunConfig, progress: bool = True, defense=None) -> Result:
    """One exact-extraction run: build, defend, attack, score (see module docstring)."""
    spec = build_plugin(VICTIMS[config.victim], config.victim_options, "victim")
    if getattr(spec, "kind", None) != "relu-mlp":
        raise ConfigError(f"victim {config.victim!r} is not a relu-mlp victim")
    attack_cls = ATTACKS[config.attack]
    if getattr(attack_cls, "victim_kind", None) != "relu-mlp":
        raise ConfigError(f"attack {config.attack!r} does not run on relu-mlp victims; use --attack cryptanalytic")
    attack = build_plugin(attack_cls, config.attack_options, "attack")
    sizes = spec.sizes
    if hasattr(attack, "layers"):
        if not attack.layers:
            attack = dataclasses.replace(attack, layers="-".join(map(str, sizes)))
        elif attack.sizes() != sizes:
            raise ConfigError(f"attack option layers={attack.layers} differs from the victim's "
                              f"{'-'.join(map(str, sizes))}")
    if defense is None:
        defense = build_plugin(DEFENSES[config.defense], config.defense_options, "defense")
    budget = config.budget if config.budget is not None else attack.default_budget
    attack.check_budget(budget)
    if config.device != "cpu":
        pass  # the extraction is float64 numpy on the CPU whatever the device

    victim = spec.build(config.seed, config.dataset, config.data_root, config.download, config.data_seed, progress)
    oracle = victim.oracle(budget)
    wrapped = defense.wrap(oracle, seed=config.seed)
    ctx = AttackContext(seed=config.seed, device="cpu", progress=progress)
    t0 = time.perf_counter()
    stolen = attack.run(wrapped.black_box(), None, budget, ctx)
    seconds = time.perf_counter() - t0

    scores = score(victim, stolen, oracle.used, seconds, config.seed)
    defense_info = {"name": defense_name(defense), "acts_on": getattr(defense, "acts_on", "none"),
                    "options": plugin_options(defense), "cost": wrapped.cost()}
    defense_info["cost"].update(defense_label_cost(defense, victim, config.seed))
    victim_info = {"name": config.victim, "options": plugin_options(spec), "layers": list(sizes),
                   "parameters": int(sum(a * b + b for a, b in itertools.pairwise(sizes))),
                   "weights_seed": spec.weight_seed(config.seed), "dataset": victim.dataset,
                   "test_accuracy": victim.test_accuracy, "cached": victim.cached,
                   "train_seconds": victim.train_seconds}
    return Result(config=config.to_json(), scores=scores, victim=victim_info, defense=defense_info,
                  attack={"name": config.attack, "options": plugin_options(attack), "details": stolen.details},
                  environment=environment("cpu"))


def score(victim, stolen, queries: int, seconds: float, seed: int) -> dict[str, Any]:
    """Server-side scores of an extracted weight set against the victim (module docstring)."""
    true_w, true_b = victim.net.parameters_numpy()
    al = align(true_w, true_b, stolen.weights, stolen.biases)
    n_hidden = sum(len(r) for r in al.recovered)
    rng = np.random.default_rng(10_000_019 + seed)
    x = rng.normal(size=(RANDOM_INPUTS, victim.sizes[0]))
    f_true, f_ext = predict(true_w, true_b, x), stolen.predict(x)
    agree, diff = output_agreement(f_true, f_ext)
    scores: dict[str, Any] = {
        "neurons_recovered": sum(int(r.sum()) for r in al.recovered) / n_hidden,
        "neurons_identified": sum(int(r.sum()) for r in al.identified) / n_hidden,
        "max_weight_error_log2": al.max_error_log2,
        "output_agreement": agree,
        "max_output_diff": diff,
    }
    if victim.test_x is not None:
        xr = victim.test_x.numpy()
        fr_true, fr_ext = predict(true_w, true_b, xr), stolen.predict(xr)
        scores["max_output_diff_real"] = float(np.abs(fr_true - fr_ext).max())
        scores["label_agreement"] = float((labels(fr_true) == labels(fr_ext)).mean())
        scores["label_agreement_on"] = f"{victim.dataset} test set ({len(xr)} inputs)"
    else:
        scores["max_output_diff_real"] = None
        scores["label_agreement"] = float((labels(f_true) == labels(f_ext)).mean())
        scores["label_agreement_on"] = f"{RANDOM_INPUTS} random inputs (random victim: no task)"
    scores["queries"] = int(queries)
    scores["attack_seconds"] = float(seconds)
    details = stolen.details
    for log in details.get("per_layer", []):
        k = log["layer"]
        scores[f"l{k}_signature_queries"] = log["signature_queries"]
        scores[f"l{k}_signature_seconds"] = log["signature_seconds"]
        scores[f"l{k}_sign_queries"] = log["sign_queries"]
        scores[f"l{k}_sign_seconds"] = log["sign_seconds"]
    out = details.get("output_layer") or {}
    scores["output_layer_queries"] = int(out.get("queries", 0)) + int(out.get("self_check_queries", 0))
    scores["output_layer_seconds"] = float(out.get("seconds", 0.0))
    scores["layer_errors_log2"] = al.to_json()["layer_errors_log2"]
    scores["complete"] = bool(details.get("complete", False))
    return scores


def defense_label_cost(defense, victim, seed: int, n: int = 2_000) -> dict[str, Any]:
    """What an output defense costs the owner: share of inputs whose label changes when served
    through the defense (the task's test inputs if any, else random inputs)."""
    if victim.test_x is not None:
        x = victim.test_x[:n]
    else:
        x = torch.from_numpy(np.random.default_rng(seed + 7).normal(size=(n, victim.sizes[0])))
    plain = victim.oracle(len(x)).query(x).probs.numpy()
    served = defense.wrap(victim.oracle(len(x)), seed=seed + 1).query(x).probs.numpy()
    return {"labels_changed": float((labels(plain) != labels(served)).mean())}
