"""How often the KDE exit recovery (``attacks._exits.estimate_exits``) gets the number of exits right
on simulated latencies, with and without the significance test for rare peaks.

    .venv/bin/python benchmarks/bench_exit_recovery.py              # 30 draws per case
    .venv/bin/python benchmarks/bench_exit_recovery.py --draws 100
    .venv/bin/python benchmarks/bench_exit_recovery.py --draws 0    # only the speed table

Cases (latencies = exit mean + Gaussian noise, the simulated timing channel's model):

- ``rare 6-exit``: a 6-exit victim whose exits 4 and 5 hold 36 and 35 of 10,000 queries (means
  and spreads measured on ``sdn-tiny`` built with 6 exits, seed 2); right = 6 exits found.
- ``4-exit + OS tail``: the default victim's four exits and exit mix, each latency plus an
  exponential delay (mean 10 us), as scheduler noise adds; right = 4.
- ``7 even exits``: seven equally used exits 100 us apart; right = 7.
- ``4-exit, N queries``: a 3 % exit among four at small budgets; right = 4.
- ``4-exit EPYC profile``: the default victim's profile calibrated on an AMD EPYC host (exit means
  0.63 / 1.06 / 1.74 / 2.19 ms, spreads 0.04-0.11 ms), exits 3 and 4 holding 6 and 18% of the
  queries, 10,000 queries; right = 4.
- ``exponential tail`` / ``gamma``: one exit with a long right tail; right = 1 (more is a spurious exit).

Columns: the default rule (two-pass log-time KDE, ``rare_prominence`` 0.002, ``min_z`` 2.5), the
single-pass linear-time rule it replaced (``benchmarks/_exits_before.py``, a frozen copy: one KDE
over the latencies in seconds with half of Scott's kernel width over all of them), the prominence
rule alone (``rare_prominence`` = ``prominence`` = 0.005, the rule before rare peaks were tested)
and low prominence without the test (``min_z`` 0), each as "right / draws".

Then the speed of the default rule and of the single-pass rule, timed in the same run on the same
100,000 latencies (seven equally used exits 100 us apart, 3 us spread, as
``benchmarks/test_bench_strategy.py``): median of ``--rounds`` calls each, and their ratio.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "benchmarks"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

BEFORE = "single-pass linear time (before)"
RULES = {  # column -> options of the current rule, or BEFORE: the frozen copy of the rule it replaced
    "default (rare peaks tested)": {},
    BEFORE: BEFORE,
    "prominence only (no rare floor)": {"rare_prominence": 0.005},
    "low prominence, no test": {"min_z": 0.0},
}


def rule(name: str):
    """The exit-recovery function a column runs."""
    from attacks._exits import estimate_exits

    if RULES[name] == BEFORE:
        from _exits_before import estimate_exits as before

        return before
    return lambda lat: estimate_exits(lat, **RULES[name])
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
    epyc = ([0.63e-3, 1.06e-3, 1.74e-3, 2.19e-3], [0.04e-3, 0.05e-3, 0.11e-3, 0.11e-3])  # tests/attacks/test_exits.py
    out["4-exit EPYC profile"] = (mixture(rng, *epyc, [0.64, 0.12, 0.06, 0.18], 10_000), 4)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--draws", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=5, help="calls timed per rule for the speed table (0: none)")
    args = p.parse_args(argv)
    if args.draws < 0 or args.rounds < 0 or args.draws + args.rounds == 0:
        print("error: --draws and --rounds must be >= 0, one of them > 0", file=sys.stderr)
        return 2

    import pandas as pd

    if args.draws:
        right: dict[str, dict[str, int]] = {}
        rules = {name: rule(name) for name in RULES}
        rng = np.random.default_rng(args.seed)
        for _ in range(args.draws):
            for name, (lat, k) in cases(rng).items():
                row = right.setdefault(name, dict.fromkeys(RULES, 0))
                for column, fn in rules.items():
                    row[column] += fn(lat).num_exits == k
        frame = pd.DataFrame([{"case": name, **{r: f"{v} / {args.draws}" for r, v in row.items()}}
                              for name, row in right.items()])
        print(frame.to_markdown(index=False))
    if args.rounds:
        print()
        print(speed(args.rounds, args.seed).to_markdown(index=False))
    return 0


def speed(rounds: int, seed: int):
    """Median seconds per call of the current rule and the one it replaced on the same 100,000
    latencies, timed interleaved in one run (so that a change of load hits both alike), and their
    ratio."""
    import time

    import pandas as pd

    rng = np.random.default_rng(seed)
    exits = rng.integers(0, 7, 100_000)
    lat = 1e-4 * (exits + 1) + 3e-6 * rng.standard_normal(len(exits))
    rules = {"two-pass log-time KDE (default)": rule("default (rare peaks tested)"),
             "single-pass linear-time KDE (before)": rule(BEFORE)}
    times: dict[str, list[float]] = {name: [] for name in rules}
    found: dict[str, int] = {}
    for _ in range(rounds):
        for name, fn in rules.items():
            t0 = time.perf_counter()
            found[name] = fn(lat).num_exits
            times[name].append(time.perf_counter() - t0)
    base = float(np.median(times["single-pass linear-time KDE (before)"]))
    return pd.DataFrame([{"rule (N = 100,000, 7 exits)": name, "exits found": found[name],
                          "median ms": round(float(np.median(t)) * 1e3, 1),
                          "x single-pass": round(float(np.median(t)) / base, 2)} for name, t in times.items()])


if __name__ == "__main__":
    raise SystemExit(main())
