"""pytest-benchmark: one training step of the ``sdn-tiny`` substitute (``ours``' loss) in the
layout used today (NCHW) and in channels_last, and the ratio between them measured in the same
run (target: channels_last at least 1.2x cheaper per step in CPU time). Run:
``OMP_NUM_THREADS=1 .venv/bin/pytest benchmarks/test_bench_train_step.py --benchmark-enable``."""

import pytest
import torch
from bench_train_step import cpu_seconds, make_step  # benchmarks/, on sys.path under pytest


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "channels_last"])
def test_train_step_batch_128(benchmark, fmt):
    step, flops = make_step(fmt, 128)
    benchmark.pedantic(step, rounds=10, iterations=1, warmup_rounds=2)
    assert flops > 4e9  # forward + backward of the 4-exit network on 128 images


def test_channels_last_is_cheaper_per_step():
    nchw, _ = make_step(torch.contiguous_format, 128)
    last, _ = make_step(torch.channels_last, 128)
    times = {"nchw": [], "last": []}
    for _ in range(3):  # interleaved rounds, best kept: the ratio comes from the same minutes
        times["nchw"].append(cpu_seconds(nchw, 5))
        times["last"].append(cpu_seconds(last, 5))
    assert min(times["nchw"]) / min(times["last"]) >= 1.2
