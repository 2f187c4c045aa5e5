"""Sign extraction by neuron wiggle, with the easy/hard split of Foerster et al.

The signature fixes neuron ``k``'s row only up to a scalar; its *sign* decides on which side of
the critical hyperplane the neuron is active. Canales-Martinez et al. (Eurocrypt 2024),
"neuron wiggle": at a point ``x`` with ``z_k(x) = 0`` (found on the recovered layers, no query),
move the input by ``+-Delta`` chosen so that the change of layer ``l``'s pre-activations is as
concentrated on neuron ``k`` as possible. Then

    f(x + Delta) - f(x) = L + [sigma = +1] * c * dz,    f(x - Delta) - f(x) = -L + [sigma = -1] * c * dz

where ``L`` is the (small) effect of the other neurons, ``dz > 0`` the change of ``z_k`` and
``c`` neuron k's downstream weight: the side with the larger output change is the side where
the neuron is active (their Alg. "sign recovery by neuron wiggle"; the wiggle maximises
``(A_l[k] . dh)^2 / |dh|^2`` over the reachable ``dh = J_{l-1} Delta``, i.e. ``dh`` is the
projection of the row on the reachable subspace). One vote per critical point; the sign is the
majority over ``s`` votes.

Foerster et al. (NeurIPS 2024), "Beyond Slow Signs": ``s = 15`` votes suffice for most neurons
(their Fig. 1b: more than 15 barely raises the share of correct signs); the neurons whose vote is
not clear-cut are the *hard* ones (their Fig. 1c: a neuron close to its neighbours), and effort
is spent on those only: here, more votes (up to ``hard_samples``). As an option (``wiggle =
"suppress"``, the default) the wiggle also penalises the change of every other neuron of layer
``l``: ``Delta`` maximises ``(p_k . Delta)^2 / (sum_{j != k} (p_j . Delta)^2 + mu |J Delta|^2)``
with ``p_j = J^T A_l[j]``, which drives ``L`` to zero whenever the reachable space is large
enough (our addition; ``wiggle = "projection"`` is the paper's wiggle).

Every query, including the linearity checks along the wiggle, goes through the oracle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from attacks.cryptanalytic._access import Access
from attacks.cryptanalytic._network import PartialNetwork


@dataclass
class SignResult:
    """Votes for one neuron: ``plus``/``minus`` counts, the decided sign and its confidence."""

    plus: int = 0
    minus: int = 0
    abstain: int = 0  # samples where the neuron did not move the output (c = 0 there)
    failed: int = 0  # samples whose wiggle was never linear
    hard: bool = False
    margins: list[float] = field(default_factory=list)

    @property
    def votes(self) -> int:
        return self.plus + self.minus

    @property
    def sign(self) -> int:
        return 1 if self.plus >= self.minus else -1

    @property
    def confidence(self) -> float:
        return max(self.plus, self.minus) / self.votes if self.votes else 0.0


def layer_values(net: PartialNetwork, rows: np.ndarray, biases: np.ndarray, x: np.ndarray):
    """Recovered state at ``x``: ``h_{l-1}``, its Jacobian, layer ``l``'s (unsigned) ``z`` and the
    rows ``p_j = J^T A_l[j]`` (gradients of each ``z_j`` with respect to the input)."""
    h, jac, zs, zjacs = net.local(x)
    z = rows @ h + biases
    grads = rows @ jac
    return h, jac, z, grads, zs, zjacs


def point_on_neuron(net: PartialNetwork, rows: np.ndarray, biases: np.ndarray, k: int,
                    rng: np.random.Generator, scale: float, margin: float = 1e-3,
                    iters: int = 25, restarts: int = 8, anchors: np.ndarray | None = None,
                    spread: float = 0.1) -> np.ndarray | None:
    """A random input on neuron ``k``'s critical hyperplane, computed on the recovered layers
    (no query): Newton steps ``x <- x - z_k(x) grad z_k / |grad z_k|^2`` from a random start
    (the "find a corner" step of Canales-Martinez et al.). Starts are Gaussian or, half of the
    time when ``anchors`` are given, one of the neuron's own critical points found on the lines
    moved by a Gaussian step of norm about ``spread * scale`` (places where the neuron is known to reach the output).
    Rejected when any other recovered neuron is within ``margin * scale`` of its own hyperplane
    (the wiggle would cross it)."""
    n0 = net.input_dim
    for _ in range(restarts):
        if anchors is not None and len(anchors) and rng.random() < 0.5:
            x = anchors[rng.integers(len(anchors))] + rng.normal(size=n0) * (spread * scale / np.sqrt(n0))
        else:
            x = rng.normal(size=n0) * scale
        for _ in range(iters):
            h, _, z, grads, _, _ = layer_values(net, rows, biases, x)
            g = grads[k]
            gg = float(g @ g)
            if gg < 1e-24:
                break
            x = x - z[k] / gg * g
            if abs(z[k]) <= 1e-14 * (abs(biases[k]) + float(np.abs(rows[k]) @ np.abs(h)) + 1e-300):
                break
        else:
            continue
        h, _jac, z, grads, zs, zjacs = layer_values(net, rows, biases, x)
        gnorm = np.linalg.norm(grads, axis=1)
        if gnorm[k] == 0 or abs(z[k]) > 1e-10 * scale * gnorm[k]:
            continue
        dist = [np.abs(zz) / np.maximum(np.linalg.norm(zj, axis=1), 1e-300) for zz, zj in zip(zs, zjacs)]
        others = np.abs(z) / np.maximum(gnorm, 1e-300)
        others[k] = np.inf
        dist.append(others)
        if min(float(d.min()) for d in dist if d.size) < margin * scale:
            continue
        return x
    return None


def wiggle_direction(net: PartialNetwork, rows: np.ndarray, biases: np.ndarray, k: int, x: np.ndarray,
                     mode: str = "suppress", mu: float = 1e-6) -> np.ndarray | None:
    """The input direction ``Delta`` (unit norm, increasing ``z_k``) of the neuron wiggle.

    ``projection`` (Canales-Martinez et al.): ``J Delta`` is the projection of ``A_l[k]`` on the
    reachable subspace, i.e. ``Delta = (J^T J)^+ p_k``. ``suppress`` (ours): ``Delta = (P^T P +
    mu' J^T J + tiny I)^{-1} p_k`` with ``P`` the rows ``p_j``, ``j != k``, which maximises the
    energy ratio in the module docstring."""
    _, jac, _, grads, _, _ = layer_values(net, rows, biases, x)
    pk = grads[k]
    if not np.any(pk):
        return None
    if mode == "projection":
        delta, *_ = np.linalg.lstsq(jac.T @ jac, pk, rcond=None)
    else:
        others = np.delete(grads, k, axis=0)
        gram = others.T @ others
        jj = jac.T @ jac
        scale = float(np.trace(jj)) / max(len(jj), 1) or 1.0
        mat = gram + mu * float(pk @ pk) / scale * jj + 1e-12 * float(pk @ pk) * np.eye(len(pk))
        try:
            delta = np.linalg.solve(mat, pk)
        except np.linalg.LinAlgError:
            delta, *_ = np.linalg.lstsq(mat, pk, rcond=None)
    if pk @ delta <= 0:
        return None
    return delta / np.linalg.norm(delta)


def wiggle_vote(access: Access, net: PartialNetwork, rows: np.ndarray, biases: np.ndarray, k: int,
                x: np.ndarray, direction: np.ndarray, scale: float, tries: int = 3,
                min_step: float = 1e-4) -> tuple[int, float] | None:
    """One neuron-wiggle sample: query ``f`` at ``x +- t Delta / 3``, ``x +- 2t Delta / 3`` and
    ``x +- t Delta`` (six queries, all counted by the oracle).

    Each side's three points must be collinear (the linearity check: no other neuron switched,
    else the step shrinks 8x). ``x`` itself is not used: the recovered row is exact only to
    ~1e-12, so the bend sits a hair off ``x``. The output change over one side's segment is the
    slope there times ``t``, so comparing the two one-sided slopes is the wiggle's comparison of
    ``|f(x + Delta) - f(x)|`` with ``|f(x - Delta) - f(x)|``. ``t`` is the largest step with which
    no recovered neuron (earlier layers, other neurons of this layer) changes state. Returns
    (+1 or -1, the relative margin), (0, 0) when neither side moves the output more than noise
    (the neuron is invisible here), or None if never linear."""
    _, _, z, grads, _, _ = layer_values(net, rows, biases, x)
    rate = np.abs(grads @ direction)
    rate[k] = 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        limit = np.where(rate > 0, np.abs(z) / rate, np.inf)
    t = min(0.5 * float(limit.min()), net.safe_step(x, direction, 0.5), 0.1 * scale)
    if not np.isfinite(t) or t < min_step * scale:
        return None  # another neuron is too close along the wiggle: try another point (no query spent)
    steps = np.array([1.0, 2.0, 3.0, -1.0, -2.0, -3.0]) / 3.0
    for _ in range(tries):
        out = access.full(x[None] + (t * steps)[:, None] * direction[None])
        r1, r2, r3, l1, l2, l3 = out
        noise = access.value_noise(out)
        tol = 16 * noise * np.sqrt(out.shape[1])
        if np.linalg.norm(r2 - 0.5 * (r1 + r3)) <= tol and np.linalg.norm(l2 - 0.5 * (l1 + l3)) <= tol:
            dr = float(np.linalg.norm(r3 - r1)) * 1.5  # |slope| * t on each side
            dl = float(np.linalg.norm(l3 - l1)) * 1.5
            if abs(dr - dl) <= 4 * tol:
                return 0, 0.0
            return (1 if dr > dl else -1), (dr - dl) / (dr + dl)
        t /= 8
    return None


def recover_signs(access: Access, net: PartialNetwork, rows: np.ndarray, biases: np.ndarray,
                  rng: np.random.Generator, scale: float, samples: int = 15, hard_samples: int = 100,
                  easy_confidence: float = 0.8, mode: str = "suppress",
                  neurons: list[int] | None = None, anchors: list[np.ndarray] | None = None) -> list[SignResult]:
    """Neuron-wiggle sign extraction for one layer (Canales-Martinez et al. 2024), with Foerster
    et al.'s improvements: ``samples`` (s = 15) votes per neuron; a neuron whose majority is
    below ``easy_confidence`` is *hard* and gets more votes, up to ``hard_samples`` in all.
    Every loop is bounded: a neuron that cannot be wiggled (no valid point, never linear, never
    visible) ends with few or no votes and a low confidence."""
    results = [SignResult() for _ in range(len(rows))]
    todo = list(range(len(rows))) if neurons is None else list(neurons)

    def collect(k: int, target: int) -> None:
        res = results[k]
        attempts = 0
        while res.votes < target and attempts < 3 * target + 10:
            attempts += 1
            x = point_on_neuron(net, rows, biases, k, rng, scale, anchors=None if anchors is None else anchors[k])
            if x is None:
                res.failed += 1
                continue
            direction = wiggle_direction(net, rows, biases, k, x, mode)
            if direction is None:
                res.failed += 1
                continue
            vote = wiggle_vote(access, net, rows, biases, k, x, direction, scale)
            if vote is None:
                res.failed += 1
            elif vote[0] == 0:
                res.abstain += 1
            else:
                res.margins.append(vote[1])
                if vote[0] > 0:
                    res.plus += 1
                else:
                    res.minus += 1

    for k in todo:
        collect(k, samples)
    for k in todo:
        if results[k].confidence < easy_confidence:
            results[k].hard = True
            collect(k, hard_samples)
    return results
