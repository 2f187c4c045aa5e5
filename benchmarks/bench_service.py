"""The query phase through the service vs an in-process oracle, in one run: the default job's
attack queries (10,000 texture images in batches of 500, as ``attacks._common`` sends them)
answered by the default victim (untrained ``sdn-tiny``; the answer time does not depend on the
weights' values except through the exit mix) directly, and through ``Service`` over a pipe to a
spawned client process. Usage: ``.venv/bin/python benchmarks/bench_service.py [--rounds 5]``."""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers import tiny_oracle

from benchmark.plugins import DEFENSES
from benchmark.service import attacker, client
from benchmark.service.server import Service

N, BATCH = 10_000, 500


def _client(conn, n: int, batch: int) -> None:
    torch.set_num_threads(1)
    box = client.remote_black_box(client._Channel(conn), 0, n, 10, (3, 32, 32))
    x = torch.rand(batch, 3, 32, 32)
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        box.query(x[: min(batch, n - start)])
    conn.send_bytes(attacker.FAIL + f'{{"seconds": {time.perf_counter() - t0}}}'.encode())


def in_process() -> float:
    box = tiny_oracle(budget=N).black_box()
    x = torch.rand(BATCH, 3, 32, 32)
    t0 = time.perf_counter()
    for start in range(0, N, BATCH):
        box.query(x[: min(BATCH, N - start)])
    return time.perf_counter() - t0


def through_service() -> float:
    import json

    service = Service(tiny_oracle(budget=N), DEFENSES["none"](), 0, N)
    mp = multiprocessing.get_context("spawn")
    here, there = mp.Pipe()
    proc = mp.Process(target=_client, args=(there, N, BATCH), daemon=True)
    proc.start()
    there.close()
    msg = attacker.serve(service, here, proc)
    proc.join()
    return json.loads(msg[4:])["seconds"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    local, remote = [], []
    for _ in range(a.rounds):  # interleaved, so drift in the machine's speed hits both alike
        local.append(in_process())
        remote.append(through_service())
    ratios = [b / a for a, b in zip(local, remote)]
    print(f"| path | median s ({N} queries, batches of {BATCH}) |\n|---|---|\n"
          f"| in-process oracle | {statistics.median(local):.3f} |\n| service (pipe, spawned client) | "
          f"{statistics.median(remote):.3f} |\n\nratio service / in-process: median {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f}, {a.rounds} pairs)")


if __name__ == "__main__":
    main()
