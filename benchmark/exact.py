"""The exact-extraction family's two parts of the one run path (``benchmark.runner.run``): how a
``relu-mlp`` victim is deployed (``deploy``) and how an extracted weight set is judged (``judge``).

``deploy``: victim (``spec.build``: random weights from the seed, or trained and cached) ->
``MLPOracle`` (raw float64 outputs, counts every query) -> ``benchmark.service.Service`` (the
defense wrapped once, the budget, the honest user; answers cross to the attack's process in
float64). The attack runs in its own process like every attack, with a ``BlackBox`` and the public
layer sizes only (``prepare`` fills them in), and returns an ``ExtractedWeights``.

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
- ``queries`` (the attacker's, counted by the service), ``attack_seconds``, and per layer
  ``l{k}_signature_queries`` / ``l{k}_signature_seconds`` / ``l{k}_sign_queries`` /
  ``l{k}_sign_seconds`` (signature includes the critical-point search and the precision step),
  plus ``output_layer_queries`` / ``output_layer_seconds``.

The defense's cost (``Result.defense["cost"]``) is measured on the same deployment, on the honest
user's traffic (``HONEST_INPUTS`` inputs: the task's test inputs if the victim was trained, else
seeded random inputs): ``labels_changed`` (share whose label differs from the undefended answer),
the added latency and the honest counters of ``Service.cost``.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import numpy as np
import torch
from torch import Tensor

from benchmark.api.attack import Attack, ExtractedWeights
from benchmark.api.defense import Defense, defense_name
from benchmark.config import RunConfig
from benchmark.errors import ConfigError
from benchmark.exact_scoring import align, labels, output_agreement, predict
from benchmark.options import build_plugin, plugin_options
from benchmark.plugins import DEFENSES, VICTIMS
from benchmark.result import Result, environment
from benchmark.service.server import Service

RANDOM_INPUTS = 10_000
HONEST_INPUTS = 2_000
#: the honest user's cost fields of ``Service.cost`` that mean something without task labels
HONEST_COST = ("added_latency_mean_s", "added_latency_p50_s", "added_latency_p99_s", "honest_queries",
               "honest_refused", "honest_share")


@dataclasses.dataclass(frozen=True)
class Inputs:
    """Flat float64 inputs served as they are (the honest user's traffic); ``y`` is unused (zeros)."""

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return len(self.x)

    def images(self, idx=None, device: str | torch.device = "cpu") -> Tensor:
        return (self.x if idx is None else self.x[idx]).to(device)


@dataclasses.dataclass(frozen=True)
class ExactDeployment:
    """One defended deployment of a relu-mlp victim, ready to serve the attack's process."""

    cfg: RunConfig
    spec: Any  # the victim's spec (ReLUMLPSpec)
    defense: Defense
    budget: int
    victim: Any  # the built victim (net, sizes, test inputs if trained)
    honest: Inputs
    service: Service
    query: None = None  # the attack makes its own queries
    substitute: None = None  # nothing to build: the attack returns weights
    device: str = "cpu"  # float64 numpy on the CPU whatever --device says


def prepare(cfg: RunConfig, spec: Any, attack: Attack) -> Attack:
    """Check that ``attack`` extracts relu-mlp victims and hand it the public layer sizes."""
    if getattr(attack, "victim_kind", None) != "relu-mlp":
        raise ConfigError(f"attack {cfg.attack!r} does not run on relu-mlp victims; use --attack cryptanalytic")
    sizes = spec.sizes
    if hasattr(attack, "layers"):
        if not attack.layers:
            attack = dataclasses.replace(attack, layers="-".join(map(str, sizes)))
        elif attack.sizes() != sizes:
            raise ConfigError(f"attack option layers={attack.layers} differs from the victim's "
                              f"{'-'.join(map(str, sizes))}")
    return attack


def deploy(cfg: RunConfig, defense: Defense | None, attack: Attack, progress: bool = True) -> ExactDeployment:
    """Validate, build the victim and stand up its defended service (module docstring)."""
    spec = build_plugin(VICTIMS[cfg.victim], cfg.victim_options, "victim")
    if getattr(spec, "kind", None) != "relu-mlp":
        raise ConfigError(f"victim {cfg.victim!r} is not a relu-mlp victim")
    if defense is None:
        defense = build_plugin(DEFENSES[cfg.defense], cfg.defense_options, "defense")
    budget = cfg.budget if cfg.budget is not None else attack.default_budget
    attack.check_budget(budget)
    victim = spec.build(cfg.seed, cfg.dataset, cfg.data_root, cfg.download, cfg.data_seed, progress)
    honest = honest_inputs(victim, cfg.seed)
    service = Service(victim.oracle(budget + 2 * len(honest)), defense, cfg.seed, budget, honest,
                      attacker_accounts=int(getattr(attack, "accounts", 1)), labels=label_tensor, float64=True)
    return ExactDeployment(cfg, spec, defense, budget, victim, honest, service)


def honest_inputs(victim: Any, seed: int, n: int = HONEST_INPUTS) -> Inputs:
    """The honest user's inputs: the task's first ``n`` test inputs, else ``n`` seeded Gaussian ones."""
    if victim.test_x is not None:
        x = victim.test_x[:n]
    else:
        x = torch.from_numpy(np.random.default_rng(seed + 7).normal(size=(n, victim.sizes[0])))
    return Inputs(x, torch.zeros(len(x), dtype=torch.long))


def label_tensor(outputs: Tensor) -> Tensor:
    """``exact_scoring.labels`` on a tensor of raw outputs."""
    return torch.from_numpy(labels(outputs.numpy()))


def judge(d: ExactDeployment, stolen: ExtractedWeights, attack_name: str, attack_options: dict,
          attack_seconds: float) -> Result:
    """The judge: the honest user finishes, the weight set is scored, the Result is built."""
    cfg, spec, victim, service = d.cfg, d.spec, d.victim, d.service
    service.finish()
    scores = score(victim, stolen, service.used, attack_seconds, cfg.seed)
    honest = service.cost()
    cost = {k: honest[k] for k in HONEST_COST if k in honest}
    cost["labels_changed"] = service.labels_changed()
    sizes = victim.sizes
    victim_info = {"name": cfg.victim, "options": plugin_options(spec), "layers": list(sizes),
                   "parameters": int(sum(a * b + b for a, b in itertools.pairwise(sizes))),
                   "weights_seed": spec.weight_seed(cfg.seed), "dataset": victim.dataset,
                   "test_accuracy": victim.test_accuracy, "cached": victim.cached,
                   "train_seconds": victim.train_seconds}
    defense_info = {"name": defense_name(d.defense), "acts_on": getattr(d.defense, "acts_on", "none"),
                    "options": plugin_options(d.defense), "cost": cost}
    return Result(config=cfg.to_json(), scores=scores, victim=victim_info, defense=defense_info,
                  attack={"name": attack_name, "options": attack_options, "details": stolen.details},
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
