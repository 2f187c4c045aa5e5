"""Exit recovery from response times (multi-exit stealing paper, Sec. 2.2, Eq. 1).

A Gaussian KDE of the observed latencies; its modes are the exits, and the density minimum
between two neighbouring modes is the time boundary between those exits. The number of exits is
the number of significant modes, so it is estimated from the data, never given to the attacker.

The KDE runs over log latency (``log_time``): timing noise grows with the latency (calibrated
spreads are a few percent of each exit's mean), so in log time every exit has about the same
width and one kernel suits them all. The kernel is chosen in two passes (``refine``): a first
fit with half of Scott's rule (``bw_scale``; Scott's rule is sized by the spread of all modes
together and over-smooths), then Scott's rule for each exit found, from that exit's own robust
spread (1.4826 MAD) and sample count; the median of those is the kernel (never wider than the
first), and the fit repeats until the modes stop changing (at most three passes). Half of Scott's
rule over all modes is wider than an exit's own spread when the exits are far apart, and merged
separated exits (a 6 % exit 4.1 of its spreads from an 18 % exit; ``BENCHMARKS.md``).

A mode counts when its prominence reaches ``prominence`` x the highest density; neighbouring
modes whose valley is higher than ``max_valley`` x the lower peak (or ``SHALLOW_VALLEY`` when the
dip is strong, ``STRONG_Z`` x ``min_z``), or that hold fewer than ``min_mass`` of the samples, are
merged. Every mode must also be statistically real: the samples within ``DIP_WINDOW`` kernel
widths of the lower peak of each neighbouring pair must exceed those around their valley by
``min_z`` Poisson standard deviations. A rarely used exit (a few tenths of a
percent of the queries, common at the deep exits of a 6- or 7-exit SDN) makes a peak far below
``prominence``; down to ``rare_prominence`` it is kept for that test. Stray samples in a sparse
tail fail the test; an isolated exit passes however few samples it holds.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import find_peaks
from scipy.stats import gaussian_kde

DIP_WINDOW = 2.0  # the dip test counts within this many kernel widths (narrowed near a peak)
SHALLOW_VALLEY = 0.75  # a valley up to this (above ``max_valley``) still separates a strong dip
STRONG_Z = 1.2  # a strong dip: at least this many times ``min_z``


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
                   min_z: float = 2.5, log_time: bool = True, refine: bool = True) -> ExitEstimate:
    """Fit the KDE, find the modes and the minima between them, label each sample. A numeric
    ``bandwidth`` is a fixed kernel factor (as in ``scipy.stats.gaussian_kde``): no refinement."""
    raw = np.asarray(latency, dtype=np.float64)
    if not np.isfinite(raw).all():
        raise ValueError("latencies must be finite")
    log_time = log_time and bool(raw.min() > 0)
    lat = np.log(raw) if log_time else raw
    lo, hi = float(lat.min()), float(lat.max())
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):  # every response took the same time: one exit
        return ExitEstimate(1, np.empty(0), np.zeros(len(lat), dtype=np.int64), np.array([raw.min(), raw.max()]),
                            np.ones(2), 0.0)
    scale = hi - lo  # work on [0, 1] for conditioning; the KDE is scale-free
    z = (lat - lo) / scale
    kde = gaussian_kde(z, bw_method=bandwidth)  # bandwidth rule; the density itself is binned below
    kde.set_bandwidth(kde.factor * bw_scale)
    sigma = float(np.sqrt(kde.covariance[0, 0]))
    modes = (prominence, rare_prominence, max_valley, min_mass, max_exits, min_z, grid_points, sigma)
    grid, density, peaks = _modes(z, sigma, *modes)
    if refine and isinstance(bandwidth, str):
        for _ in range(2):
            narrower = _within_exit_bandwidth(z, np.searchsorted(grid[_valleys(density, peaks)], z, side="right"))
            narrower = max(narrower, 2.0 / grid_points)  # at least two grid steps
            if not narrower < 0.95 * sigma:
                break
            sigma = narrower
            grid, density, peaks = _modes(z, sigma, *modes)
    valleys = _valleys(density, peaks)
    labels = np.searchsorted(grid[valleys], z, side="right").astype(np.int64)
    bounds, t = lo + grid[valleys] * scale, lo + grid * scale
    if not log_time:
        return ExitEstimate(len(peaks), bounds, labels, t, density / scale, sigma * scale)
    # back to seconds: density per second = density per log-second / t; the kernel, constant in
    # log time, is reported as its width in seconds at the median latency
    return ExitEstimate(len(peaks), np.exp(bounds), labels, np.exp(t), density / scale / np.exp(t),
                        sigma * scale * float(np.median(raw)))


def _modes(z: np.ndarray, sigma: float, prominence: float, rare_prominence: float, max_valley: float,
           min_mass: float, max_exits: int, min_z: float, grid_points: int,
           window: float) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Density with kernel ``sigma`` on a grid, and its modes after merging (``window``: the widest
    dip-test window)."""
    grid = np.linspace(-3 * sigma, 1 + 3 * sigma, grid_points)
    density = binned_density(z, grid, sigma)
    floor = min(prominence, rare_prominence) * density.max()
    peaks, _ = find_peaks(np.concatenate([[0.0], density, [0.0]]), prominence=floor)
    return grid, density, _merge_modes(z, grid, density, list(peaks - 1), max_valley, min_mass, max_exits,
                                       sigma, min_z, window)


def _within_exit_bandwidth(z: np.ndarray, labels: np.ndarray, min_samples: int = 10) -> float:
    """Median over the exits (with at least ``min_samples`` samples) of Scott's rule for that exit
    alone: robust spread (1.4826 MAD) x n ** -1/5; infinite when no exit qualifies."""
    widths = []
    for k in range(int(labels.max()) + 1):
        zk = z[labels == k]
        if len(zk) >= min_samples:
            widths.append(1.4826 * float(np.median(np.abs(zk - np.median(zk)))) * len(zk) ** -0.2)
    widths = [w for w in widths if w > 0]
    return float(np.median(widths)) if widths else np.inf


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
                 min_mass: float, max_exits: int, h: float = 0.0, min_z: float = 0.0,
                 window: float = 0.0) -> list[int]:
    """Repeatedly merge the worst pair of neighbouring modes (shallowest valley, a lower peak whose
    dip is not significant, or lightest mode) into its higher peak until every valley is deep,
    every dip significant, every mode heavy and at most ``max_exits``."""
    peaks = list(peaks)
    while len(peaks) > 1:
        valleys = _valleys(density, peaks)
        depth = [density[v] / min(density[a], density[b]) for v, a, b in zip(valleys, peaks[:-1], peaks[1:])]
        lower = [a if density[a] < density[b] else b for a, b in itertools.pairwise(peaks)]
        # dip window: DIP_WINDOW kernels, at most ``window`` (the first pass's kernel) and half the
        # valley's distance to either peak (never reaching into one), at least one kernel
        wins = [max(h, min(window, DIP_WINDOW * h, (grid[v] - grid[a]) / 2, (grid[b] - grid[v]) / 2))
                for v, a, b in zip(valleys, peaks[:-1], peaks[1:])]
        dips = [_dip_z(z, grid, p, v, w) for p, v, w in zip(lower, valleys, wins)]
        counts = np.bincount(np.searchsorted(grid[valleys], z, side="right"), minlength=len(peaks))
        light = int(np.argmin(counts))
        shallow = [d if d > max_valley and (d > SHALLOW_VALLEY or dz < STRONG_Z * min_z) else 0.0
                   for d, dz in zip(depth, dips)]
        if max(shallow) > 0:
            i = int(np.argmax(shallow))
        elif min(dips) < min_z:
            i = int(np.argmin(dips))
        elif counts[light] < min_mass * len(z) or len(peaks) > max_exits:
            sides = [i for i in (light - 1, light) if 0 <= i < len(valleys)]
            i = max(sides, key=lambda j: depth[j])
        else:
            break
        peaks.pop(i if density[peaks[i]] < density[peaks[i + 1]] else i + 1)
    return peaks
