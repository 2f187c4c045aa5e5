"""cryptanalytic: exact extraction of a ReLU network's weights from black-box queries.

Layer by layer, as in Carlini, Jagielski and Mironov, "Cryptanalytic Extraction of Neural Network
Models" (CRYPTO 2020, arXiv:2003.04884), with the polynomial-time sign step ("neuron wiggle") of
Canales-Martinez, Chavez-Saab, Hambitzer, Rodriguez-Henriquez, Satpute and Shamir, "Polynomial
Time Cryptanalytic Extraction of Neural Network Models" (Eurocrypt 2024, ePrint 2023/1526) and the
sign-step improvements of Foerster, Mullins, Shumailov and Hayes, "Beyond Slow Signs in
High-fidelity Model Extraction" (NeurIPS 2024, arXiv:2406.10011): critical-point search along
random lines with precision refinement; signatures (weights up to a scalar) from finite
differences at critical points, through the layers already recovered; the precision improvement
of Carlini et al.; signs by neuron wiggle with Foerster et al.'s ``s = 15`` votes and easy/hard
split; the last layer solved linearly.

The attack holds a ``BlackBox`` and the victim's public layer sizes, nothing else; every query it
makes, linearity checks included, is counted by the oracle. It needs raw outputs (the relu-mlp
victim's oracle); under an output defense (rounding) it recovers what it can, and its result
says what it could not. Its score (alignment of neuron order and scale against the victim) is
computed server side, in ``benchmark/exact_scoring.py``.

This module is the plugin; the algorithm is in private modules, float64 numpy, each step a small
function whose docstring cites the paper and equation:

- ``_network``: the attacker's model of the layers recovered so far (forward, local Jacobian).
- ``_access``: the only door to the oracle (a ``BlackBox``); output noise floor estimation.
- ``_critical_points``: critical-point search along random lines with precision refinement.
- ``_signatures``: signature extraction (weights up to a scalar) and grouping into neurons.
- ``_signs``: sign extraction by neuron wiggle (s samples, easy/hard neurons).
- ``_precision``: Carlini et al.'s precision improvement of a recovered row.
- ``_solve``: the last layer, solved linearly; the solve also checks the last hidden layer's signs.
- ``_state``: the run's whole mutable state (``ExtractionState``, made by ``new_state``), settings,
  per-layer log, and the bookkeeping of the lines swept so far.
- ``_select``: choosing a layer's neurons among the candidates (joins, duplicates, fakes).
- ``_first_layer``, ``_hidden_layer``, ``_output_layer``: the steps of each kind of layer.
- ``_driver``: ``run``, the layer-by-layer extraction, timed and counted per step.

Notation: ``z_l = A_l h_{l-1} + b_l`` (pre-activation), ``h_l = relu(z_l)``, ``h_0 = x``; the
attacker recovers each hidden neuron's row ``(A_l[k], b_l[k])`` up to a positive scalar.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from attacks.cryptanalytic._access import Access
from attacks.cryptanalytic._driver import run as run_extraction
from attacks.cryptanalytic._state import Settings, new_state
from benchmark.api.attack import Attack, AttackContext, ExtractedWeights
from benchmark.data import Split
from benchmark.errors import ConfigError
from benchmark.oracle import BlackBox
from benchmark.plugins import ATTACKS


class ExtractedMLP(ExtractedWeights):
    """The extracted weight set (same shape as the victim), float64, plus what was recovered."""


def reserve_for(sizes: tuple[int, ...]) -> int:
    """Queries kept back for the last layer's solve and the self-check (``_output_layer``, ``_driver``)."""
    n_last, n_prev = sizes[-2], sizes[-3]
    return 2 * (n_last + n_prev + 1) + 16 + 2 * n_last + 64


@ATTACKS.register("cryptanalytic")
@dataclass(frozen=True)
class Cryptanalytic(Attack):
    """Exact extraction of a fully connected ReLU network (signatures + neuron-wiggle signs)."""

    victim_kind: ClassVar[str] = "relu-mlp"
    min_budget: ClassVar[int] = 2_000
    default_budget: ClassVar[int] = 5_000_000

    layers: str = ""  # the victim's layer sizes (public architecture); run_exact fills it in
    sign_samples: int = 15  # Foerster et al.'s s
    hard_samples: int = 100  # votes for a hard neuron, in all
    easy_confidence: float = 0.8  # majority share below which a neuron is hard
    wiggle: Literal["suppress", "projection"] = "suppress"
    refine: Literal["auto", "all", "off"] = "auto"  # Carlini et al.'s precision improvement, for which rows
    scale: float = 1.0  # standard deviation of the random query points
    line_length: float = 3.0  # half-length of a search line, in scale * sqrt(inputs)
    lines: int = 4  # lines swept before the first layer's signatures
    max_lines: int = 0  # 0: max(64, 2 * widest hidden layer + 16)
    time_limit: float = 0.0  # seconds; 0 = none

    def __post_init__(self) -> None:
        if self.layers:
            from victims.relu_mlp import parse_layers

            parse_layers(self.layers, "attack 'cryptanalytic'")
        if self.sign_samples < 1 or self.hard_samples < self.sign_samples:
            raise ConfigError("attack 'cryptanalytic': need 1 <= sign_samples <= hard_samples")
        if not 0.5 <= self.easy_confidence <= 1.0:
            raise ConfigError("attack 'cryptanalytic': easy_confidence must be in [0.5, 1]")
        if self.wiggle not in ("suppress", "projection"):
            raise ConfigError("attack 'cryptanalytic': wiggle must be suppress or projection")
        if not (math.isfinite(self.scale) and self.scale > 0 and math.isfinite(self.line_length)
                and self.line_length > 0):
            raise ConfigError("attack 'cryptanalytic': scale and line_length must be positive")
        if self.lines < 2 or (self.max_lines and self.max_lines < self.lines):
            raise ConfigError("attack 'cryptanalytic': need 2 <= lines <= max_lines (or max_lines=0, automatic)")
        if self.refine not in ("auto", "all", "off"):
            raise ConfigError("attack 'cryptanalytic': refine must be auto, all or off")
        if self.time_limit < 0:
            raise ConfigError("attack 'cryptanalytic': time_limit must be >= 0 (0 = no limit)")

    def sizes(self) -> tuple[int, ...]:
        from victims.relu_mlp import parse_layers

        if not self.layers:
            raise ConfigError("attack 'cryptanalytic' needs the victim's layer sizes (option layers=10-5-5-1)")
        return parse_layers(self.layers, "attack 'cryptanalytic'")

    def check_budget(self, budget: int) -> None:
        super().check_budget(budget)
        if self.layers and budget < reserve_for(self.sizes()) + self.min_budget:
            raise ConfigError(f"attack 'cryptanalytic' needs a budget of at least "
                              f"{reserve_for(self.sizes()) + self.min_budget} queries for {self.layers}, got {budget}")

    def settings(self, progress: bool = False) -> Settings:
        return Settings(sign_samples=self.sign_samples, hard_samples=self.hard_samples,
                        easy_confidence=self.easy_confidence, wiggle=self.wiggle, scale=self.scale,
                        line_length=self.line_length, lines=self.lines, max_lines=self.max_lines,
                        refine=self.refine, time_limit=self.time_limit, progress=progress)

    def run(self, oracle: BlackBox, query_data: Split | None, budget: int, ctx: AttackContext) -> ExtractedMLP:
        """Extract the network behind ``oracle`` (``query_data`` is not used: the attack makes its
        own queries). Never raises for lack of budget or time: it stops and says so."""
        sizes = self.sizes()
        if tuple(oracle.input_shape) != (sizes[0],) or oracle.num_classes != sizes[-1]:
            raise ConfigError(f"attack 'cryptanalytic': layers={self.layers} does not match the oracle "
                              f"(inputs {tuple(oracle.input_shape)}, outputs {oracle.num_classes})")
        rng = np.random.default_rng(ctx.seed)
        access = Access(oracle, rng, reserve=reserve_for(sizes))
        result = run_extraction(new_state(access, sizes, self.settings(ctx.progress), rng))
        details: dict[str, Any] = {
            "complete": result.complete,
            "not_recovered": result.unrecovered,
            "per_layer": [log.to_json() for log in result.logs],
            "output_layer": result.output_log,
            "noise_floor": result.noise,
            "self_check_max_rel_error": result.self_check_error,
            "seconds": result.seconds,
            "queries": result.queries,
            "refused_queries": access.refused,
            "claimed_recovered_per_layer": [int(r.sum()) for r in result.recovered],
        }
        return ExtractedMLP(model=None, details=details, sizes=sizes, weights=result.weights,
                            biases=result.biases, recovered=result.recovered, complete=result.complete)
