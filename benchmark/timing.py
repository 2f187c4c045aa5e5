"""Timing channels: how the oracle's per-sample response latency is produced.

- ``simulated`` (default, reproducible): per-exit latency profile (mean, spread) plus seeded
  Gaussian noise. The profile is calibrated by really timing this victim on this machine, batch 1,
  each exit forced in turn (``calibrate``), or derived from FLOPs (``flops_profile``), which is
  the same on every machine. Same profile and seed, same latencies.
- ``measured``: real wall clock per sample (batch 1, ``perf_counter_ns``, CUDA-synchronised).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from benchmark.api.victim import MultiExitNet


@dataclass(frozen=True)
class LatencyProfile:
    """Per-exit latency of the victim: centre and spread in seconds."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str  # "calibrated:<device>" | "flops"

    def to_json(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std), "source": self.source}

    @staticmethod
    def from_json(obj: dict) -> LatencyProfile:
        return LatencyProfile(tuple(map(float, obj["mean"])), tuple(map(float, obj["std"])), str(obj["source"]))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def calibrate(model: MultiExitNet, reps: int = 200, warmup: int = 5, seed: int = 0,
              keep: float = 0.25) -> LatencyProfile:
    """Time batch-1 early-exit inference forced to each exit; median and robust spread (1.4826 MAD),
    with the spread floored at 1% of the median so the noise model never collapses.

    Made for shared, busy machines: the exits are timed round-robin (one call per exit per round),
    so a burst of load lands on every exit alike instead of inflating the one being timed, and only
    the quieter ``keep`` fraction of the rounds (by total time) is kept (``benchmarks/
    bench_calibration.py`` measures this under load; results in BENCHMARKS.md)."""
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    device = model.thresholds.device
    saved = model.thresholds.clone()
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(1, *model.input_shape, generator=gen).to(device)
    forced = [model.forced_exit_thresholds(k) for k in range(model.num_exits)]
    times: list[list[float]] = [[] for _ in forced]
    try:
        for t in forced:
            model.set_thresholds(t)
            for _ in range(warmup):
                model.early_exit(x)
        _sync(device)
        for _ in range(reps):
            for k, t in enumerate(forced):
                model.set_thresholds(t)
                t0 = time.perf_counter_ns()
                model.early_exit(x)
                _sync(device)
                times[k].append((time.perf_counter_ns() - t0) * 1e-9)
    finally:
        model.set_thresholds(saved)
    # a round is one call per exit back to back, so load slows a round as a whole: keep the quieter
    # rounds (by their total time) and take median and spread over those
    table = np.asarray(times).T  # (reps, exits)
    quiet = table[np.argsort(table.sum(1), kind="stable")[:max(1, round(keep * len(table)))]]
    medians = np.median(quiet, axis=0)
    mads = np.median(np.abs(quiet - medians), axis=0) * 1.4826
    # deeper exits cost at least as much; enforce monotone centres against timer noise, then floor
    # the spread at 1% of the (possibly raised) centre
    means = [float(m) for m in np.maximum.accumulate(medians)]
    stds = [max(float(mad), 0.01 * m) for mad, m in zip(mads, means)]
    return LatencyProfile(tuple(means), tuple(stds), f"calibrated:{device.type}")


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
