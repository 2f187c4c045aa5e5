"""Exit recovery from response times (multi-exit stealing paper, Sec. 2.2, Eq. 1).

A Gaussian KDE of the observed latencies; its modes are the exits, and the density minimum
between two neighbouring modes is the time boundary between those exits. The number of exits is
the number of significant modes, so it is estimated from the data, never given to the attacker.

Scott's rule over-smooths multi-modal data (it is sized by the spread of all modes together), so
the default kernel is half of Scott's (``bw_scale``). A mode counts when its prominence reaches
``prominence`` x the highest density; neighbouring modes whose valley is higher than
``max_valley`` x the lower peak, or that hold fewer than ``min_mass`` of the samples, are merged.
"""

from __future__ import annotations

import itertools
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
                   max_exits: int = 8, grid_points: int = 4096) -> ExitEstimate:
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
    peaks, _ = find_peaks(np.concatenate([[0.0], density, [0.0]]), prominence=prominence * density.max())
    peaks = list(peaks - 1)
    peaks = _merge_modes(z, grid, density, peaks, max_valley, min_mass, max_exits)
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


def _merge_modes(z: np.ndarray, grid: np.ndarray, density: np.ndarray, peaks: list[int], max_valley: float,
                 min_mass: float, max_exits: int) -> list[int]:
    """Repeatedly merge the worst pair of neighbouring modes (shallowest valley, or lightest mode)
    into its higher peak until every valley is deep, every mode heavy and at most ``max_exits``."""
    peaks = list(peaks)
    while len(peaks) > 1:
        valleys = _valleys(density, peaks)
        depth = [density[v] / min(density[a], density[b]) for v, a, b in zip(valleys, peaks[:-1], peaks[1:])]
        counts = np.bincount(np.searchsorted(grid[valleys], z, side="right"), minlength=len(peaks))
        light = int(np.argmin(counts))
        if max(depth) > max_valley:
            i = int(np.argmax(depth))
        elif counts[light] < min_mass * len(z) or len(peaks) > max_exits:
            sides = [i for i in (light - 1, light) if 0 <= i < len(valleys)]
            i = max(sides, key=lambda j: depth[j])
        else:
            break
        peaks.pop(i if density[peaks[i]] < density[peaks[i + 1]] else i + 1)
    return peaks
