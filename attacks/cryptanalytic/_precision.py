"""Precision improvement of a recovered layer from fresh, precisely located critical points.

Carlini et al. (CRYPTO 2020), improving the precision of an extracted row: "we think we know
where [the critical hyperplane] is, but let's actually figure it out for sure". Once a neuron's
row is known to ~1e-9 from finite differences, points on its hyperplane can be computed on the
recovered layers (no query) and each one is *located* precisely with four queries on a short
segment across it: two lines, one per side, intersected (the intersection equation of
``_critical_points``); a fifth query checks that nothing else bends the segment. Every such point
``x_i`` satisfies ``A_l[k] . h_{l-1}(x_i) + b_l[k] = 0`` exactly, so ``n_{l-1} + 1`` of them in
general position determine the row and bias up to scale as the null vector of
``[h_{l-1}(x_i), 1]`` (smallest singular vector), to a few ulps instead of to the finite-difference
error. Foerster et al. (NeurIPS 2024) report signature times without this step, as it can take
longer than the signature itself; we report its time and queries separately.
"""

from __future__ import annotations

import numpy as np

from attacks.cryptanalytic._access import Access
from attacks.cryptanalytic._critical_points import intersect
from attacks.cryptanalytic._network import PartialNetwork
from attacks.cryptanalytic._signs import layer_values, point_on_neuron


def locate_on_segment(access: Access, x: np.ndarray, u: np.ndarray, r: float) -> float | None:
    """Position ``t`` of the single critical point on ``x + t u``, ``|t| < r/4``: lines through
    ``t = -r, -r/2`` and ``t = r/2, r`` intersected (the intersection equation). Checks, seven
    queries in all: ``t = -3r/4`` and ``3r/4`` must lie on their side's line (no other bend on
    either side), and ``g(0)`` on the piecewise-linear model. None when the segment does not show
    exactly one clean bend near 0."""
    ts = np.array([-r, -0.75 * r, -0.5 * r, 0.0, 0.5 * r, 0.75 * r, r])
    g = access.scalar(x[None] + ts[:, None] * u[None])
    sl = (g[2] - g[0]) / (0.5 * r)
    sr = (g[6] - g[4]) / (0.5 * r)
    noise = access.value_noise(g)
    es = 8 * noise / r
    if abs(sl - sr) <= 4 * es:
        return None
    if abs(g[1] - 0.5 * (g[0] + g[2])) > 8 * noise or abs(g[5] - 0.5 * (g[4] + g[6])) > 8 * noise:
        return None
    t = intersect(-r, g[0], sl, r, g[6], sr)
    if not abs(t) < 0.25 * r:
        return None
    pred = g[0] + sl * r if t >= 0 else g[6] - sr * r
    if abs(g[3] - pred) > 16 * noise + 4 * es * r:
        return None
    return float(t)


def nudge_into(net: PartialNetwork, rows: np.ndarray, biases: np.ndarray, k: int, x: np.ndarray | None,
               coord: int, tau: float, iters: int = 10) -> np.ndarray | None:
    """From ``x`` on row ``k``'s hyperplane, Newton steps (least norm, on the recovered layers) to a
    point that is still on it and where neuron ``coord`` of the last recovered layer is just active
    (pre-activation ``tau`` times its gradient norm): where that neuron is barely active, the
    unknown weight on it moves the true bend only a little off the recovered hyperplane, so the
    precision step can locate it and fit the weight."""
    if x is None:
        return None
    for _ in range(iters):
        _, _, z, grads, zs, zjacs = layer_values(net, rows, biases, x)
        gi = zjacs[-1][coord]
        gn = float(np.linalg.norm(gi))
        if gn == 0:
            return None
        resid = np.array([z[k], zs[-1][coord] - tau * gn])
        if abs(resid[0]) <= 1e-14 * (1 + abs(biases[k])) and abs(resid[1]) <= 1e-3 * tau * gn:
            return x
        jac = np.stack([grads[k], gi])
        step, *_ = np.linalg.lstsq(jac, resid, rcond=None)
        x = x - step
    return None


def refine_layer_row(access: Access, net: PartialNetwork, rows: np.ndarray, biases: np.ndarray, k: int,
                     rng: np.random.Generator, scale: float, extra: int = 4, max_attempts: int | None = None,
                     anchors: np.ndarray | None = None, max_change: float = 1e-6, max_shift: float = 1e-6,
                     clean: float = 1e-11, covered: np.ndarray | None = None
                     ) -> tuple[np.ndarray, float, int, np.ndarray] | None:
    """Precision improvement of row ``k`` of the layer ``(rows, biases)`` sitting on top of
    ``net`` (module docstring). Returns (row with |row| = 1, bias, points used, coordinates seen
    active in the fit) or None when too few points could be located or the fit disagrees with
    the old row on the ``covered`` coordinates (then the old row stays). For a row with unseen
    coordinates (``covered`` not all true), pass a larger ``max_shift``: where an unseen
    coordinate is active, the true bend is off the old hyperplane, and the fit then finds the
    missing weights."""
    width = rows.shape[1]
    need = width + 1 + max(extra, width // 4)
    max_attempts = max_attempts or 3 * need
    pts: list[np.ndarray] = []
    missing = [] if covered is None else [int(i) for i in np.nonzero(~np.asarray(covered, bool))[0]]
    for attempt in range(max_attempts):
        if len(pts) >= need:
            break
        x = point_on_neuron(net, rows, biases, k, rng, scale, anchors=anchors, spread=0.3 * np.sqrt(width))
        held = None
        if missing and attempt % 2 == 0 and net.depth > 0:
            # a coordinate never seen active: move to where it is just active, still on the row
            held = missing[(attempt // 2) % len(missing)]
            x = nudge_into(net, rows, biases, k, x, held, 1e-3 * scale)
        if x is None:
            continue
        _, _, z, grads, _, zjacs = layer_values(net, rows, biases, x)
        u = grads[k]
        if held is not None:  # search along the row's gradient with that coordinate held fixed
            gi = zjacs[-1][held]
            u = u - (u @ gi) / (gi @ gi) * gi
        norm = float(np.linalg.norm(u))
        if norm == 0:
            continue
        u = u / norm
        rate = np.abs(grads @ u)
        rate[k] = 0
        with np.errstate(divide="ignore", invalid="ignore"):
            lim = np.where(rate > 0, np.abs(z) / rate, np.inf)
        r = min(0.5 * float(lim.min()), net.safe_step(x, u, 0.5, skip=held), 1e-2 * scale)
        if not np.isfinite(r) or r <= 0:
            continue
        t = locate_on_segment(access, x, u, r)
        # x is on the old hyperplane, so |t| is the old row's error there (~1e-9); a much larger
        # shift means another neuron's bend was located instead: drop it
        if t is None or abs(t) > max_shift * (scale + float(np.linalg.norm(x))):
            continue
        pts.append(x + t * u)
    if len(pts) < 3:
        return None
    hidden = net.hidden(np.stack(pts))
    seen = np.abs(hidden).max(axis=0) > 0  # a coordinate never active in these points stays as it was
    design = np.concatenate([hidden[:, seen], np.ones((len(hidden), 1))], axis=1)
    old = np.append(rows[k], biases[k])
    while True:  # fit; drop the worst point while it stands out (a badly located point)
        if len(design) < design.shape[1] + 1:
            return None
        colscale = np.maximum(np.abs(design).max(axis=0), 1e-300)
        _, s, vt = np.linalg.svd(design / colscale, full_matrices=False)
        vec = vt[-1] / colscale
        if len(s) > 1 and s[-2] < 1e3 * s[-1]:
            return None  # points degenerate: the fit does not determine the row
        res = np.abs((design / colscale) @ vt[-1])
        worst = int(np.argmax(res))
        if res[worst] <= 20 * float(np.median(res)) and s[-1] <= clean * s[0]:
            break
        if len(design) <= design.shape[1] + 1:
            if s[-1] <= clean * s[0]:
                break
            return None
        design = np.delete(design, worst, axis=0)
    # put the unseen coordinates back, at the old row's values in the fitted scale
    cov = np.ones(width, dtype=bool) if covered is None else np.asarray(covered, dtype=bool)
    ref_mask = seen & cov
    if not ref_mask.any():
        return None
    ref = np.append(rows[k][ref_mask], biases[k])
    vec_ref = np.append(vec[:-1][ref_mask[seen]], vec[-1])
    with np.errstate(all="ignore"):
        den = float(vec_ref @ vec_ref)
        lam = float(vec_ref @ ref / den) if den > 0 and np.isfinite(den) else 0.0
    if lam == 0 or not np.isfinite(lam) or not np.all(np.isfinite(vec)):
        return None
    row = rows[k].astype(np.float64).copy()
    row[seen] = lam * vec[:-1]
    bias = lam * vec[-1]
    norm = float(np.linalg.norm(row))
    if norm == 0:
        return None
    row, bias = row / norm, bias / norm
    if row @ rows[k] < 0:
        row, bias = -row, -bias
    old_n = old / np.linalg.norm(rows[k])
    new_v = np.append(row, bias)
    mask = np.append(cov, True)
    if cov.all():
        if np.linalg.norm(new_v - old_n) > max_change:
            return None
    else:  # compare directions on the covered coordinates only (the norm changed with the new ones)
        a, b = new_v[mask], old_n[mask]
        a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
        if np.linalg.norm(a - b) > max_change:
            return None
    return row, float(bias), len(design), seen
