"""The last layer, solved linearly, and what that solve says about the last hidden layer's signs.

Carlini et al. (CRYPTO 2020), recovering the last layer: once every hidden layer is known, the
output is affine in the last hidden state, ``f(x) = V h_{L-1}(x) + c``, so ``(V, c)`` is the
least-squares solution of that equation over a few more than ``n_{L-1} + 1`` random queries
(exact up to rounding when everything before is right; its residual is a test of everything
before).

Our addition, for the signs of the last hidden layer: with the current sign guesses ``s_k``,
``relu(-s z) = relu(s z) - s z``, so a wrongly signed neuron adds the affine term
``-v_k s_k (A[k] . h_{L-2} + b_k)``. Fitting ``f`` on ``[relu(s z), h_{L-2}, 1]`` therefore gives,
besides ``V``, a coefficient ``U = -sum_{k wrong} v_k s_k A[k]`` on ``h_{L-2}``; decomposing
``U`` on the rows ``A[k]`` (unique when the rows are independent, e.g. a contractive layer)
names the wrong signs without a single extra query. It settles neurons the wiggle left hard.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attacks.cryptanalytic._access import Access
from attacks.cryptanalytic._network import PartialNetwork


@dataclass
class OutputLayer:
    weights: np.ndarray  # (m, n_{L-1})
    bias: np.ndarray  # (m,)
    residual: float  # max |fit - f| / max |f| on the solve's queries
    rank_deficient: bool


def sample_inputs(rng: np.random.Generator, n: int, n0: int, scale: float) -> np.ndarray:
    return rng.normal(size=(n, n0)) * scale


def solve_output_layer(hidden: np.ndarray, outputs: np.ndarray) -> OutputLayer:
    """Least squares ``outputs ~ hidden @ V^T + c`` (Carlini et al., last-layer recovery)."""
    design = np.concatenate([hidden, np.ones((len(hidden), 1))], axis=1)
    theta, _, rank, _ = np.linalg.lstsq(design, outputs, rcond=None)
    fit = design @ theta
    scale = max(float(np.abs(outputs).max()), 1e-300)
    residual = float(np.abs(fit - outputs).max() / scale)
    return OutputLayer(theta[:-1].T.copy(), theta[-1].copy(), residual, rank < design.shape[1])


def wrong_signs_from_solve(prev: PartialNetwork, rows: np.ndarray, biases: np.ndarray, signs: np.ndarray,
                           x: np.ndarray, outputs: np.ndarray) -> np.ndarray | None:
    """Which last-hidden-layer signs are wrong, from one least-squares solve (module docstring).
    Returns a bool mask, or None when the decomposition is not unique (rows dependent or too few
    distinct activation patterns in ``x``)."""
    hprev = prev.hidden(x)
    z = hprev @ rows.T + biases
    feats = np.concatenate([np.maximum(z * signs, 0.0), hprev, np.ones((len(x), 1))], axis=1)
    theta, _, rank, _ = np.linalg.lstsq(feats, outputs, rcond=None)
    if rank < feats.shape[1]:
        return None
    n = len(rows)
    v = theta[:n]  # (n, m)
    u = theta[n:n + hprev.shape[1]]  # (n_{L-2}, m)
    if np.linalg.matrix_rank(rows) < n:
        return None
    beta, *_ = np.linalg.lstsq(rows.T, u, rcond=None)  # (n, m)
    expected = -v * signs[:, None]
    return np.linalg.norm(beta - expected, axis=1) < np.linalg.norm(beta, axis=1)


def self_check(access: Access, predict, rng: np.random.Generator, n0: int, scale: float, n: int = 64
               ) -> float:
    """Largest relative output difference between the reconstruction and the oracle on ``n``
    fresh random queries (the attacker's own end-to-end test; counted by the oracle)."""
    x = sample_inputs(rng, n, n0, scale)
    f = access.full(x, use_reserve=True)
    g = predict(x)
    denom = np.maximum(np.abs(f).max(axis=1), 1e-12)
    return float((np.abs(g - f).max(axis=1) / denom).max())
