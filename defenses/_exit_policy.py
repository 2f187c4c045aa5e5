"""Shared machinery of per_class_exit and random_exit, the exit policies of "Prediction Privacy in Distributed
Multi-Exit Neural Networks: Vulnerabilities and Solutions" (ACM CCS 2023).

A multi-exit network that exits on one confidence threshold leaks its prediction through *when*
it exits (latency, or the traffic pattern of a distributed deployment), because confidence
distributions differ between classes. The paper's two policies, recomputed server-side with the
owner's model (``oracle.owner.model``, all exits evaluated):

- ``per_class_exit`` (Per-Class Exiting, PCE): one threshold per exit *and predicted class*,
  calibrated on the owner's validation split so that every predicted class exits at each exit at
  the same rate (the victim's own overall exit rates on that split): at exit ``k``, of the
  samples still running that exit ``k`` predicts as class ``c``, the ``rate_k * n_c`` most
  confident exit (``n_c``: validation samples the last exit labels ``c``). The exit then tells
  little about the class; the paper proves it gives no formal guarantee.
- ``random_exit`` (Confidence-Guided Randomness, CGR): with probability ``rho`` the exit is drawn
  at random from the target exit rates (independently of the input), otherwise PCE's exit is used;
  ``rho=1`` is exiting at random by the target rates, ``rho=0`` is PCE.

Each answer is the softmax of the chosen exit's logits; its latency is moved to the chosen exit's
latency profile, keeping the timing channel's noise draw (``mean[e] + (t - mean[e0]) std[e] /
std[e0]`` for a sample the victim would have answered at ``e0`` in ``t``); ``exits`` reports the
exit used.

Departures from the paper, stated: the paper's CGR biases the random draw towards PCE's decision
with exit probabilities derived from confidence; here it is the mixture above (same fixed
per-class exit distribution, so the same privacy argument, a simpler bias); the target rates are
the victim's own exit rates on the owner's validation split (the paper picks them as an
accuracy/efficiency trade-off); every exit's logits are computed (the service time charged is the
latency profile of the exit used, as a real early-exit deployment of the policy would take).
Cost: accuracy and early-exit savings change as the exits change (measured by the service on
honest traffic); calibration is one pass over the owner's validation split, once per deployment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from benchmark.api.defense import Defense
from benchmark.oracle import Oracle, Response
from defenses._common import require_owner


@torch.no_grad()
def exit_confidences(model, x: Tensor, device: str, batch: int = 512) -> tuple[Tensor, Tensor]:
    """Softmax of every exit, (E, B, C), computed with all exits (server-side)."""
    outs = []
    for start in range(0, len(x), batch):
        logits = model(x[start:start + batch].to(device).float())
        outs.append(torch.stack([torch.softmax(lg.float(), 1) for lg in logits]).cpu())
    probs = torch.cat(outs, 1)
    return probs, probs.amax(2)


def calibrate_pce(probs: Tensor, rates: np.ndarray) -> Tensor:
    """Per-exit, per-class thresholds (E, C) making every predicted class exit at ``rates``.

    A class's size is counted by the last exit's prediction (the full network's label, a proxy
    for the label the service returns); at exit ``k`` the ``rates[k] * size_c`` most confident
    still-running samples that exit ``k`` predicts as ``c`` exit there."""
    n_exits, n, n_classes = probs.shape
    thresholds = torch.full((n_exits, n_classes), 2.0)
    thresholds[-1] = -1.0  # the last exit takes everything left
    size = torch.bincount(probs[-1].argmax(1), minlength=n_classes)
    active = torch.ones(n, dtype=torch.bool)
    for k in range(n_exits - 1):
        pred, conf = probs[k].argmax(1), probs[k].amax(1)
        for c in range(n_classes):
            want = round(float(rates[k]) * int(size[c]))
            cand = conf[active & (pred == c)].sort(descending=True).values
            if want <= 0 or len(cand) == 0:
                continue
            thresholds[k, c] = cand[min(want, len(cand)) - 1]
        done = active & (conf >= thresholds[k, pred])
        active &= ~done
    return thresholds


def pce_exits(probs: Tensor, thresholds: Tensor) -> Tensor:
    """The exit PCE takes for each sample: the first whose per-class threshold it reaches."""
    n_exits, n, _ = probs.shape
    exits = torch.full((n,), n_exits - 1, dtype=torch.long)
    open_ = torch.ones(n, dtype=torch.bool)
    for k in range(n_exits - 1):
        pred, conf = probs[k].argmax(1), probs[k].amax(1)
        hit = open_ & (conf >= thresholds[k, pred])
        exits[hit] = k
        open_ &= ~hit
    return exits


@dataclass(frozen=True)
class ExitPolicy(Defense):
    acts_on = "both"
    needs_owner: ClassVar[bool] = True

    def make_state(self, oracle: Oracle, seed: int) -> Any:
        owner = require_owner(oracle, self.name, "the victim's model and the owner's validation split, to "
                                                 "calibrate and apply the exit policy")
        model = owner.model
        val = owner.task.val
        probs, _ = exit_confidences(model, val.images(), owner.device)
        natural = model.early_exit(val.images(device=owner.device)).exits.cpu()
        rates = np.bincount(natural.numpy(), minlength=model.num_exits) / len(natural)
        profile = oracle.latency_profile
        return {"model": model, "device": owner.device, "rates": rates,
                "thresholds": calibrate_pce(probs, rates),
                "rng": np.random.default_rng([seed, 0xE217]),
                "mean": None if profile is None else torch.tensor(profile.mean, dtype=torch.float64),
                "std": None if profile is None else torch.tensor(profile.std, dtype=torch.float64)}

    def choose(self, state: Any, probs: Tensor) -> Tensor:
        return pce_exits(probs, state["thresholds"])

    def apply(self, state: Any, x: Tensor, response: Response, account: str = "") -> Response:
        probs, _ = exit_confidences(state["model"], x, state["device"])
        exits = self.choose(state, probs)
        answer = probs[exits, torch.arange(len(x))]
        latency = response.latency
        if state["mean"] is not None and response.exits is not None:
            e0 = response.exits.cpu()
            mean, std = state["mean"], state["std"]
            latency = mean[exits] + (latency - mean[e0]) * std[exits] / std[e0].clamp(min=1e-30)
            latency = torch.maximum(latency, 0.05 * mean[exits])
        return Response(answer.to(response.probs.dtype), latency, exits)
