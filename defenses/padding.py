"""padding: constant-time responses; every answer is held until the slowest exit's deadline.

The deadline is the slowest exit's mean latency plus ``margin`` standard deviations of it
(owner-side profile), so almost no response is slower than the deadline and the observed latency
carries (almost) no information about the exit. The cost is the added latency: every early exit
now pays for the full network's time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from benchmark.api.defense import Defense
from benchmark.errors import ConfigError
from benchmark.oracle import Oracle, Response
from benchmark.plugins import DEFENSES


@DEFENSES.register("padding")
@dataclass(frozen=True)
class Padding(Defense):
    """Constant-time answers: every response held until the slowest exit's deadline."""

    acts_on = "timing"

    margin: float = 4.0

    def __post_init__(self) -> None:
        if self.margin < 0:
            raise ConfigError(f"defense 'padding': margin must be >= 0, got {self.margin}")

    def make_state(self, oracle: Oracle, seed: int) -> Any:
        profile = oracle.latency_profile
        if profile is None:
            return {"deadline": 0.0}
        k = max(range(len(profile.mean)), key=lambda i: profile.mean[i])
        return {"deadline": profile.mean[k] + self.margin * profile.std[k]}

    def apply(self, state: Any, x: Tensor, response: Response, account: str = "") -> Response:
        return Response(response.probs, torch.clamp(response.latency, min=state["deadline"]))
