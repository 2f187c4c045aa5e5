"""The attack's only door to the victim: a ``BlackBox`` (every call counted by the oracle itself).

``Access`` converts numpy inputs to the oracle's tensors and back, projects multi-output answers
onto one fixed random direction (a random linear combination of piecewise linear outputs is
piecewise linear with the same critical points, almost surely) and estimates the output's noise
floor, from which every tolerance of the attack is derived.
"""

from __future__ import annotations

import numpy as np
import torch

from benchmark.errors import AccountRefused, BudgetExceeded, ConfigError
from benchmark.oracle import BlackBox

EPS64 = float(np.finfo(np.float64).eps)


class OutOfBudget(Exception):
    """Raised inside the attack when the next query would pass the budget."""


class Access:
    """Numpy view of a BlackBox: ``full(X) -> (B, m)``, ``scalar(X) -> (B,)``; counts via the oracle."""

    def __init__(self, oracle: BlackBox, rng: np.random.Generator, reserve: int = 0) -> None:
        shape = tuple(oracle.input_shape)
        if len(shape) != 1:
            raise ConfigError(f"the cryptanalytic attack needs a victim with flat inputs, got input shape {shape}")
        self.oracle = oracle
        self.input_dim = int(shape[0])
        self.output_dim = int(oracle.num_classes)
        r = rng.normal(size=self.output_dim)
        self.direction = r / np.linalg.norm(r) if self.output_dim > 1 else np.ones(1)
        self.reserve = int(reserve)  # queries kept back for the final layer and the self-check
        self.refused = 0  # queries of batches the service refused (AccountRefused)
        self.noise = 0.0  # absolute noise floor of scalar answers (set by estimate_noise)

    @property
    def used(self) -> int:
        return self.oracle.used

    @property
    def remaining(self) -> int:
        return self.oracle.remaining

    def full(self, x: np.ndarray, use_reserve: bool = False) -> np.ndarray:
        x = np.ascontiguousarray(np.atleast_2d(x), dtype=np.float64)
        left = self.oracle.remaining - (0 if use_reserve else self.reserve)
        if len(x) > left:
            raise OutOfBudget(f"query budget exhausted ({len(x)} more queries needed, {max(left, 0)} left "
                              f"besides {self.reserve if not use_reserve else 0} kept for the last layer)")
        try:
            r = self.oracle.query(torch.from_numpy(x))
        except BudgetExceeded as exc:
            raise OutOfBudget(str(exc)) from exc
        except AccountRefused as exc:  # a detection defense refused the account: stop like out of budget
            self.refused += len(x)
            raise OutOfBudget(str(exc)) from exc
        out = r.probs.detach().cpu().numpy().astype(np.float64)
        return out.reshape(len(x), -1)

    def scalar(self, x: np.ndarray, use_reserve: bool = False) -> np.ndarray:
        return self.full(x, use_reserve) @ self.direction

    def value_noise(self, values) -> float:
        """Absolute uncertainty of scalar answers of size ``values``: the measured noise floor
        plus float64 rounding of a deep computation (64 ulps)."""
        mag = float(np.max(np.abs(values))) if np.size(values) else 0.0
        return self.noise + 64 * EPS64 * mag


def estimate_noise(access: Access, rng: np.random.Generator, scale: float, points: int = 3,
                   samples: int = 12) -> float:
    """Noise floor of the oracle's scalar answers: residual of a straight-line fit to ``samples``
    answers along short random segments (lengths 1e-6, 1e-4 and 1e-2 times ``scale``; median over
    ``points`` segments per length, largest over lengths). A ReLU network is linear on almost every
    short segment, so the residual is arithmetic rounding; an output defense (rounding to k
    decimals) shows up as a residual of about half its quantum, seen at whichever length makes
    the output move by more than one quantum."""
    n0 = access.input_dim
    worst, mags = 0.0, []
    ts = np.linspace(0.0, 1.0, samples)
    for length in (1e-6, 1e-4, 1e-2):
        res = []
        for _ in range(points):
            x0 = rng.normal(size=n0) * scale
            d = rng.normal(size=n0)
            d *= length * scale / np.linalg.norm(d)
            g = access.scalar(x0[None] + ts[:, None] * d[None])
            mags.append(np.abs(g).max())
            coef = np.polyfit(ts, g, 1)
            res.append(float(np.abs(np.polyval(coef, ts) - g).max()))
        worst = max(worst, float(np.median(res)))
    access.noise = max(worst, 4 * EPS64 * float(np.max(mags)))
    return access.noise
