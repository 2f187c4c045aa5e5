"""quantized-latency: every response is held until the next tick of a coarse clock.

The owner rounds each answer's latency *up* to a multiple of ``step`` times the spread of its exit
latencies (slowest minus fastest exit mean, which the owner knows from its latency profile). Exits
whose latencies fall in the same tick become indistinguishable to a timing attacker; the cost is
the waiting time added to every answer (at most one tick), never accuracy.

This package is an example of a defense shipped outside StealBench: it is found through the entry
point ``quantized-latency`` in group ``stealbench.defenses`` (see ``pyproject.toml``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from benchmark.api.defense import Defense
from benchmark.errors import ConfigError
from benchmark.oracle import Oracle, Response
from defenses.jitter import exit_span

__all__ = ["QuantizedLatency"]
__version__ = "0.1.0"


@dataclass(frozen=True)
class QuantizedLatency(Defense):
    """Latency rounded up to a grid of ``step`` x the exit latency spread (timing defense)."""

    acts_on = "timing"

    step: float = 1.0

    def __post_init__(self) -> None:
        if not self.step > 0:
            raise ConfigError(f"defense 'quantized-latency': step must be > 0, got {self.step}")

    def make_state(self, oracle: Oracle, seed: int) -> Any:
        span = exit_span(oracle)
        return {"tick": self.step * (span if span > 0 else 1e-3)}

    def apply(self, state: Any, x: Tensor, response: Response) -> Response:
        tick = state["tick"]
        rounded = torch.ceil(response.latency / tick) * tick
        return Response(response.probs, torch.maximum(rounded, response.latency))
