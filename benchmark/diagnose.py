"""Where a stolen output strategy loses closeness: in the thresholds or in the substitute.

The multi-exit paper's strategy theft (arXiv 2305.13584, Sec. 2.3-2.4) fits thresholds on the
queries; they carry over to the task only if the substitute is about as confident as the victim
there. This reports, per victim exit k, how often the victim uses k on the queries and on the
test set and the max-softmax at k of victim and substitute on the test samples the victim answers
at k; then clo and cc_ratio under the substitute's own thresholds and under the best thresholds
for the test set itself (the Eq. 4 search run on the victim's test exits). That second clo bounds
what any output strategy can get from this substitute: when it is close to the achieved clo, the
loss is in the substitute's confidences, not in the search.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attacks.strategy import exits_under, search_thresholds


@dataclass(frozen=True)
class StrategyGap:
    rows: tuple[dict, ...]  # one per victim exit
    clo: float
    cc_ratio: float
    clo_best: float
    cc_ratio_best: float
    thresholds: tuple[float, ...]
    thresholds_best: tuple[float, ...]


def strategy_gap(victim_conf: np.ndarray, victim_exits: np.ndarray, stolen_conf: np.ndarray,
                 thresholds: np.ndarray, stolen_flops: np.ndarray, victim_flops: np.ndarray,
                 query_exits: np.ndarray) -> StrategyGap:
    """All arrays on the test set (N, K) / (N,) except ``query_exits`` (the victim's exits on the
    attack's queries). Needs as many stolen exits as victim exits (K' == K)."""
    victim_exits, query_exits = np.asarray(victim_exits), np.asarray(query_exits)
    k = victim_conf.shape[1]
    if stolen_conf.shape[1] != k:
        raise ValueError(f"the substitute has {stolen_conf.shape[1]} exits, the victim {k}: "
                         "the per-exit comparison needs the same number")
    victim_cost = float(np.asarray(victim_flops, dtype=np.float64)[victim_exits].mean())
    flops = np.asarray(stolen_flops, dtype=np.float64)
    own = exits_under(stolen_conf, np.asarray(thresholds, dtype=np.float64))
    best_t, _ = search_thresholds(stolen_conf, victim_exits)
    best = exits_under(stolen_conf, best_t)
    rows = []
    for e in range(k):
        at = victim_exits == e
        rows.append({
            "victim exit": str(e + 1),
            "share of queries": float((query_exits == e).mean()) if len(query_exits) else float("nan"),
            "share of test": float(at.mean()),
            "stolen share of test": float((own == e).mean()),
            "victim conf at exit": float(victim_conf[at, e].mean()) if at.any() else float("nan"),
            "stolen conf at exit": float(stolen_conf[at, e].mean()) if at.any() else float("nan"),
        })
    return StrategyGap(tuple(rows), float((own == victim_exits).mean()), float(flops[own].mean() / victim_cost),
                       float((best == victim_exits).mean()), float(flops[best].mean() / victim_cost),
                       tuple(float(t) for t in thresholds), tuple(float(t) for t in best_t))
