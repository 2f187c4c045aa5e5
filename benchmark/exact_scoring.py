"""Server-side scoring of an extracted weight set against the victim's (never used by the attack).

A ReLU network is defined only up to a permutation of each hidden layer and a positive scale per
hidden neuron (``relu(s z) = s relu(z)`` for ``s > 0``, compensated in the next layer). So, as
Carlini et al. (CRYPTO 2020) and Foerster et al. (NeurIPS 2024) report it, the extraction is
first *aligned*: layer by layer, the extracted rows are expressed in the victim's coordinates of
the previous layer, matched to the victim's rows (Hungarian assignment on ``1 - |cos|``) and
rescaled by the best positive factor; the error is the largest absolute difference of any weight
or bias after alignment, reported as ``log2``. A neuron whose best factor is negative has the
wrong sign: it is aligned with ``|factor|`` and its error shows it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

#: a neuron counts as recovered when its sign is right and its aligned row is within this relative
#: error of the victim's (largest absolute difference / largest absolute weight of the row)
RECOVERED_REL_ERROR = 2.0 ** -20
#: a neuron counts as identified when its sign is right and its row points the same way (cosine)
IDENTIFIED_COSINE = 0.999


@dataclass
class Alignment:
    layer_errors: list[float]  # max abs error per layer (hidden layers, then the output layer)
    max_error: float
    recovered: list[np.ndarray]  # per hidden layer, indexed by victim neuron
    identified: list[np.ndarray]
    sign_correct: list[np.ndarray]
    permutation: list[np.ndarray]  # victim neuron j <- extracted neuron perm[j]
    aligned_weights: list[np.ndarray]
    aligned_biases: list[np.ndarray]

    @property
    def max_error_log2(self) -> float:
        return float(np.log2(self.max_error)) if self.max_error > 0 else -1074.0

    def to_json(self) -> dict:
        return {"layer_errors_log2": [float(np.log2(e)) if e > 0 else -1074.0 for e in self.layer_errors],
                "recovered_per_layer": [int(r.sum()) for r in self.recovered],
                "identified_per_layer": [int(r.sum()) for r in self.identified],
                "sign_correct_per_layer": [int(r.sum()) for r in self.sign_correct]}


def align(true_w: list[np.ndarray], true_b: list[np.ndarray], ext_w: list[np.ndarray],
          ext_b: list[np.ndarray]) -> Alignment:
    """Align ``(ext_w, ext_b)`` to ``(true_w, true_b)`` (module docstring)."""
    n_layers = len(true_w)
    perm_prev = np.arange(true_w[0].shape[1])
    scale_prev = np.ones(true_w[0].shape[1])
    errors, recovered, identified, signs, perms, aw, ab = [], [], [], [], [], [], []
    for layer in range(n_layers):
        t_w, t_b = np.asarray(true_w[layer], np.float64), np.asarray(true_b[layer], np.float64)
        e_w = np.asarray(ext_w[layer], np.float64)[:, perm_prev] * scale_prev[None, :]
        e_b = np.asarray(ext_b[layer], np.float64)
        if layer == n_layers - 1:
            err = float(max(np.abs(e_w - t_w).max(), np.abs(e_b - t_b).max()))
            errors.append(err)
            aw.append(e_w)
            ab.append(e_b)
            break
        t_rows = np.concatenate([t_w, t_b[:, None]], axis=1)
        e_rows = np.concatenate([e_w, e_b[:, None]], axis=1)
        tn = t_rows / np.maximum(np.linalg.norm(t_rows, axis=1, keepdims=True), 1e-300)
        en = e_rows / np.maximum(np.linalg.norm(e_rows, axis=1, keepdims=True), 1e-300)
        cos = tn @ en.T
        rows_idx, cols_idx = linear_sum_assignment(1.0 - np.abs(cos))
        perm = np.empty(len(t_rows), dtype=int)
        perm[rows_idx] = cols_idx
        matched = e_rows[perm]
        denom = np.einsum("ij,ij->i", matched, matched)
        lam = np.where(denom > 0, np.einsum("ij,ij->i", t_rows, matched) / np.where(denom > 0, denom, 1), 0.0)
        sign_ok = lam > 0
        aligned = np.abs(lam)[:, None] * matched
        row_err = np.abs(aligned - t_rows).max(axis=1)
        row_max = np.maximum(np.abs(t_rows).max(axis=1), 1e-300)
        errors.append(float(row_err.max()))
        recovered.append(sign_ok & (row_err <= RECOVERED_REL_ERROR * row_max))
        identified.append(sign_ok & (np.abs(cos[np.arange(len(perm)), perm]) >= IDENTIFIED_COSINE))
        signs.append(sign_ok)
        perms.append(perm)
        aw.append(aligned[:, :-1])
        ab.append(aligned[:, -1])
        perm_prev = perm
        scale_prev = np.where(np.abs(lam) > 0, 1.0 / np.where(np.abs(lam) > 0, np.abs(lam), 1.0), 0.0)
    return Alignment(errors, float(max(errors)), recovered, identified, signs, perms, aw, ab)


def predict(weights: list[np.ndarray], biases: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    """Forward pass of a weight set (ReLU between layers, raw outputs), float64."""
    h = np.asarray(x, dtype=np.float64)
    for i, (w, b) in enumerate(zip(weights, biases)):
        h = h @ np.asarray(w).T + b
        if i < len(weights) - 1:
            h = np.maximum(h, 0.0)
    return h


def output_agreement(f_true: np.ndarray, f_ext: np.ndarray, rel: float = 1e-6) -> tuple[float, float]:
    """Share of inputs whose outputs agree to ``rel`` relative (``max |diff| <= rel * max(|f|, 1e-9)``
    per input) and the largest absolute output difference."""
    diff = np.abs(f_ext - f_true).max(axis=1)
    scale = np.maximum(np.abs(f_true).max(axis=1), 1e-9)
    return float((diff <= rel * scale).mean()), float(diff.max()) if len(diff) else 0.0


def labels(outputs: np.ndarray) -> np.ndarray:
    """Predicted labels: argmax, or ``output > 0`` for a single output."""
    return (outputs[:, 0] > 0).astype(int) if outputs.shape[1] == 1 else outputs.argmax(1)


def align_and_score(true_w, true_b, ext_w, ext_b, n: int = 10_000, seed: int = 0) -> dict:
    """Alignment plus output agreement on ``n`` Gaussian inputs: a compact dict (for scripts)."""
    al = align(true_w, true_b, ext_w, ext_b)
    x = np.random.default_rng(seed).normal(size=(n, true_w[0].shape[1]))
    agree, diff = output_agreement(predict(true_w, true_b, x), predict(ext_w, ext_b, x))
    hidden = sum(len(r) for r in al.recovered)
    return {"neurons_recovered": sum(int(r.sum()) for r in al.recovered) / hidden,
            "max_weight_error_log2": al.max_error_log2, "output_agreement": agree, "max_output_diff": diff,
            **al.to_json()}
