"""Wall time of the default job, cold (victim trained) and warm (victim cached), in one process
each, as a user runs it. Usage: ``.venv/bin/python benchmarks/bench_run.py [--defense jitter]``.

Runs in a fresh temporary cache so "cold" really trains; prints a markdown table. With
``--vs-tree DIR`` (another checkout, e.g. ``git worktree add DIR <commit>``) it times the warm job of
both trees in turn (A B A B ..., ``--pairs`` pairs, same cache) and prints the medians and the
ratio pair by pair, so a change's cost is measured in one run on one machine."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(args: list[str], env: dict, tree: Path = ROOT) -> float:
    env = dict(env, PYTHONPATH=str(tree)) if tree != ROOT else env
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "benchmark", "run", *args, "--quiet"], cwd=tree, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def versus(args: list[str], env: dict, other: Path, pairs: int) -> None:
    import statistics

    timed(args, env)  # trains and caches the victim once (both trees share the cache)
    here, there = [], []
    for _ in range(pairs):
        here.append(timed(args, env))
        there.append(timed(args, env, other))
    ratios = [a / b for a, b in zip(here, there)]
    print(f"| tree | warm run, median s ({pairs} runs) |\n|---|---|\n"
          f"| this checkout | {statistics.median(here):.1f} |\n"
          f"| {other} | {statistics.median(there):.1f} |\n\nratio this / other: median {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f})")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--attack", default="ours")
    p.add_argument("--defense", default="jitter")
    p.add_argument("--budget", type=int, default=None)
    p.add_argument("--vs-tree", type=Path, default=None, help="another checkout to compare the warm run with")
    p.add_argument("--pairs", type=int, default=3)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, STEALBENCH_CACHE=cache)
        args = ["--attack", a.attack, "--defense", a.defense, "--out", str(Path(cache) / "r.json")]
        if a.budget is not None:
            args += ["--budget", str(a.budget)]
        if a.vs_tree is not None:
            versus(args, env, a.vs_tree.resolve(), a.pairs)
            return
        cold = timed(args, env)
        warm = timed(args, env)
    print(f"| run | seconds |\n|---|---|\n| cold (trains victim) | {cold:.1f} |\n| warm (cached victim) | {warm:.1f} |")
    print(f"cpu threads: {os.environ.get('OMP_NUM_THREADS', 'default')}, cores: {os.cpu_count()}")


if __name__ == "__main__":
    main()
