"""per_class_exit: Per-Class Exiting (PCE) of "Prediction Privacy in Distributed Multi-Exit Neural
Networks: Vulnerabilities and Solutions" (ACM CCS 2023); mechanism, calibration and departures in
``defenses/_exit_policy.py``."""

from __future__ import annotations

from dataclasses import dataclass

from benchmark.plugins import DEFENSES
from defenses._exit_policy import ExitPolicy


@DEFENSES.register("per_class_exit")
@dataclass(frozen=True)
class PerClassExit(ExitPolicy):
    """Per-Class Exiting (CCS 2023): per-class thresholds balance exit rates across predicted classes."""
