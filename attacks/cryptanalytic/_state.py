"""The extraction's settings, its per-layer log, and its whole mutable state: one
``ExtractionState``, created by ``new_state`` and passed to every step; plus the bookkeeping every
layer uses (time limit, tolerances, the lines swept so far).

Only the ``Access`` (a BlackBox) and the public layer sizes come in; every hidden state the
attack computes comes from the layers it has recovered itself, never from the victim.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attacks.cryptanalytic._access import Access
from attacks.cryptanalytic._critical_points import Line, random_line, sweep_line
from attacks.cryptanalytic._network import PartialNetwork
from attacks.cryptanalytic._signs import SignResult
from attacks.cryptanalytic._solve import OutputLayer

FINGERPRINT_PROBES = 8


class OutOfTime(Exception):
    """The attack's time limit is reached."""


@dataclass(frozen=True)
class Settings:
    sign_samples: int = 15
    hard_samples: int = 100
    easy_confidence: float = 0.8
    wiggle: str = "suppress"
    scale: float = 1.0
    line_length: float = 3.0
    lines: int = 4
    max_lines: int = 0  # 0: max(64, 2 * widest layer + 16)
    patience: int = 10
    min_support: int = 3
    refine: str = "auto"  # auto: rows whose signature error estimate exceeds refine_above; all; off
    refine_above: float = 1e-10
    time_limit: float = 0.0
    progress: bool = False


@dataclass
class LayerLog:
    """Time and queries of one layer, split into signature and sign extraction."""

    layer: int
    neurons: int
    found: int = 0
    signature_seconds: float = 0.0
    signature_queries: int = 0
    sign_seconds: float = 0.0
    sign_queries: int = 0
    lines: int = 0
    critical_points: int = 0
    signatures: int = 0
    precision_seconds: float = 0.0
    precision_queries: int = 0
    rows_refined: int = 0
    rows_not_refined: int = 0
    hard_neurons: int = 0
    min_sign_confidence: float | None = None
    signs_fixed_by_output_solve: int = 0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(eq=False)
class ExtractionState:
    """Everything one extraction run holds and changes, created by ``new_state`` only."""

    access: Access
    """The only door to the oracle (a ``BlackBox``): counts the queries, holds the noise floor."""
    sizes: tuple[int, ...]
    """The victim's public layer sizes, inputs first, outputs last."""
    settings: Settings
    """The attack's settings, ``max_lines`` resolved (never 0)."""
    rng: np.random.Generator
    """The run's one random generator: every draw of the attack, in order."""
    n0: int
    """Input dimension (``sizes[0]``)."""
    start: float
    """``time.perf_counter()`` at creation: the time limit and the total seconds count from it."""
    fp_probes: np.ndarray
    """(n0, FINGERPRINT_PROBES) random unit directions of the first layer's fingerprints."""
    half_length: float
    """Half-length of a random search line (``line_length * scale * sqrt(n0)``)."""
    lines: list[Line]
    """Every line swept so far, in order (a line's ``index`` is its position here)."""
    net: PartialNetwork
    """The attacker's model: the hidden layers recovered completely so far."""
    logs: list[LayerLog]
    """Time, queries and notes of each hidden layer."""
    rows_all: list[np.ndarray]
    """Rows of each extracted hidden layer (signs applied, padded to the layer's width)."""
    biases_all: list[np.ndarray]
    """Biases of each extracted hidden layer (signs applied, padded to the layer's width)."""
    recovered: list[np.ndarray]
    """Per hidden layer, a bool per neuron: those the attack believes it recovered."""
    output: OutputLayer | None
    """The last layer, once solved."""
    row_errors: list[float]
    """Signature error estimate per row of the layer being extracted (decides the precision step)."""
    anchors: list[np.ndarray | None]
    """Critical points per neuron of the layer being extracted (precision, signs, output solve)."""
    partial: dict[int, list[bool]]
    """Per layer: rows with weights still never seen after the precision step."""
    results: dict[int, list[SignResult]]
    """Per layer: the sign step's result of each neuron."""
    verified: dict[int, bool]
    """Layers whose signs were checked exactly (by the output solve or the next layer's jumps)."""
    fixed: dict[int, np.ndarray]
    """Per layer: the neurons whose signs the output solve flipped."""


def new_state(access: Access, sizes: tuple[int, ...], settings: Settings, rng: np.random.Generator
              ) -> ExtractionState:
    """The state at the start of a run (draws the fingerprint probes from ``rng``)."""
    sizes = tuple(sizes)
    n0 = sizes[0]
    start = time.perf_counter()
    fp_probes = rng.normal(size=(n0, FINGERPRINT_PROBES))
    fp_probes /= np.linalg.norm(fp_probes, axis=0, keepdims=True)
    half_length = settings.line_length * settings.scale * np.sqrt(n0)
    if not settings.max_lines:
        settings = dataclasses.replace(settings, max_lines=max(64, 2 * max(sizes[1:-1]) + 16))
    n_hidden = len(sizes) - 2
    return ExtractionState(
        access=access, sizes=sizes, settings=settings, rng=rng, n0=n0, start=start, fp_probes=fp_probes,
        half_length=half_length, lines=[], net=PartialNetwork(n0),
        logs=[LayerLog(layer=i + 1, neurons=sizes[i + 1]) for i in range(n_hidden)],
        rows_all=[], biases_all=[], recovered=[np.zeros(n, dtype=bool) for n in sizes[1:-1]], output=None,
        row_errors=[], anchors=[], partial={}, results={}, verified={}, fixed={})


# ---- bookkeeping ---------------------------------------------------------------------------

def check_time(st: ExtractionState) -> None:
    if st.settings.time_limit and time.perf_counter() - st.start > st.settings.time_limit:
        raise OutOfTime(f"time limit of {st.settings.time_limit:g} s reached")


def g_scale(st: ExtractionState) -> float:
    vals = [abs(k.value) for line in st.lines for k in line.kinks]
    return float(np.median(vals)) if vals else 1.0


def tol_distance(st: ExtractionState) -> float:
    """How close (input distance) a critical point must be to a neuron's hyperplane to count as
    that neuron's: well above float64 error, widened with the measured output noise."""
    rel = st.access.noise / max(g_scale(st), 1e-300)
    return st.settings.scale * max(1e-7, min(1e-2, 1e5 * rel))


def min_step(st: ExtractionState) -> float:
    """Shortest finite-difference step whose slope is still well above the noise."""
    rel = st.access.noise / max(g_scale(st), 1e-300)
    return st.settings.scale * max(0.0, min(1e-2, 1e3 * rel)) if rel > 1e-13 else 0.0


def sweep(st: ExtractionState, count: int) -> list[Line]:
    new = []
    for _ in range(count):
        if len(st.lines) >= st.settings.max_lines:
            break
        check_time(st)
        line = random_line(len(st.lines), st.n0, st.rng, st.settings.scale, st.half_length)
        sweep_line(st.access, line, min_step=min_step(st))
        st.lines.append(line)
        new.append(line)
    return new


def all_kinks(st: ExtractionState) -> list[tuple[int, int]]:
    return [(line.index, i) for line in st.lines for i in range(len(line.kinks))]


def kink_x(st: ExtractionState, key: tuple[int, int]) -> np.ndarray:
    line = st.lines[key[0]]
    return line.point(line.kinks[key[1]].t)


def explained(st: ExtractionState, key: tuple[int, int]) -> bool:
    """Is this critical point on a neuron already recovered (any earlier layer)?"""
    if st.net.depth == 0:
        return False
    line = st.lines[key[0]]
    x = kink_x(st, key)
    _, _, zs, zjacs = st.net.local(x)
    tol = tol_distance(st)
    for z, zj in zip(zs, zjacs):
        rate = np.abs(zj @ line.d)
        with np.errstate(divide="ignore", invalid="ignore"):
            dist = np.where(rate > 0, np.abs(z) / rate, np.inf)
        if dist.size and dist.min() <= tol:
            return True
    return False
