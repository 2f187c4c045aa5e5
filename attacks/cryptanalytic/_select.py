"""Choosing a layer's neurons among the candidates: partial signatures that are one neuron are
joined, duplicate candidates merged, and the layer's ``n`` neurons selected (fakes, deeper neurons
seen through one activation pattern, left out)."""

from __future__ import annotations

import numpy as np

from attacks.cryptanalytic._signatures import Neuron, Signature, UnionFind, merge_signatures


def join_groups(groups: list[list[int]], sigs: list[Signature], width: int, tol: float = 1e-6) -> list[list[int]]:
    """Groups of partial signatures that turn out to be one neuron (their unified rows agree on
    the coordinates both cover, plus the bias) are joined: two partial views of one row may
    overlap too little pairwise and still be the same neuron (Carlini et al., unifying partial
    solutions)."""
    merged = [merge_signatures([sigs[i] for i in g], width) for g in groups]
    uf = UnionFind(len(groups))
    for i in range(len(groups)):
        for j in range(i + 1, len(groups)):
            common = merged[i][2] & merged[j][2]
            if common.sum() < 3:
                continue
            va = np.append(merged[i][0][common], merged[i][1])
            vb = np.append(merged[j][0][common], merged[j][1])
            na, nb = np.linalg.norm(va), np.linalg.norm(vb)
            if na < 0.1 or nb < 0.1:
                continue
            va, vb = va / na, vb / nb
            if min(np.linalg.norm(va - vb), np.linalg.norm(va + vb)) < tol:
                uf.union(i, j)
    out: dict[int, list[int]] = {}
    for gi, g in enumerate(groups):
        out.setdefault(uf.find(gi), []).extend(g)
    return sorted(out.values(), key=len, reverse=True)


def merge_duplicates(cands: list[Neuron]) -> list[Neuron]:
    """Groups that turn out to be the same neuron (consistent complete rows) are merged."""
    out: list[Neuron] = []
    for c in sorted(cands, key=lambda n: -len(n.members)):
        for o in out:
            if c.complete and o.complete:
                v1 = np.append(c.weights, c.bias)
                v2 = np.append(o.weights, o.bias)
                v1, v2 = v1 / np.linalg.norm(v1), v2 / np.linalg.norm(v2)
                if min(np.linalg.norm(v1 - v2), np.linalg.norm(v1 + v2)) < 1e-6:
                    o.members = sorted(set(o.members) | set(c.members))
                    break
        else:
            out.append(c)
    return out


def select(cands: list[Neuron], n: int, sides, diversity: bool, tol: float = 0.0) -> list[Neuron]:
    """The ``n`` neurons of this layer among the candidates: most members first; with
    ``diversity``, a candidate whose members all sit in one activation cell of the other chosen
    neurons (no other hyperplane separates them) is a deeper neuron seen through one fixed
    activation pattern (its critical surface is flat only inside that cell), and is replaced by
    the next candidate. Carlini et al. separate layers by the same geometric fact: a neuron of
    the current layer is a hyperplane everywhere."""
    ranked = [c for c in sorted(cands, key=lambda c: (-c.support, -len(c.members))) if c.complete]
    chosen = ranked[:n]
    if not diversity or len(ranked) <= n:
        return chosen
    rejected: set[int] = set()
    for _ in range(len(ranked)):
        bad = []
        for c in chosen:
            if len(c.members) < 3:
                continue
            split = False
            for o in chosen:
                if o is c:
                    continue
                v = sides(c, o)
                if (v > tol).any() and (v < -tol).any():
                    split = True
                    break
            if not split:
                bad.append(c)
        if not bad:
            break
        worst = min(bad, key=lambda c: (c.support, len(c.members)))
        rejected.add(id(worst))
        pool = [c for c in ranked if id(c) not in rejected and all(c is not o for o in chosen)]
        if not pool:
            break
        chosen = [c for c in chosen if c is not worst] + [pool[0]]
    return chosen
