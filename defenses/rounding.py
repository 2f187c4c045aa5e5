"""rounding: output probabilities (or raw outputs) rounded to ``decimals`` decimal places.

Coarse outputs starve distillation of the small probabilities and break the exact arithmetic the
cryptanalytic attack needs; the label is unchanged except at ties.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from benchmark.api.defense import Defense
from benchmark.errors import ConfigError
from benchmark.oracle import Response
from benchmark.plugins import DEFENSES


@DEFENSES.register("rounding")
@dataclass(frozen=True)
class Rounding(Defense):
    """Output probabilities rounded to ``decimals`` decimal places."""

    acts_on = "output"

    decimals: int = 2

    def __post_init__(self) -> None:
        if not 0 <= self.decimals <= 15:
            raise ConfigError(f"defense 'rounding': decimals must be in 0..15, got {self.decimals}")

    def apply(self, state: Any, x: Tensor, response: Response, account: str = "") -> Response:
        return Response(torch.round(response.probs, decimals=self.decimals), response.latency)
