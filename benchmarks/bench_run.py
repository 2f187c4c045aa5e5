"""Wall time of the default job, cold (victim trained) and warm (victim cached), in one process
each, as a user runs it. Usage: ``.venv/bin/python benchmarks/bench_run.py [--defense jitter]``.

Runs in a fresh temporary cache so "cold" really trains; prints a markdown table."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(args: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "benchmark", "run", *args, "--quiet"], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--attack", default="ours")
    p.add_argument("--defense", default="jitter")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, STEALBENCH_CACHE=cache)
        args = ["--attack", a.attack, "--defense", a.defense, "--out", str(Path(cache) / "r.json")]
        cold = timed(args, env)
        warm = timed(args, env)
    print(f"| run | seconds |\n|---|---|\n| cold (trains victim) | {cold:.1f} |\n| warm (cached victim) | {warm:.1f} |")
    print(f"cpu threads: {os.environ.get('OMP_NUM_THREADS', 'default')}, cores: {os.cpu_count()}")


if __name__ == "__main__":
    main()
