"""Frozen copy of the exit-recovery rule before the two-pass log-time KDE: ``attacks/exits.py`` at
commit a164644 (single pass, linear time, half of Scott's rule over all latencies). Kept only so that
``bench_exit_recovery.py`` and ``test_bench_strategy.py`` can compare the current rule with it in one
run; nothing else imports it. Its original docstring follows.

Exit recovery from response times (multi-exit stealing paper, Sec. 2.2, Eq. 1).

A Gaussian KDE of the observed latencies; its modes are the exits, and the density minimum
between two neighbouring modes is the time boundary between those exits. The number of exits is
the number of significant modes, so it is estimated from the data, never given to the attacker.

Scott's rule over-smooths multi-modal data (it is sized by the spread of all modes together), so
the default kernel is half of Scott's (``bw_scale``). A mode counts when its prominence reaches
``prominence`` x the highest density; neighbouring modes whose valley is higher than
``max_valley`` x the lower peak, or that hold fewer than ``min_mass`` of the samples, are merged.

A rarely used exit (a few tenths of a percent of the queries, common at the deep exits of a 6- or
7-exit SDN) makes a peak far below that prominence. Such a peak, down to ``rare_prominence``, still
counts when it is statistically real: the samples within one kernel width of it must exceed those
around its valley by ``min_z`` Poisson standard deviations. Stray samples in a sparse tail fail
that test; an isolated exit passes however few samples it holds.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import find_peaks
from scipy.stats import gaussian_kde


@dataclass(frozen=True)
class ExitEstimate:
    num_exits: int
    boundaries: np.ndarray  # (num_exits - 1,) seconds, increasing
    labels: np.ndarray  # (N,) inferred exit of each latency
    grid: np.ndarray  # where the density was evaluated (seconds)
    density: np.ndarray
    bandwidth: float  # kernel standard deviation, seconds


def estimate_exits(latency: np.ndarray, bandwidth: str | float = "scott", bw_scale: float = 0.5,
                   prominence: float = 0.005, max_valley: float = 0.5, min_mass: float = 0.002,
                   max_exits: int = 8, grid_points: int = 4096, rare_prominence: float = 0.002,
                   min_z: float = 2.5) -> ExitEstimate:
    """Fit the KDE, find the modes and the minima between them, label each sample."""
    lat = np.asarray(latency, dtype=np.float64)
    lo, hi = float(lat.min()), float(lat.max())
    if not np.isfinite([lo, hi]).all():
        raise ValueError("latencies must be finite")
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):  # every response took the same time: one exit
        return ExitEstimate(1, np.empty(0), np.zeros(len(lat), dtype=np.int64), np.array([lo, hi]),
                            np.ones(2), 0.0)
    scale = hi - lo  # work on [0, 1] for conditioning; the KDE is scale-free
    z = (lat - lo) / scale
    kde = gaussian_kde(z, bw_method=bandwidth)  # bandwidth rule; the density itself is binned below
    kde.set_bandwidth(kde.factor * bw_scale)
    sigma = float(np.sqrt(kde.covariance[0, 0]))
    grid = np.linspace(-3 * sigma, 1 + 3 * sigma, grid_points)
    density = binned_density(z, grid, sigma)
    floor = min(prominence, rare_prominence) * density.max()
    peaks, props = find_peaks(np.concatenate([[0.0], density, [0.0]]), prominence=floor)
    rare = {int(p) - 1 for p, pr in zip(peaks, props["prominences"]) if pr < prominence * density.max()}
    peaks = _merge_modes(z, grid, density, list(peaks - 1), max_valley, min_mass, max_exits, rare, sigma, min_z)
    valleys = _valleys(density, peaks)
    labels = np.searchsorted(grid[valleys], z, side="right").astype(np.int64)
    return ExitEstimate(len(peaks), lo + grid[valleys] * scale, labels, lo + grid * scale, density / scale,
                        sigma * scale)


def binned_density(z: np.ndarray, grid: np.ndarray, sigma: float) -> np.ndarray:
    """The Gaussian KDE evaluated on an even grid by binning and convolving (O(N + G log G) instead
    of O(N G)); agrees with ``gaussian_kde(z)(grid)`` to within the bin width."""
    dx = grid[1] - grid[0]
    edges = np.append(grid - dx / 2, grid[-1] + dx / 2)
    counts, _ = np.histogram(z, bins=edges)
    return gaussian_filter1d(counts.astype(np.float64), sigma / dx, mode="constant", truncate=6.0) / (len(z) * dx)


def _valleys(density: np.ndarray, peaks: list[int]) -> list[int]:
    return [a + int(np.argmin(density[a:b + 1])) for a, b in itertools.pairwise(peaks)]


def _dip_z(z: np.ndarray, grid: np.ndarray, peak: int, valley: int, h: float) -> float:
    """Poisson standard deviations by which the samples within ``h`` of ``peak`` outnumber those
    within ``h`` of ``valley``."""
    n_p = np.count_nonzero(np.abs(z - grid[peak]) <= h)
    n_v = np.count_nonzero(np.abs(z - grid[valley]) <= h)
    return (n_p - n_v) / np.sqrt(max(n_p + n_v, 1))


def _merge_modes(z: np.ndarray, grid: np.ndarray, density: np.ndarray, peaks: list[int], max_valley: float,
                 min_mass: float, max_exits: int, rare: Collection[int] = (), h: float = 0.0,
                 min_z: float = 0.0) -> list[int]:
    """Repeatedly merge the worst pair of neighbouring modes (shallowest valley, a rare peak whose
    dip is not significant, or lightest mode) into its higher peak until every valley is deep,
    every rare peak significant, every mode heavy and at most ``max_exits``."""
    peaks = list(peaks)
    while len(peaks) > 1:
        valleys = _valleys(density, peaks)
        depth = [density[v] / min(density[a], density[b]) for v, a, b in zip(valleys, peaks[:-1], peaks[1:])]
        lower = [a if density[a] < density[b] else b for a, b in itertools.pairwise(peaks)]
        dips = [_dip_z(z, grid, p, v, h) if p in rare else np.inf for p, v in zip(lower, valleys)]
        counts = np.bincount(np.searchsorted(grid[valleys], z, side="right"), minlength=len(peaks))
        light = int(np.argmin(counts))
        if max(depth) > max_valley:
            i = int(np.argmax(depth))
        elif min(dips) < min_z:
            i = int(np.argmin(dips))
        elif counts[light] < min_mass * len(z) or len(peaks) > max_exits:
            sides = [i for i in (light - 1, light) if 0 <= i < len(valleys)]
            i = max(sides, key=lambda j: depth[j])
        else:
            break
        peaks.pop(i if density[peaks[i]] < density[peaks[i + 1]] else i + 1)
    return peaks
