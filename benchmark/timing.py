"""Timing channels: how the oracle's per-sample response latency is produced.

- ``simulated`` (default, reproducible): per-exit latency profile (mean, spread) plus seeded
  Gaussian noise. The profile is calibrated by really timing this victim on the local machine, batch 1,
  each exit forced in turn (``calibrate``), or derived from FLOPs (``flops_profile``), which is
  the same on every machine. Same profile and seed, same latencies.
- ``measured``: real wall clock per sample (batch 1, ``perf_counter_ns``, CUDA-synchronised).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from benchmark.api.victim import MultiExitNet


@dataclass(frozen=True)
class LatencyProfile:
    """Per-exit latency of the victim: centre and spread in seconds. ``reliable``: whether a
    calibration's repeated measurements agreed (``calibrate``); None where nothing was checked (a
    FLOPs profile, or a profile cached before the check existed)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str  # "calibrated:<device>" | "flops"
    reliable: bool | None = None

    def to_json(self) -> dict:
        out = {"mean": list(self.mean), "std": list(self.std), "source": self.source}
        if self.reliable is not None:  # absent when unknown: JSON of unchecked profiles is unchanged
            out["reliable"] = self.reliable
        return out

    @staticmethod
    def from_json(obj: dict) -> LatencyProfile:
        reliable = obj.get("reliable")
        if reliable is not None and not isinstance(reliable, bool):
            raise TypeError(f"'reliable' must be true, false or absent, got {reliable!r}")
        return LatencyProfile(tuple(map(float, obj["mean"])), tuple(map(float, obj["std"])), str(obj["source"]),
                              reliable)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def calibrate(model: MultiExitNet, reps: int = 200, warmup: int = 5, seed: int = 0,
              keep: float = 0.25, blocks: int = 4, attempts: int = 3) -> LatencyProfile:
    """Time batch-1 early-exit inference forced to each exit; median and robust spread (1.4826 MAD),
    with the spread floored at 1% of the median so the noise model never collapses.

    Made for shared, busy machines: the exits are timed round-robin (one call per exit per round),
    so a burst of load lands on every exit alike instead of inflating the one being timed, and only
    the quieter ``keep`` fraction of the rounds (by total time) is kept (``benchmarks/
    bench_calibration.py`` measures this under load; results in BENCHMARKS.md).

    The measurement checks itself (``unreliable``): the rounds are split into ``blocks``
    consecutive blocks, each summarised as the whole is, and the profile is unreliable when one
    exit's centres in two blocks differ by more than the two blocks' timing noise together (the
    machine's load changed while it was measured) or when two consecutive exits are not separated
    in every pair of blocks (one exit's centre within the other's spread, or in the wrong order).
    An unreliable measurement is repeated, ``attempts`` times in all; if the last one is still
    unreliable it is returned with ``reliable=False`` and one warning line on stderr."""
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    if blocks < 1 or attempts < 1:
        raise ValueError(f"blocks and attempts must be >= 1, got {blocks} and {attempts}")
    device = model.thresholds.device
    saved = model.thresholds.clone()
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(1, *model.input_shape, generator=gen).to(device)
    forced = [model.forced_exit_thresholds(k) for k in range(model.num_exits)]
    try:
        for t in forced:
            model.set_thresholds(t)
            for _ in range(warmup):
                model.early_exit(x)
        _sync(device)
        for _ in range(attempts):
            table = _time_rounds(model, x, forced, reps, device)  # (reps, exits)
            problem = unreliable(table, blocks, keep)
            if problem is None:
                break
    finally:
        model.set_thresholds(saved)
    means, stds = _summarise(table, keep)
    # deeper exits cost at least as much; enforce monotone centres against timer noise, then floor
    # the spread at 1% of the (possibly raised) centre
    means = np.maximum.accumulate(means)
    stds = np.maximum(stds, 0.01 * means)
    if problem is not None:
        print(f"warning: latency calibration unreliable after {attempts} measurement(s): {problem}; the profile "
              f"is kept and marked reliable: false", file=sys.stderr)
    return LatencyProfile(tuple(map(float, means)), tuple(map(float, stds)), f"calibrated:{device.type}",
                          problem is None)


def _time_rounds(model: MultiExitNet, x: Tensor, forced: list, reps: int, device: torch.device) -> np.ndarray:
    times = np.empty((reps, len(forced)))
    for r in range(reps):
        for k, t in enumerate(forced):
            model.set_thresholds(t)
            t0 = time.perf_counter_ns()
            model.early_exit(x)
            _sync(device)
            times[r, k] = (time.perf_counter_ns() - t0) * 1e-9
    return times


def _summarise(table: np.ndarray, keep: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-exit median and robust spread (1.4826 MAD) over the quieter ``keep`` fraction of the
    rounds: a round is one call per exit back to back, so load slows a round as a whole."""
    quiet = table[np.argsort(table.sum(1), kind="stable")[:max(1, round(keep * len(table)))]]
    medians = np.median(quiet, axis=0)
    return medians, np.median(np.abs(quiet - medians), axis=0) * 1.4826


def unreliable(table: np.ndarray, blocks: int = 4, keep: float = 0.25) -> str | None:
    """Why a calibration's timings ``table`` (rounds x exits, seconds) do not make a reliable profile,
    or None. The rounds are cut into ``blocks`` consecutive blocks, each summarised as the profile
    is (median and spread over its quieter ``keep`` fraction of rounds, spread floored at 1% of the
    median). Over every pair of blocks, each exit's centres must agree within the sum of the two
    blocks' spreads over *all* their rounds (the host's ordinary noise; a larger move means the
    load changed: reported first, since it also moves exits into each other), and (a block with
    itself included) consecutive exits must be separated: exit k+1's centre above exit k's by more
    than the larger of their spreads."""
    parts = [p for p in np.array_split(table, min(blocks, len(table))) if len(p)]
    centre = np.array([_summarise(p, keep)[0] for p in parts])  # (blocks, exits)
    spread = np.maximum(np.array([_summarise(p, keep)[1] for p in parts]), 0.01 * centre)
    noise = np.maximum(np.array([_summarise(p, 1.0)[1] for p in parts]), 0.01 * centre)
    for k in range(table.shape[1]):
        diff = np.abs(centre[:, None, k] - centre[None, :, k])
        allowed = noise[:, None, k] + noise[None, :, k]
        if (diff > allowed).any():
            r, s = np.argwhere(diff > allowed)[0]
            return (f"exit {k + 1} measured {centre[r, k] * 1e6:.1f} +- {noise[r, k] * 1e6:.1f} us in block "
                    f"{r + 1} of {len(parts)} and {centre[s, k] * 1e6:.1f} +- {noise[s, k] * 1e6:.1f} us in block "
                    f"{s + 1} (the machine's load changed while measuring?)")
    for k in range(table.shape[1] - 1):
        gap = centre[:, None, k + 1] - centre[None, :, k]  # [r, s]: exit k+1 in block r minus exit k in block s
        width = np.maximum(spread[:, None, k + 1], spread[None, :, k])
        if (gap <= width).any():
            r, s = np.argwhere(gap <= width)[0]
            return (f"exits {k + 1} and {k + 2} are not separated (exit {k + 2} at {centre[r, k + 1] * 1e6:.1f} us "
                    f"in block {r + 1} of {len(parts)}, exit {k + 1} at {centre[s, k] * 1e6:.1f} "
                    f"+- {spread[s, k] * 1e6:.1f} us in block {s + 1})")
    return None


def flops_profile(exit_flops: list[int], flops_per_second: float = 2e9, overhead: float = 50e-6,
                  rel_std: float = 0.02) -> LatencyProfile:
    """Machine-independent profile: overhead + FLOPs / throughput, spread ``rel_std`` of the mean."""
    means = [overhead + f / flops_per_second for f in exit_flops]
    return LatencyProfile(tuple(means), tuple(rel_std * m for m in means), "flops")


class SimulatedTiming:
    """Latency = profile mean of the sample's exit + seeded Gaussian noise (clipped positive)."""

    name = "simulated"

    def __init__(self, profile: LatencyProfile, seed: int) -> None:
        self.profile = profile
        self.rng = np.random.default_rng(seed)
        self._mean = np.asarray(profile.mean)
        self._std = np.asarray(profile.std)

    def serve(self, model: MultiExitNet, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out = model.early_exit(x)
        return out.logits, out.exits, torch.from_numpy(self.latencies(out.exits.cpu().numpy()))

    def latencies(self, exits: np.ndarray) -> np.ndarray:
        """Seconds for answers leaving at ``exits`` (draws from this channel's noise stream)."""
        lat = self._mean[exits] + self._std[exits] * self.rng.standard_normal(len(exits))
        return np.maximum(lat, 0.05 * self._mean[exits])


class MeasuredTiming:
    """Real per-sample wall clock: each sample served alone (batch 1), timed with perf_counter_ns."""

    name = "measured"

    def __init__(self, profile: LatencyProfile | None = None) -> None:
        self.profile = profile  # kept for defenses that need the owner's view of latencies

    @torch.no_grad()
    def serve(self, model: MultiExitNet, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        device = model.thresholds.device
        logits, exits, lat = [], [], []
        for i in range(len(x)):
            xi = x[i:i + 1]
            _sync(device)
            t0 = time.perf_counter_ns()
            out = model.early_exit(xi)
            _sync(device)
            lat.append((time.perf_counter_ns() - t0) * 1e-9)
            logits.append(out.logits)
            exits.append(out.exits)
        return torch.cat(logits), torch.cat(exits), torch.tensor(lat, dtype=torch.float64)
