"""How often the KDE exit recovery (``attacks._exits.estimate_exits``) gets the number of exits right
on simulated latencies, with and without the significance test for rare peaks.

    .venv/bin/python benchmarks/bench_exit_recovery.py              # 30 draws per case
    .venv/bin/python benchmarks/bench_exit_recovery.py --draws 100

Cases (latencies = exit mean + Gaussian noise, the simulated timing channel's model):

- ``rare 6-exit``: a 6-exit victim whose exits 4 and 5 hold 36 and 35 of 10,000 queries (means
  and spreads measured on ``sdn-tiny`` built with 6 exits, seed 2); right = 6 exits found.
- ``4-exit + OS tail``: the default victim's four exits and exit mix, each latency plus an
  exponential delay (mean 10 us), as scheduler noise adds; right = 4.
- ``7 even exits``: seven equally used exits 100 us apart; right = 7.
- ``4-exit, N queries``: a 3 % exit among four at small budgets; right = 4.
- ``exponential tail`` / ``gamma``: one exit with a long right tail; right = 1 (more is a spurious exit).

Columns: the default rule (``rare_prominence`` 0.002, ``min_z`` 2.5), the prominence rule alone
(``rare_prominence`` = ``prominence`` = 0.005, the rule before rare peaks were tested) and low
prominence without the test (``min_z`` 0), each as "right / draws".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RULES = {
    "default (rare peaks tested)": {},
    "prominence only (before)": {"rare_prominence": 0.005},
    "low prominence, no test": {"min_z": 0.0},
}
FOUR = ([260e-6, 430e-6, 670e-6, 850e-6], [15e-6, 17e-6, 25e-6, 40e-6])


def mixture(rng: np.random.Generator, means, stds, weights, n: int) -> np.ndarray:
    exits = rng.choice(len(means), n, p=np.asarray(weights, float) / sum(weights))
    return np.asarray(means)[exits] + np.asarray(stds)[exits] * rng.standard_normal(n)


def cases(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, int]]:
    """One draw of every case: name -> (latencies, right number of exits)."""
    out = {
        "rare 6-exit": (mixture(rng, [221e-6, 355e-6, 461e-6, 565e-6, 683e-6, 854e-6],
                                [8.8e-6, 9.3e-6, 8.0e-6, 9.3e-6, 14.4e-6, 21.3e-6],
                                [6816, 1542, 236, 36, 35, 1335], 10_000), 6),
        "4-exit + OS tail": (mixture(rng, *FOUR, [0.71, 0.10, 0.02, 0.17], 10_000)
                             + rng.exponential(10e-6, 10_000), 4),
        "7 even exits": (mixture(rng, [100e-6 * (k + 1) for k in range(7)], [5e-6] * 7, [1] * 7, 10_000), 7),
    }
    for n in (300, 1000, 5000):
        out[f"4-exit, {n} queries"] = (mixture(rng, *FOUR, [0.64, 0.23, 0.03, 0.10], n), 4)
    out["exponential tail"] = (200e-6 + rng.exponential(50e-6, 10_000), 1)
    out["gamma"] = (rng.gamma(2.0, 100e-6, 10_000), 1)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--draws", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.draws < 1:
        print("error: --draws must be >= 1", file=sys.stderr)
        return 2

    import pandas as pd

    from attacks._exits import estimate_exits

    right: dict[str, dict[str, int]] = {}
    rng = np.random.default_rng(args.seed)
    for _ in range(args.draws):
        for name, (lat, k) in cases(rng).items():
            row = right.setdefault(name, dict.fromkeys(RULES, 0))
            for rule, kw in RULES.items():
                row[rule] += estimate_exits(lat, **kw).num_exits == k
    frame = pd.DataFrame([{"case": name, **{r: f"{v} / {args.draws}" for r, v in row.items()}}
                          for name, row in right.items()])
    print(frame.to_markdown(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
