"""mad: prediction poisoning by maximising angular deviation (MAD) of Orekondy et al.,
"Prediction Poisoning: Towards Defenses Against DNN Model Stealing Attacks" (ICLR 2020).

The defender perturbs each answer ``y`` into ``y~`` (a probability vector within L1 distance
``epsilon`` of ``y``) so that the gradient an attacker's model would take when training on ``y~``
points as far as possible from the gradient it would take on ``y``. Attacker gradients are
estimated with a surrogate model ``F`` held server-side: with ``G`` the Jacobian of ``log F(x)``
in the parameters, MAD picks ``y*`` maximising ``|| G^T y~ / ||G^T y~|| - G^T y / ||G^T y|| ||``
over the vertices of the simplex (a convex function's maximum over the simplex is at a vertex),
then moves from ``y`` towards ``y*`` as far as the budget allows: ``y~ = (1 - a) y + a y*`` with
``a = min(1, epsilon / ||y* - y||_1)``. ``top1=true`` is the paper's argmax-preserving variant
(MAD-argmax): the step is also limited so the victim's label stays the largest entry, and the
vertex is chosen by the objective at the step actually taken.

Options: ``epsilon`` (L1 budget, 0 .. 2; ``0`` is ``none``), ``top1`` (argmax-preserving).

Departures from the paper, stated: (1) the surrogate is the victim's architecture with freshly
initialised, seeded weights (the paper uses a surrogate of the attacker's presumed architecture and
reports that an untrained one works; the attacker's architecture is unknown here), built in
``make_state`` (milliseconds) and never trained; (2) ``G`` is the Jacobian with respect to the
surrogate's last layer only (the final exit's linear classifier), where it has the closed form
``(e_k - p) h^T`` (``p`` the surrogate's probabilities, ``h`` its penultimate features): the angle
between ``G^T a`` and ``G^T b`` is then the angle between ``a - p`` and ``b - p``, so no backward
pass is needed (the paper differentiates through all parameters); (3) the step is the closed-form
largest step inside the budget (the paper's line search on the same segment). Cost: one forward
pass of the surrogate per query and ``K`` candidate evaluations (``K`` classes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from benchmark.api.defense import Defense
from benchmark.errors import ConfigError
from benchmark.oracle import Oracle, Response
from benchmark.plugins import DEFENSES
from defenses._common import fresh_copy, require_owner

MARGIN = 1e-6  # MAD-argmax keeps the label ahead by at least this relative margin


def _unit(v: Tensor) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def mad_perturb(y: Tensor, p: Tensor, epsilon: float, top1: bool) -> Tensor:
    """MAD on a batch: victim probabilities ``y`` (B, K), surrogate probabilities ``p`` (B, K)."""
    y, p = y.double(), p.double()
    b, k = y.shape
    eye = torch.eye(k, dtype=y.dtype)
    base = _unit(y - p)  # (B, K): direction of the attacker's gradient on the true answer
    dist = 2 * (1 - y)  # L1 distance of y to each vertex e_k, (B, K)
    step = torch.clamp(epsilon / dist.clamp(min=1e-12), max=1.0)  # (B, K)
    if top1:
        c = y.argmax(1)
        yc = y.gather(1, c[:, None])
        gap = (yc - y).clamp(min=0)
        keep = gap / (1 + gap) * (1 - MARGIN)  # largest step towards e_k with y~_k < y~_c
        keep[torch.arange(b), c] = 1.0  # moving towards the label itself never changes it
        step = torch.minimum(step, keep)
        cand = (1 - step[:, :, None]) * y[:, None, :] + step[:, :, None] * eye[None]  # (B, K, K)
        score = (_unit(cand - p[:, None, :]) - base[:, None, :]).norm(dim=-1)
        best = score.argmax(1)
        return cand[torch.arange(b), best]
    score = (_unit(eye[None] - p[:, None, :]) - base[:, None, :]).norm(dim=-1)  # at the vertices
    best = score.argmax(1)
    a = step[torch.arange(b), best][:, None]
    return (1 - a) * y + a * eye[best]


@DEFENSES.register("mad")
@dataclass(frozen=True)
class MAD(Defense):
    """Prediction poisoning by maximising angular deviation (Orekondy et al., ICLR 2020)."""

    acts_on = "output"
    #: needs ``oracle.owner`` (the victim's architecture for the surrogate)
    needs_owner: ClassVar[bool] = True
    zero_options: ClassVar[dict] = {"epsilon": 0.0}

    epsilon: float = 0.5
    top1: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.epsilon <= 2:
            raise ConfigError(f"defense 'mad': epsilon (an L1 distance between probability vectors) must be "
                              f"in [0, 2], got {self.epsilon}")

    def make_state(self, oracle: Oracle, seed: int) -> Any:
        if self.epsilon == 0:
            return None
        owner = require_owner(oracle, "mad", "the victim's architecture, for the surrogate")
        return {"surrogate": fresh_copy(owner.model, seed + 0x3AD).cpu(), "device": "cpu"}

    @torch.no_grad()
    def surrogate_probs(self, state: Any, x: Tensor) -> Tensor:
        return torch.softmax(state["surrogate"](x.detach().cpu().float())[-1].double(), 1)

    def apply(self, state: Any, x: Tensor, response: Response, account: str = "") -> Response:
        if self.epsilon == 0:
            return response
        out = mad_perturb(response.probs, self.surrogate_probs(state, x), self.epsilon, self.top1)
        return Response(out.clamp(0, 1).to(response.probs.dtype), response.latency, response.exits)
