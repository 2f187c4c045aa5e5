"""Signature extraction: each neuron's weights up to a scalar, from finite differences at its
critical points, and the grouping of critical points into the neurons of one layer.

Carlini et al. (CRYPTO 2020), weight recovery "up to sign" by differential queries. Near a
critical point ``x*`` of neuron ``k`` of layer ``l`` the network is

    f(x) = L(x) + c * relu(z_k(x)),   z_k(x) = A_l[k] . h_{l-1}(x) + b_l[k]           (local form)

with ``L`` affine and ``c`` the (local) weight of neuron ``k`` on the output. On either side of
the critical hyperplane ``f`` is affine, and the gradients on the two sides differ by

    grad f(p+) - grad f(p-) = +-c * A_l[k] . J_{l-1}(x*)                              (gradient jump)

where ``J_{l-1} = d h_{l-1} / dx`` is the Jacobian of the recovered layers (the identity for
the first layer: the jump *is* the first-layer row, up to ``+-c``). For deeper layers only the
coordinates ``S`` of ``h_{l-1}`` active at ``x*`` are visible; Carlini et al. recover the row on
``S`` by solving the jump equation through the recovered layers and unify the partial rows of
several critical points of the same neuron ("unifying partial solutions"). Directional
derivatives are measured along the columns of ``pinv(J_S)``, so that each probe moves exactly
one active hidden coordinate; a few extra random probes over-determine the solve and give a
residual that checks the recovered layers themselves. The bias follows from the critical point:
``b_k = -A_l[k] . h_{l-1}(x*)`` (``z_k(x*) = 0``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from attacks.cryptanalytic._access import Access
from attacks.cryptanalytic._critical_points import Kink, Line
from attacks.cryptanalytic._network import PartialNetwork


@dataclass
class Jump:
    """The measured gradient jump at one critical point, along ``q`` probe directions."""

    line: int
    kink: int  # index in line.kinks
    x: np.ndarray  # the critical point
    y: np.ndarray  # (q,) slope(p+) - slope(p-) along each probe direction
    probes: np.ndarray  # (n0, q) unit probe directions
    error: float  # absolute error of each entry of y
    eps: float


@dataclass
class Signature:
    """A (partial) row of layer ``l``: values ``alpha`` on the active coordinates ``support`` of
    ``h_{l-1}``, bias ``beta``, normalised so ``|alpha| = 1``; ``error`` is the estimated relative
    error; ``residual`` the relative misfit of the extra probes (nan without extras)."""

    jump: Jump
    support: np.ndarray
    alpha: np.ndarray
    beta: float
    error: float
    residual: float
    hidden: np.ndarray  # h_{l-1}(x*) on the support

    @property
    def vector(self) -> np.ndarray:
        return np.append(self.alpha, self.beta)


@dataclass
class Neuron:
    """A recovered neuron of the layer being extracted (row up to a scalar, sign unknown)."""

    weights: np.ndarray  # (n_{l-1},), |weights| = 1
    bias: float
    members: list[tuple[int, int]] = field(default_factory=list)  # (line, kink) on its hyperplane
    covered: np.ndarray | None = None  # bool mask of coordinates seen in some signature
    error: float = 0.0

    @property
    def support(self) -> int:
        return len({m[0] for m in self.members})

    @property
    def complete(self) -> bool:
        return self.covered is None or bool(self.covered.all())


def measure_jump(access: Access, net: PartialNetwork, line: Line, index: int, probes: np.ndarray,
                 rng: np.random.Generator, scale: float, retries: int = 3) -> Jump | None:
    """Directional-derivative jump across the critical point ``line.kinks[index]`` (gradient
    jump equation, Carlini et al. 2020), along the unit columns of ``probes``.

    ``p+- = x* +- delta d`` sit on the two sides, ``delta`` a quarter of the distance to the next
    critical point on the line; slopes are forward differences with step ``eps`` (at most
    ``delta/4``, and short enough that no recovered neuron changes state). One more query per
    side checks that ``f`` is linear over all probe steps at once (a random combination of the
    probes must give the combination of the slopes); if not, ``eps`` shrinks 8x and the
    measurement is repeated. Returns None if it never passes."""
    kink: Kink = line.kinks[index]
    x = line.point(kink.t)
    d = line.d
    delta = min(kink.gap / 4, 0.25 * scale, net.safe_step(x, d, 0.5))
    if not np.isfinite(delta) or delta <= 0:
        return None
    q = probes.shape[1]
    eps = delta / 4
    for p in (x + delta * d, x - delta * d):
        for i in range(q):
            eps = min(eps, net.safe_step(p, probes[:, i], 0.5))
    for _ in range(retries):
        rho = rng.uniform(-1, 1, size=q)
        rho /= max(np.abs(rho).sum(), 1e-12)
        combo = probes @ rho
        pts = []
        for sign in (1.0, -1.0):
            p = x + sign * delta * d
            pts.append(p[None])
            pts.append(p[None] + eps * probes.T)
            pts.append((p + eps * combo)[None])
        vals = access.scalar(np.concatenate(pts))
        base_p, slopes_p, combo_p = vals[0], (vals[1:q + 1] - vals[0]) / eps, vals[q + 1]
        off = q + 2
        base_m, slopes_m, combo_m = vals[off], (vals[off + 1:off + q + 1] - vals[off]) / eps, vals[off + q + 1]
        noise = access.value_noise(vals)
        tol = 16 * noise + 4 * noise * np.abs(rho).sum()
        ok_p = abs(combo_p - base_p - eps * rho @ slopes_p) <= tol
        ok_m = abs(combo_m - base_m - eps * rho @ slopes_m) <= tol
        if ok_p and ok_m:
            return Jump(line.index, index, x, slopes_p - slopes_m, probes, 4 * noise / eps, eps)
        eps /= 8
    return None


def fingerprint(jump: Jump) -> tuple[np.ndarray, float]:
    """A cheap, model-free identity of a first-layer critical point: the gradient jump along a
    fixed set of random directions, normalised (two critical points of the same first-layer
    neuron have proportional jumps: gradient jump equation with ``J = I``)."""
    n = float(np.linalg.norm(jump.y))
    if n == 0:
        return jump.y, float("inf")
    return jump.y / n, float(jump.error * np.sqrt(len(jump.y)) / n)


def first_layer_probes(n0: int) -> np.ndarray:
    """Unit probes for a full first-layer signature: the coordinate axes (Carlini et al.'s
    partial derivatives along each input)."""
    return np.eye(n0)


def hidden_probes(net: PartialNetwork, x: np.ndarray, rng: np.random.Generator, extras: int = 2
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Probe directions for a layer ``l >= 2`` signature at ``x``: unit columns of ``pinv(J_S)``
    (each moves one active coordinate of ``h_{l-1}`` only) plus ``extras`` random unit vectors.
    Returns (probes, S, J_S), or None when the active rows are not independent (more active
    neurons than input dimensions: that critical point cannot separate them)."""
    h, jac, _, _ = net.local(x)
    support = np.nonzero(h > 0)[0]
    if support.size == 0 or support.size > net.input_dim:
        return None
    js = jac[support]
    sv = np.linalg.svd(js, compute_uv=False)
    if sv[-1] <= 1e-10 * sv[0]:
        return None
    pinv = np.linalg.pinv(js)
    pinv /= np.linalg.norm(pinv, axis=0, keepdims=True)
    extra = rng.normal(size=(net.input_dim, extras))
    extra /= np.linalg.norm(extra, axis=0, keepdims=True)
    return np.concatenate([pinv, extra], axis=1), support, js


def solve_signature(jump: Jump, net: PartialNetwork, support: np.ndarray | None = None,
                    js: np.ndarray | None = None) -> Signature | None:
    """Row on the active coordinates from the jump (gradient jump equation):
    ``y = probes^T J_S^T alpha`` solved by least squares; ``beta = -alpha . h_S(x*)``.
    For the first layer ``J_S = I`` and ``alpha = y`` directly."""
    if net.depth == 0:
        support = np.arange(net.input_dim)
        mat = jump.probes.T
        hidden = jump.x
    else:
        if support is None or js is None:
            h, jac, _, _ = net.local(jump.x)
            support = np.nonzero(h > 0)[0]
            js = jac[support]
        else:
            h = net.hidden(jump.x)
        if support.size == 0:
            return None
        mat = jump.probes.T @ js.T
        hidden = net.hidden(jump.x)[support]
    if support.size > jump.probes.shape[1] or support.size > jump.probes.shape[0]:
        return None  # more unknowns than independent measurements: the row is not determined here
    alpha, _, rank, _ = np.linalg.lstsq(mat, jump.y, rcond=None)
    if rank < support.size:
        return None
    norm = float(np.linalg.norm(alpha))
    if norm == 0 or not np.isfinite(norm):
        return None
    fit = mat @ alpha
    ynorm = float(np.linalg.norm(jump.y))
    residual = float(np.linalg.norm(fit - jump.y) / ynorm) if mat.shape[0] > mat.shape[1] else float("nan")
    sv = np.linalg.svd(mat, compute_uv=False)
    error = float(jump.error * np.sqrt(len(jump.y)) / (sv[-1] * norm)) if sv[-1] > 0 else float("inf")
    alpha = alpha / norm
    beta = -float(alpha @ hidden)
    return Signature(jump, support, alpha, beta, error, residual, hidden)


# ---- grouping critical points into neurons ---------------------------------------------------

def unit_distance(u: np.ndarray, v: np.ndarray) -> float:
    """Distance between two directions up to sign: ``min(|u - v|, |u + v|)`` for unit vectors."""
    return float(min(np.linalg.norm(u - v), np.linalg.norm(u + v)))


class UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)

    def groups(self) -> list[list[int]]:
        out: dict[int, list[int]] = {}
        for i in range(len(self.parent)):
            out.setdefault(self.find(i), []).append(i)
        return sorted(out.values(), key=len, reverse=True)


def group_fingerprints(prints: list[tuple[np.ndarray, float]], factor: float = 16.0) -> list[list[int]]:
    """Group first-layer critical points whose fingerprints agree up to sign within their errors."""
    uf = UnionFind(len(prints))
    for i in range(len(prints)):
        for j in range(i + 1, len(prints)):
            tol = factor * (prints[i][1] + prints[j][1]) + 1e-12
            if tol < 0.1 and unit_distance(prints[i][0], prints[j][0]) <= tol:
                uf.union(i, j)
    return uf.groups()


def consistent(a: Signature, b: Signature, factor: float = 16.0, min_overlap: int = 2) -> bool:
    """Do two partial signatures describe the same neuron? They must agree up to a scalar on
    the coordinates both see plus the bias (Carlini et al., unifying partial solutions)."""
    common, ia, ib = np.intersect1d(a.support, b.support, assume_unique=True, return_indices=True)
    if common.size < min_overlap:
        return False
    va = np.append(a.alpha[ia], a.beta)
    vb = np.append(b.alpha[ib], b.beta)
    na, nb = np.linalg.norm(va), np.linalg.norm(vb)
    if na < 0.1 or nb < 0.1:  # too little of the row in common to compare reliably
        return False
    tol = factor * (a.error / na + b.error / nb) + 1e-12
    return tol < 0.1 and unit_distance(va / na, vb / nb) <= tol


def group_signatures(sigs: list[Signature], width: int, factor: float = 16.0, min_overlap: int = 2
                     ) -> list[list[int]]:
    """Group partial signatures of one neuron (``consistent`` for every pair, vectorised): each is
    spread over ``width + 1`` coordinates (the row and the bias), missing coordinates masked."""
    n = len(sigs)
    if n == 0:
        return []
    vals = np.zeros((n, width + 1))
    mask = np.zeros((n, width + 1), dtype=bool)
    err = np.empty(n)
    for i, s in enumerate(sigs):
        vals[i, s.support] = s.alpha
        vals[i, -1] = s.beta
        mask[i, s.support] = True
        mask[i, -1] = True
        err[i] = s.error
    uf = UnionFind(n)
    sq = vals * vals
    for i in range(n - 1):
        common = mask[i] & mask[i + 1:]  # (n-i-1, width+1)
        overlap = common[:, :-1].sum(axis=1)
        dot = (common * (vals[i] * vals[i + 1:])).sum(axis=1)
        na = np.sqrt((common * sq[i]).sum(axis=1))
        nb = np.sqrt((common * sq[i + 1:]).sum(axis=1))
        ok = (overlap >= min_overlap) & (na >= 0.1) & (nb >= 0.1)
        with np.errstate(divide="ignore", invalid="ignore"):
            cos = np.abs(dot) / (na * nb)
            dist = np.sqrt(np.maximum(2.0 - 2.0 * cos, 0.0))
            tol = factor * (err[i] / na + err[i + 1:] / nb) + 1e-12
        hit = ok & (tol < 0.1) & (dist <= tol)
        for j in np.nonzero(hit)[0]:
            uf.union(i, i + 1 + int(j))
    return uf.groups()


def merge_signatures(sigs: list[Signature], width: int) -> tuple[np.ndarray, float, np.ndarray, float]:
    """Unify partial rows of one neuron (Carlini et al., unifying partial solutions): choose each
    member's scale by least squares against the running estimate on their common coordinates,
    then average. Returns (row with |row| = 1, bias, covered mask, relative error)."""
    order = sorted(range(len(sigs)), key=lambda i: (-len(sigs[i].support), sigs[i].error))
    row = np.zeros(width)
    bias = 0.0
    weight = np.zeros(width)
    wb = 0.0
    covered = np.zeros(width, dtype=bool)
    pending = list(order)
    first = True
    for _ in range(3):
        left = []
        for i in pending:
            s = sigs[i]
            if first:
                lam = 1.0
                first = False
            else:
                common = covered[s.support]
                if common.sum() < 1:
                    left.append(i)
                    continue
                ref = np.append(row[s.support][common] / weight[s.support][common], bias / max(wb, 1e-300))
                mine = np.append(s.alpha[common], s.beta)
                lam = float(ref @ mine / (mine @ mine))
            wgt = 1.0 / max(s.error, 1e-16) ** 2
            row[s.support] += wgt * lam * s.alpha
            weight[s.support] += wgt
            bias += wgt * lam * s.beta
            wb += wgt
            covered[s.support] = True
        if not left:
            break
        pending = left
    with np.errstate(invalid="ignore", divide="ignore"):
        row = np.where(weight > 0, row / np.where(weight > 0, weight, 1), 0.0)
    bias = bias / wb if wb > 0 else 0.0
    norm = float(np.linalg.norm(row))
    err = float(min(s.error for s in sigs)) if sigs else float("inf")
    if norm == 0:
        return row, bias, covered, float("inf")
    return row / norm, bias / norm, covered, err


def refit_hyperplane(row: np.ndarray, bias: float, points: np.ndarray, error: float
                     ) -> tuple[np.ndarray, float]:
    """Precision refinement of one neuron from the positions of its critical points (Carlini et
    al., improving precision): every critical point ``p_i`` (an input for the first layer, the
    recovered ``h_{l-1}`` otherwise) satisfies ``row . p_i + bias = 0`` exactly, so ``row`` is
    orthogonal to every difference ``p_i - p_0``. Critical points are located to a few ulps, far
    better than finite-difference signatures, so the component of ``row`` along the span of the
    differences is replaced by zero (a projection), and the bias is refitted as the mean of
    ``-row . p_i``. The correction must stay within the signature's error, else nothing changes."""
    if len(points) < 2:
        if len(points) == 1:
            bias = -float(row @ points[0])
        return row, bias
    diffs = points[1:] - points[0]
    _u, s, vt = np.linalg.svd(diffs, full_matrices=False)
    keep = s > 1e-9 * s[0]
    basis = vt[keep]
    new = row - basis.T @ (basis @ row)
    norm = float(np.linalg.norm(new))
    if norm == 0:
        return row, bias
    new /= norm
    if new @ row < 0:
        new = -new
    if np.linalg.norm(new - row) > max(100 * error, 1e-9):
        return row, -float(np.median(points @ row))
    return new, -float(np.mean(points @ new))
