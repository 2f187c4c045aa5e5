"""Run one attack and show where its stolen output strategy loses closeness .

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/strategy_gap.py                 # ours on the default
    .venv/bin/python benchmarks/strategy_gap.py --attack knockoff --attack-opt sampling=adaptive
    .venv/bin/python benchmarks/strategy_gap.py --query-data synthetic-indist     # in-distribution queries

Prints, per victim exit, how often the victim uses it on the attack's queries (on the whole query set
for attacks that do not report which rows they asked) and on the test set
and the mean max-softmax there of victim and substitute, then clo / cc_ratio with the attack's own
thresholds and with the best thresholds for the test set (the bound any output strategy has with
this substitute). The run goes through ``benchmark.runner.run`` like ``python -m benchmark run``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from attacks._strategy import exits_under, search_thresholds  # noqa: E402


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--attack", default="ours")
    p.add_argument("--attack-opt", dest="attack_opt", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--victim-opt", dest="victim_opt", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--defense", default="none")
    p.add_argument("--budget", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--query-data", dest="query_data", default="synthetic-ood")
    p.add_argument("--timing-profile", dest="timing_profile", default="flops")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)

    import pandas as pd

    from benchmark.config import RunConfig
    from benchmark.errors import StealBenchError
    from benchmark.metrics import run_early_exit
    from benchmark.options import parse_kv
    from benchmark.runner import run
    from benchmark.training import exit_confidences

    seen: dict = {}
    try:
        cfg = RunConfig(attack=args.attack, defense=args.defense, query_data=args.query_data, budget=args.budget,
                        seed=args.seed, device=args.device, timing_profile=args.timing_profile,
                        attack_options=parse_kv(args.attack_opt, "attack"),
                        victim_options=parse_kv(args.victim_opt, "victim"))
        result = run(cfg, progress=not args.quiet, inspect=seen.update)
    except StealBenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    victim, stolen, test, query = seen["victim"], seen["stolen"].model, seen["task"].test, seen["query"]
    index = seen["stolen"].query_index  # None for attacks that do not report which rows they asked
    asked = query if index is None else type(query)(query.x[index], query.y[index])
    vconf, _ = exit_confidences(victim, test, args.device)
    sconf, _ = exit_confidences(stolen, test, args.device)
    try:
        gap = strategy_gap(vconf.numpy(), run_early_exit(victim, test, args.device).exits.numpy(), sconf.numpy(),
                           stolen.thresholds.cpu().numpy(), np.array(stolen.exit_flops()),
                           np.array(victim.exit_flops()), run_early_exit(victim, asked, args.device).exits.numpy())
    except ValueError as exc:  # the substitute has another number of exits than the victim
        print(f"error: {exc}", file=sys.stderr)
        return 2
    s = result.scores
    print(f"{args.attack} {' '.join(args.attack_opt)} vs {cfg.victim} / {cfg.dataset}, queries {cfg.query_data}, "
          f"defense {cfg.defense}, budget {s['queries']}, seed {cfg.seed}: acc {s['acc']:.3f}")
    print(f"(share of queries: {'the whole query set' if index is None else 'the rows the attack asked'})\n")
    print(pd.DataFrame(gap.rows).to_markdown(index=False, floatfmt=".3f"))
    print(f"\n- own thresholds {np.round(gap.thresholds, 3).tolist()}: clo {gap.clo:.3f}, cc_ratio {gap.cc_ratio:.3f}")
    print(f"- best thresholds for the test set {np.round(gap.thresholds_best, 3).tolist()}: clo {gap.clo_best:.3f}, "
          f"cc_ratio {gap.cc_ratio_best:.3f} (the most any output strategy gets from this substitute)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
