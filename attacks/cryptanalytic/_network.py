"""The attacker's model of the part of the network recovered so far (float64 numpy).

Nothing here touches the oracle: it is plain arithmetic on recovered weights, used to compute the
hidden state ``h_{l-1}(x)``, the local Jacobian of the recovered layers and the distance of every
recovered neuron to its critical hyperplane.
"""

from __future__ import annotations

import numpy as np


class PartialNetwork:
    """Recovered hidden layers ``(A_1, b_1), ..., (A_d, b_d)`` (rows normalised, signs fixed)."""

    def __init__(self, input_dim: int) -> None:
        self.input_dim = int(input_dim)
        self.weights: list[np.ndarray] = []
        self.biases: list[np.ndarray] = []

    @property
    def depth(self) -> int:
        return len(self.weights)

    @property
    def width(self) -> int:
        """Size of the last recovered layer (the input size when nothing is recovered)."""
        return self.weights[-1].shape[0] if self.weights else self.input_dim

    def add_layer(self, weights: np.ndarray, biases: np.ndarray) -> None:
        self.weights.append(np.array(weights, dtype=np.float64))  # own copies
        self.biases.append(np.array(biases, dtype=np.float64))

    def copy(self) -> PartialNetwork:
        out = PartialNetwork(self.input_dim)
        out.weights = [w.copy() for w in self.weights]
        out.biases = [b.copy() for b in self.biases]
        return out

    def pre_activations(self, x: np.ndarray) -> list[np.ndarray]:
        """``[z_1, ..., z_d]`` for inputs ``x`` (B, n0) (or (n0,))."""
        h = np.asarray(x, dtype=np.float64)
        out = []
        for a, b in zip(self.weights, self.biases):
            z = h @ a.T + b
            out.append(z)
            h = np.maximum(z, 0.0)
        return out

    def hidden(self, x: np.ndarray) -> np.ndarray:
        """``h_d(x)``, the output of the last recovered layer (``x`` itself when depth is 0)."""
        h = np.asarray(x, dtype=np.float64)
        for a, b in zip(self.weights, self.biases):
            h = np.maximum(h @ a.T + b, 0.0)
        return h

    def local(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray]]:
        """At one input ``x``: ``h_d(x)``, the Jacobian ``dh_d/dx`` (n_d, n0), the pre-activations of
        every recovered layer and their Jacobians ``dz_l/dx`` (exact: the network is linear around
        ``x`` as long as no recovered neuron is exactly at zero)."""
        x = np.asarray(x, dtype=np.float64)
        h = x
        jac = np.eye(self.input_dim)
        zs, zjacs = [], []
        for a, b in zip(self.weights, self.biases):
            z = a @ h + b
            zjac = a @ jac
            zs.append(z)
            zjacs.append(zjac)
            active = z > 0
            h = np.where(active, z, 0.0)
            jac = zjac * active[:, None]
        return h, jac, zs, zjacs

    def safe_step(self, x: np.ndarray, direction: np.ndarray, fraction: float = 0.5, skip: int | None = None
                  ) -> float:
        """The largest ``t`` such that no recovered neuron changes state on ``x +- s*direction`` for
        ``|s| <= t``, times ``fraction`` (inf when nothing is recovered). ``skip``: a neuron of the
        last recovered layer to leave out (one the caller holds fixed)."""
        if not self.weights:
            return float("inf")
        _, _, zs, zjacs = self.local(x)
        best = float("inf")
        for depth, (z, zj) in enumerate(zip(zs, zjacs)):
            rate = np.abs(zj @ direction)
            if skip is not None and depth == len(zs) - 1:
                rate = rate.copy()
                rate[skip] = 0.0
            with np.errstate(divide="ignore", invalid="ignore"):
                dist = np.where(rate > 0, np.abs(z) / rate, np.inf)
            best = min(best, float(dist.min()) if dist.size else best)
        return best * fraction
