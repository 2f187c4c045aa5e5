"""Attack contract (torchattacks-style: one class per file, one main method).

``run(oracle, query_data, budget, ctx) -> StolenModel``: the attack sees a BlackBox oracle and its
own query data, never the victim. ``ctx.substitute`` is the architecture family the attacker
builds substitutes from (the victim's family by default, as in the paper's Table 1; any family
with ``--substitute-arch``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from torch import Tensor

from benchmark.api.victim import MultiExitNet, VictimSpec
from benchmark.data import Split
from benchmark.errors import ConfigError
from benchmark.oracle import BlackBox


@dataclass(frozen=True)
class AttackContext:
    seed: int = 0
    device: str = "cpu"
    substitute: VictimSpec | None = None
    progress: bool = True
    #: further accounts (BlackBox handles sharing the one budget) for an attack whose class or
    #: options ask for ``accounts > 1`` (Sybil attacks); the first account is ``run``'s oracle
    sybils: tuple[BlackBox, ...] = ()


@dataclass
class StolenModel:
    """What an attack returns: a multi-exit substitute with its thresholds (``model``), JSON-ready
    details, and optionally the exits it inferred for rows ``query_index`` of its query data."""

    model: MultiExitNet | None
    details: dict[str, Any] = field(default_factory=dict)
    query_index: Tensor | None = None
    inferred_exits: Tensor | None = None


@dataclass
class ExtractedWeights(StolenModel):
    """What an exact-extraction attack returns: a fully connected ReLU network's weight set
    (same shapes as the victim's), float64, plus which hidden neurons it claims to have recovered.
    It crosses back from the attack's process as arrays (``benchmark.service.attacker``)."""

    sizes: tuple[int, ...] = ()
    weights: list[np.ndarray] = field(default_factory=list)  # (n_out, n_in) per layer
    biases: list[np.ndarray] = field(default_factory=list)
    recovered: list[np.ndarray] = field(default_factory=list)  # per hidden layer, the attacker's claim
    complete: bool = False

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Raw outputs of the extracted network, float64 (ReLU between layers)."""
        h = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w.T + b
            if i < len(self.weights) - 1:
                h = np.maximum(h, 0.0)
        return h


@dataclass(frozen=True)
class Attack:
    name: ClassVar[str] = "attack"
    #: the smallest budget with which the attack can do anything meaningful
    min_budget: ClassVar[int] = 1
    #: budget used when the user gives none
    default_budget: ClassVar[int] = 10_000

    def check_budget(self, budget: int) -> None:
        if budget < self.min_budget:
            raise ConfigError(f"attack {self.name!r} needs a budget of at least {self.min_budget} queries, "
                              f"got {budget}")

    def run(self, oracle: BlackBox, query_data: Split, budget: int, ctx: AttackContext) -> StolenModel:
        raise NotImplementedError
