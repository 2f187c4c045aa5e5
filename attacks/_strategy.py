"""Output-strategy search (multi-exit stealing paper, Sec. 2.4, Eq. 4).

Find thresholds t_1..t_{K-1} (the last exit always fires) maximising the number of query samples
whose first exit with confidence >= t_k equals the exit the victim used. Enumerating the N^K
candidate combinations is hopeless; instead the candidates for t_k are the confidences of the
samples the victim sent to exit k (plus "never"), and we run coordinate ascent from three starts
(all exits closed, visited front to back; the same back to front; per-exit medians). One
coordinate's optimum is found exactly in one sorted sweep: the samples reaching exit k either
leave there (correct iff their target is k) or continue to a fixed outcome, so the count is a
prefix sum over samples sorted by confidence. O(K N log N) per pass. Among equally good splits the
cheapest (most samples leaving early) wins, and the threshold is placed midway between the last
confidence kept and the next lower one, so that it generalises beyond the exact query values.
"""

from __future__ import annotations

import numpy as np

NEVER = 2.0


def exits_under(conf: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Exit taken by each sample: the first k with conf[:, k] >= thresholds[k]; the last otherwise."""
    hit = conf >= thresholds[None, :]
    hit[:, -1] = True
    return hit.argmax(axis=1)


def agreement(conf: np.ndarray, target: np.ndarray, thresholds: np.ndarray) -> int:
    return int((exits_under(conf, thresholds) == target).sum())


def best_threshold(conf: np.ndarray, target: np.ndarray, thresholds: np.ndarray, k: int,
                   order: np.ndarray | None = None) -> tuple[float, int]:
    """Exact best t_k with the other thresholds fixed: (threshold, agreement). ``order`` may give
    the samples sorted by descending ``conf[:, k]`` (precomputed once per exit by the search)."""
    big_k = conf.shape[1]
    reach = np.all(conf[:, :k] < thresholds[None, :k], axis=1)
    if order is None:
        order = np.argsort(-conf[:, k], kind="stable")
    before = ~reach
    fixed = int((exits_under(conf[before], thresholds) == target[before]).sum())
    idx = order[reach[order]]  # reaching samples, by descending confidence at exit k
    if k + 1 < big_k:
        later = k + 1 + exits_under(conf[idx, k + 1:], thresholds[k + 1:])
    else:
        later = np.full(len(idx), k)
    tgt, c_sorted = target[idx], conf[idx, k]
    gain_continue = (later == tgt).astype(np.int64)
    base = fixed + int(gain_continue.sum())
    if len(idx) == 0:
        return NEVER, base
    is_k = tgt == k
    csum = np.cumsum(is_k.astype(np.int64) - gain_continue)
    new_group = np.append(True, c_sorted[1:] != c_sorted[:-1])
    group_end = np.append(new_group[1:], True)  # last index of each tie group
    group_id = np.cumsum(new_group) - 1
    # a tie group is a candidate if it contains a sample the victim sent to exit k
    has_k = np.bincount(group_id, weights=is_k) > 0
    valid = group_end & has_k[group_id]
    if not valid.any():
        return NEVER, base
    masked = np.where(valid, csum, np.iinfo(np.int64).min)
    best = len(masked) - 1 - int(np.argmax(masked[::-1]))  # among ties, the lowest threshold (cheapest)
    if csum[best] <= 0:
        return NEVER, base
    # the same split of the queries, with the threshold centred in the gap to the next lower confidence
    lower = c_sorted[best + 1] if best + 1 < len(c_sorted) else c_sorted[best]
    return float((c_sorted[best] + lower) / 2), base + int(csum[best])


def _ascend(conf: np.ndarray, target: np.ndarray, t: np.ndarray, visit: list[int], orders: list[np.ndarray],
            max_passes: int) -> tuple[np.ndarray, int]:
    """Coordinate ascent from ``t`` visiting exits in ``visit`` until no single change improves."""
    score = agreement(conf, target, t)
    for _ in range(max_passes):
        improved = False
        for k in visit:
            cand, cand_score = best_threshold(conf, target, t, k, orders[k])
            if cand_score > score:
                t[k], score, improved = cand, cand_score, True
        if not improved:
            break
    return t, score


def search_thresholds(conf: np.ndarray, target: np.ndarray, max_passes: int = 20) -> tuple[np.ndarray, int]:
    """Greedy pass (exits front to back, later exits closed) then coordinate ascent until no single
    threshold change improves the agreement; restarted from a back-to-front pass and from the
    per-exit median confidences, keeping the best. Returns (thresholds (K,), agreement)."""
    conf = np.asarray(conf, dtype=np.float64)
    target = np.asarray(target, dtype=np.int64)
    k_exits = conf.shape[1]
    closed = np.full(k_exits, NEVER)
    closed[-1] = 0.0
    medians = np.array([np.median(conf[target == k, k]) if (target == k).any() else NEVER
                        for k in range(k_exits - 1)] + [0.0])
    front, back = list(range(k_exits - 1)), list(range(k_exits - 2, -1, -1))
    orders = [np.argsort(-conf[:, k], kind="stable") for k in range(k_exits - 1)]
    best_t, best = closed.copy(), -1
    for start, visit in ((closed, front), (closed, back), (medians, front)):
        t, score = _ascend(conf, target, start.copy(), visit, orders, max_passes)
        if score > best:
            best_t, best = t, score
    return best_t, best
