"""Parallel speed-up of ``sweep --executor local``: the same jobs one after another vs on a pool.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_sweep.py --cores 2 --workers 2 --out bench-sweep.json

Three ways to run the same grid (default: ours, ours:repeats=2 x none, jitter, padding x seed 0 on the
tiny test configuration), all through ``run_sweep`` so each pays the same worker start-up:

- ``serial-1t``: one job at a time, 1 torch thread (``--workers 1 --cpus-per-job 1``);
- ``serial-Nt``: one job at a time using all the cores through torch threads (``--workers 1
  --cpus-per-job N``), what a single ``run`` after another would do;
- ``pool``: ``--workers N --cpus-per-job 1`` (N = ``--workers``).

Victims are trained (and cached) before timing, so every mode does the same work: the jobs
themselves. The scores of ``serial-1t`` and ``pool`` must be identical (same seeds, same thread
count), which the script checks. The machine's load average is recorded beside the times: on a
shared machine other processes take cores away and the speed-up shrinks (with Linux's
``sched_autogroup`` a busy machine gives each login's process group one fair share, however many processes
it runs; the README ("Sweeps") shows how the published figure was measured).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmark.data import TASKS, DataRequest
from benchmark.plugins import VICTIMS
from benchmark.result import git_commit
from benchmark.runner import INPUT_SHAPE
from benchmark.sweep import build_spec, run_sweep
from benchmark.zoo import load_or_train

SCORES = ("acc", "clo", "fidelity", "cc_ratio", "exit_accuracy", "victim_exit_hist", "stolen_exit_hist")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--attacks", default="ours,ours:repeats=2")
    p.add_argument("--defenses", default="none,jitter,padding")
    p.add_argument("--seeds", default="0")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cores", type=int, default=2, help="pin this process and its children to this many cores")
    p.add_argument("--repeat", type=int, default=1, help="time each mode this often (interleaved); report median")
    p.add_argument("--modes", default="serial-1t,serial-Nt,pool", help="which modes to time (serial-1t always)")
    p.add_argument("--out", help="write the measurements as JSON here")
    args = p.parse_args()

    if hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))[: args.cores]
        os.sched_setaffinity(0, cpus)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

    spec = build_spec({"attacks": args.attacks, "defenses": args.defenses, "seeds": args.seeds, "budget": 600,
                       "timing_profile": "flops", "attack_options": {"epochs": 1}, "victim_options": {"epochs": 1}})
    jobs = spec.jobs()
    print(f"{len(jobs)} jobs on {cores} cores; warming the victim cache ...", flush=True)
    import torch

    torch.set_num_threads(cores)
    for victim in spec.victims:
        for seed in spec.seeds:
            task = TASKS["synthetic"](DataRequest(Path(tempfile.gettempdir()), False, 0, INPUT_SHAPE))
            load_or_train(VICTIMS[victim.name](**victim.options), task, seed, progress=False)

    wanted = set(args.modes.split(",")) | {"serial-1t"}
    modes = {name: how for name, how, key in (("serial-1t", (1, 1), "serial-1t"),
                                              (f"serial-{cores}t", (1, cores), "serial-Nt"),
                                              ("pool", (args.workers, 1), "pool")) if key in wanted}
    times: dict[str, list[float]] = {m: [] for m in modes}
    loads = []
    scores: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat):
            for mode, (workers, cpus) in modes.items():
                out = Path(tmp) / f"{mode}-{r}"
                load_before = os.getloadavg()[0]
                t0 = time.perf_counter()
                summary = run_sweep(jobs, out, workers=workers, cpus_per_job=cpus, progress=False)
                seconds = time.perf_counter() - t0
                loads.append((load_before + os.getloadavg()[0]) / 2)
                assert summary.done == len(jobs) and summary.failed == 0, summary
                times[mode].append(seconds)
                scores[mode] = {p.name: {k: json.loads(p.read_text())["scores"][k] for k in SCORES}
                                for p in out.glob("*__*.json")}
                print(f"  {mode:<10} workers={workers} threads/job={cpus}: {seconds:6.1f} s "
                      f"(load {loads[-1]:.1f})", flush=True)

    identical = scores["serial-1t"] == scores.get("pool", scores["serial-1t"])
    base = statistics.median(times["serial-1t"])
    rows = [(m, statistics.median(t), base / statistics.median(t)) for m, t in times.items()]
    print(f"\n{len(jobs)} jobs, {cores} cores, median of {args.repeat}; mean load average {statistics.mean(loads):.2f}")
    print("| mode | wall s | speed-up vs serial-1t |\n|:--|--:|--:|")
    for mode, sec, speed in rows:
        print(f"| {mode} | {sec:.1f} | {speed:.2f}x |")
    print(f"pool scores identical to serial-1t: {identical}")
    if args.out:
        Path(args.out).write_text(json.dumps({
            "jobs": len(jobs), "cores": cores, "workers": args.workers, "repeat": args.repeat,
            "times_s": times, "median_s": {m: s for m, s, _ in rows}, "speedup": {m: x for m, _, x in rows},
            "mean_loadavg": statistics.mean(loads), "scores_identical": identical, "git_commit": git_commit(),
            "grid": {"attacks": args.attacks, "defenses": args.defenses, "seeds": args.seeds}}, indent=2) + "\n")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
