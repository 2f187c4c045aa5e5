"""How well the latency calibration (``benchmark.timing.calibrate``) holds up on a busy machine.

    .venv/bin/python benchmarks/bench_calibration.py                  # quiet, then 2 busy processes
    .venv/bin/python benchmarks/bench_calibration.py --busy 0,1,2 --trials 5 --configs 40:0.5,200:0.25

For each load level (that many processes spinning beside it) and each setting (``reps`` round-robin
rounds, of which the quietest ``keep`` fraction is kept; 1.0 keeps all), it calibrates an ``sdn-tiny`` (timing does
not depend on the weights, so it is left untrained) ``--trials`` times, then simulates the default
attack's 10,000 latencies from each profile with the default victim's exit mix and runs the
attack's KDE exit recovery on them. Printed per row: the profile's means (us), its largest spread
relative to the mean, how many of the four exits the KDE found (and how often all four; ``*``: a
profile ``calibrate`` marked unreliable after its 3 measurements), how many profiles were marked
reliable, and how often all four exits were found from those.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

EXIT_MIX = (0.71, 0.10, 0.02, 0.17)  # the default victim's exits on its synthetic-ood queries


def _spin(stop) -> None:
    while not stop.is_set():
        pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--busy", default="0,2", help="comma-separated numbers of busy processes (default 0,2)")
    p.add_argument("--configs", default="40:1.0,40:0.5,200:0.25",  # the old, middle and current settings
                   help="comma-separated REPS:KEEP calibration settings (default 40:1.0,40:0.5,200:0.25)")
    p.add_argument("--trials", type=int, default=3)
    args = p.parse_args(argv)

    import numpy as np
    import pandas as pd
    import torch

    from attacks._exits import estimate_exits
    from benchmark.plugins import VICTIMS
    from benchmark.timing import SimulatedTiming, calibrate

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = VICTIMS["sdn-tiny"]().build(10, (3, 32, 32)).eval()
    rows = []
    for busy in (int(b) for b in args.busy.split(",")):
        stop = mp.Event()
        spinners = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(busy)]
        for proc in spinners:
            proc.start()
        time.sleep(0.5 if busy else 0.0)
        try:
            for reps, keep in ((int(c.split(":")[0]), float(c.split(":")[1])) for c in args.configs.split(",")):
                means, spreads, found, flags = [], [], [], []
                for trial in range(args.trials):
                    prof = calibrate(net, reps=reps, keep=keep)
                    exits = np.random.default_rng(trial).choice(4, 10_000, p=EXIT_MIX)
                    found.append(estimate_exits(SimulatedTiming(prof, trial).latencies(exits)).num_exits)
                    means.append(prof.mean)
                    flags.append(prof.reliable is True)
                    spreads.append(max(s / m for s, m in zip(prof.std, prof.mean)))
                rows.append({"busy processes": busy, "reps": reps, "keep": keep,
                             "means (us, median of trials)": " / ".join(f"{1e6 * m:.0f}" for m in np.median(means, 0)),
                             "largest spread / mean": f"{min(spreads):.3f}-{max(spreads):.3f}",
                             "exits found (of 4)": " ".join(f"{f}{'' if ok else '*'}" for f, ok in zip(found, flags)),
                             "all 4 found": f"{sum(f == 4 for f in found)}/{len(found)}",
                             "reliable": f"{sum(flags)}/{len(found)}",
                             "all 4 found when reliable":
                                 f"{sum(f == 4 and ok for f, ok in zip(found, flags))}/{sum(flags)}"})
        finally:
            stop.set()
            for proc in spinners:
                proc.join()
    print(f"{mp.cpu_count()} cores, {args.trials} trials per row\n")
    print(pd.DataFrame(rows).to_markdown(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
