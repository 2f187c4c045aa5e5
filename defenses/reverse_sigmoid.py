"""reverse_sigmoid: the reverse-sigmoid output perturbation of Lee et al., "Defending Against NN
Model Stealing Attacks Using Deceptive Perturbations" (IEEE S&P Workshops 2019, arXiv:1806.00054).

Each probability ``y_i`` is moved by ``r_i = beta * (sigmoid(gamma * logit(y_i)) - 1/2)`` and the
result renormalised: ``y' = alpha * (y - r)`` with ``alpha`` making it sum to one. Small
probabilities are pushed up, large ones down, and the mapping is not monotone for small ``y``,
so the ranking and size of the non-top classes (what distillation learns from) is scrambled while
the answer still looks like a probability vector.

Options: ``beta`` (magnitude, >= 0) and ``gamma`` (convergence, > 0); defaults ``beta=1.0``,
``gamma=0.1`` (those of IBM ART's implementation of the paper; the paper tunes both per model).

Departures from the paper: (1) logits are taken of probabilities clipped to ``[1e-7, 1 - 1e-7]``
and any entry the perturbation would make negative is set to zero before renormalising (as the
prediction-poisoning authors' reimplementation does); (2) the top-1 label is kept explicitly: in
the rare case the perturbed vector's argmax differs from the victim's, the two entries are
swapped; if the victim's label still does not hold the strictly largest value of the answer (a
tie: ``beta = gamma = 1`` maps every entry to 1/2, so the formula's answer is uniform; the
entries clipped to ``1e-7`` all get one value, which can be the largest; or two entries equal
after rounding to the answer's dtype), that entry is raised to the next
representable number above the row's maximum (one ulp, the sum then exceeds one by as much), so
the label an honest user reads never changes (the paper states the defense keeps the label; the
formula alone does not guarantee it for every ``beta, gamma``); (3) ``beta=0`` is the identity
exactly (no renormalisation round-off). Cost: a few elementwise operations per answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from benchmark.api.defense import Defense
from benchmark.errors import ConfigError
from benchmark.oracle import Response
from benchmark.plugins import DEFENSES

CLIP = 1e-7


def reverse_sigmoid(probs: Tensor, beta: float, gamma: float) -> Tensor:
    """The paper's formula (float64 inside): renormalised ``y - beta (sigmoid(gamma logit y) - 1/2)``
    with negative entries set to zero; the victim's top-1 label kept as the strictly largest entry
    (see the module docstring)."""
    y = probs.double()
    yc = y.clamp(CLIP, 1 - CLIP)
    r = beta * (torch.sigmoid(gamma * torch.log(yc / (1 - yc))) - 0.5)
    out = (y - r).clamp(min=0)
    out = out / out.sum(1, keepdim=True).clamp(min=1e-300)
    top, new = y.argmax(1), out.argmax(1)
    rows = (top != new).nonzero().flatten()
    if len(rows):  # swap the two entries: the victim's label is the largest again
        a, b = out[rows, top[rows]].clone(), out[rows, new[rows]].clone()
        out[rows, top[rows]], out[rows, new[rows]] = b, a
    out = out.to(probs.dtype)
    idx = torch.arange(len(out), device=out.device)
    mine = out[idx, top]
    others = out.clone()
    others[idx, top] = -torch.inf
    tied = (others.amax(1) >= mine).nonzero().flatten()
    if len(tied):  # a tie at the top: the victim's label one ulp above the rest
        m = others[tied].amax(1)
        out[tied, top[tied]] = torch.nextafter(m, torch.full_like(m, torch.inf))
    return out


@DEFENSES.register("reverse_sigmoid")
@dataclass(frozen=True)
class ReverseSigmoid(Defense):
    """Reverse-sigmoid perturbation of the probabilities (Lee et al. 2019); keeps the label."""

    acts_on = "output"
    zero_options: ClassVar[dict] = {"beta": 0.0}

    beta: float = 1.0
    gamma: float = 0.1

    def __post_init__(self) -> None:
        if not self.beta >= 0:
            raise ConfigError(f"defense 'reverse_sigmoid': beta must be >= 0, got {self.beta}")
        if not self.gamma > 0:
            raise ConfigError(f"defense 'reverse_sigmoid': gamma must be > 0, got {self.gamma}")

    def apply(self, state: Any, x: Tensor, response: Response, account: str = "") -> Response:
        if self.beta == 0:
            return response
        return Response(reverse_sigmoid(response.probs, self.beta, self.gamma), response.latency, response.exits)
