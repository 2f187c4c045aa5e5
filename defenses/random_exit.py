"""random_exit: Confidence-Guided Randomness (CGR) of "Prediction Privacy in Distributed Multi-Exit
Neural Networks: Vulnerabilities and Solutions" (ACM CCS 2023): with probability ``rho`` a random
exit drawn by the target exit rates, else Per-Class Exiting's; mechanism, calibration and
departures (a simpler bias than the paper's) in ``defenses/_exit_policy.py``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from benchmark.errors import ConfigError
from benchmark.plugins import DEFENSES
from defenses._exit_policy import ExitPolicy, pce_exits


@DEFENSES.register("random_exit")
@dataclass(frozen=True)
class RandomExit(ExitPolicy):
    """Confidence-Guided Randomness (CCS 2023): a random exit with probability rho, else PCE's."""

    rho: float = 0.5

    def __post_init__(self) -> None:
        if not 0 <= self.rho <= 1:
            raise ConfigError(f"defense 'random_exit': rho must be in [0, 1], got {self.rho}")

    def choose(self, state: Any, probs: Tensor) -> Tensor:
        pce = pce_exits(probs, state["thresholds"])
        n = probs.shape[1]
        rng = state["rng"]
        coin = rng.random(n) < self.rho
        drawn = rng.choice(len(state["rates"]), size=n, p=state["rates"])
        return torch.where(torch.from_numpy(coin), torch.from_numpy(drawn).long(), pce)
