"""The last layer, solved linearly on random queries (Carlini et al.); the same queries settle
the last hidden layer's signs. A last hidden layer found incomplete is completed by the affine
path of the neurons never seen critical."""

from __future__ import annotations

import time

import numpy as np

from attacks.cryptanalytic._signs import layer_values, point_on_neuron, recover_signs
from attacks.cryptanalytic._solve import OutputLayer, sample_inputs, solve_output_layer, wrong_signs_from_solve
from attacks.cryptanalytic._state import ExtractionState


def solve_checks_signs(rows: np.ndarray) -> bool:
    """The output solve can name wrong last-hidden-layer signs when the rows are independent."""
    return len(rows) > 0 and len(rows) <= rows.shape[1] and np.linalg.matrix_rank(rows) == len(rows)


def output_layer(st: ExtractionState, rows, biases, signs, results):
    """Solve the last layer linearly (Carlini et al.) on random queries. The same queries
    settle the last hidden layer's signs (``wrong_signs_from_solve``): wrong ones are flipped;
    if the solve cannot tell (dependent rows), hard neurons get more wiggle votes instead."""
    layer = len(st.sizes) - 2
    log = st.logs[-1]
    n_last, n_prev = len(rows), st.net.width
    count = 2 * (n_last + n_prev + 1) + 16
    x = np.concatenate([sample_inputs(st.rng, count, st.n0, st.settings.scale),
                        straddle(st, rows, biases)])
    f = st.access.full(x, use_reserve=True)
    complete = n_last == st.sizes[-2] and not any(st.partial.get(layer, []))
    wrong = wrong_signs_from_solve(st.net, rows, biases, signs, x, f) if complete else None
    st.verified[layer] = wrong is not None
    if wrong is None:
        hard = [k for k, r in enumerate(results) if r.confidence < st.settings.easy_confidence]
        if hard:
            t0, q0 = time.perf_counter(), st.access.used
            more = recover_signs(st.access, st.net, rows, biases, st.rng, st.settings.scale,
                                 st.settings.hard_samples, st.settings.hard_samples, st.settings.easy_confidence,
                                 st.settings.wiggle, neurons=hard, anchors=st.anchors)
            for k in hard:
                results[k] = more[k]
                results[k].hard = True
            log.sign_seconds += time.perf_counter() - t0
            log.sign_queries += st.access.used - q0
            signs = np.array([r.sign for r in results], dtype=np.float64)
        wrong = np.zeros(n_last, dtype=bool)
    log.signs_fixed_by_output_solve = int(wrong.sum())
    st.fixed[layer] = wrong.copy()
    signs = np.where(wrong, -signs, signs)
    hprev = st.net.hidden(x)
    hidden = np.maximum((hprev @ rows.T + biases) * signs, 0.0)
    n_full = st.sizes[-2]
    if n_last == n_full:
        return signs, solve_output_layer(hidden, f), None
    return (signs, *linear_path(st, hidden, hprev, f, n_full - n_last))


def linear_path(st: ExtractionState, hidden: np.ndarray, hprev: np.ndarray, f: np.ndarray, slots: int):
    """Last hidden layer incomplete (a neuron never seen critical, e.g. one whose large bias
    keeps it active everywhere we looked): solve the output on ``[found neurons, h_{L-2}, 1]``;
    the ``h_{L-2}`` part is what the missing neurons add while active, an affine map. It is
    put in the free slots as always-active neurons (rank-r SVD, bias lifted above the
    smallest value seen): the function is reproduced where they were active, their weights
    are not the victim's (not identifiable from a neuron that never switches)."""
    n_last = hidden.shape[1]
    out = solve_output_layer(np.concatenate([hidden, hprev], axis=1), f)
    v, u = out.weights[:, :n_last], out.weights[:, n_last:]  # (m, n_last), (m, n_prev)
    left, sv, right = np.linalg.svd(u.T, full_matrices=False)  # u.T = left @ diag(sv) @ right
    keep = [i for i in range(min(slots, len(sv))) if sv[i] > 1e-12 * max(sv[0], 1e-300)]
    rows_x, biases_x, cols = [], [], []
    bias = out.bias.copy()
    for i in keep:
        r = left[:, i]
        vals = hprev @ r
        beta = -float(vals.min()) + st.settings.scale * (1.0 + float(np.abs(vals).max()))
        rows_x.append(r)
        biases_x.append(beta)
        cols.append(sv[i] * right[i])
        bias -= beta * sv[i] * right[i]
    weights = np.concatenate([v] + [c[:, None] for c in cols], axis=1) if cols else v
    extra = (np.array(rows_x).reshape(-1, hprev.shape[1]), np.array(biases_x))
    st.logs[-1].notes.append(f"layer {len(st.sizes) - 2}: {slots} neuron(s) never seen critical; their "
                             f"effect where active is kept as {len(keep)} always-active linear neuron(s)")
    return OutputLayer(weights, bias, out.residual, out.rank_deficient), extra


def straddle(st: ExtractionState, rows: np.ndarray, biases: np.ndarray) -> np.ndarray:
    """Two inputs per neuron, one on each side of its hyperplane (computed on the recovered
    layers, no query), so that every neuron switches within the output solve's queries."""
    pts = []
    for k in range(len(rows)):
        x = point_on_neuron(st.net, rows, biases, k, st.rng, st.settings.scale)
        if x is None:
            continue
        _, _, _, grads, _, _ = layer_values(st.net, rows, biases, x)
        u = grads[k] / max(np.linalg.norm(grads[k]), 1e-300)
        r = 0.05 * st.settings.scale
        pts.extend([x + r * u, x - r * u])
    return np.array(pts).reshape(-1, st.n0)

