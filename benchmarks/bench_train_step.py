"""Throughput of one training step of the ``sdn-tiny`` substitute (``ours``' loss: KL to the
victim's answers at every exit + 3 x the strategy loss), against a large fp32 GEMM on the same
threads: how far the step is from what the CPU can do, and what the standard layout and batch
changes buy.

CPU time per step (``time.process_time``, all threads of the process) is the figure, not wall
time: on a host shared with other jobs it is far less disturbed by them. Variants run in
interleaved rounds so that every ratio comes from the same minutes. FLOPs are counted by
``torch.utils.flop_counter`` (forward + backward of convolutions and matmuls).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_train_step.py            # one thread
    .venv/bin/python benchmarks/bench_train_step.py --threads 2 --rounds 5
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

import victims  # noqa: F401  (registers the victim families)
from attacks._common import kl_to_targets
from attacks.ours import strategy_loss
from benchmark.plugins import VICTIMS

#: (name, memory format, batch size)
VARIANTS = (("NCHW, batch 128 (today)", torch.contiguous_format, 128),
            ("channels_last, batch 128", torch.channels_last, 128),
            ("NCHW, batch 256", torch.contiguous_format, 256),
            ("channels_last, batch 256", torch.channels_last, 256))
#: reduced precision (``--bf16``): fast only where the CPU has bf16 units (AVX512_BF16 / AMX)
BF16_VARIANTS = (("bf16 autocast, NCHW, batch 128", torch.contiguous_format, 128),
                 ("bf16 autocast, channels_last, batch 128", torch.channels_last, 128))


def make_step(memory_format: torch.memory_format, batch: int, bf16: bool = False,
              seed: int = 0) -> tuple[Callable[[], None], float]:
    """One training step of a fresh ``sdn-tiny`` (4 exits) on a fixed random batch, and its FLOPs;
    ``bf16``: the forward pass under CPU autocast to bfloat16 (weights and optimiser stay fp32)."""
    torch.manual_seed(seed)
    model = VICTIMS["sdn-tiny"]().build(10, (3, 32, 32), exits=4).to(memory_format=memory_format)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, 32, 32, generator=gen).contiguous(memory_format=memory_format)
    target = torch.softmax(torch.randn(batch, 10, generator=gen), 1)
    exits = torch.randint(0, 4, (batch,), generator=gen)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            outs = model(x)
        loss = kl_to_targets(outs, target) + 3.0 * strategy_loss(outs, exits, 0.95, 0.9)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as counter:
        outs = model(x)
        (kl_to_targets(outs, target) + 3.0 * strategy_loss(outs, exits, 0.95, 0.9)).backward()
    opt.zero_grad(set_to_none=True)
    return step, float(counter.get_total_flops())


def make_gemm(n: int = 1024) -> tuple[Callable[[], None], float]:
    a, b = torch.randn(n, n), torch.randn(n, n)
    return (lambda: torch.mm(a, b)), 2.0 * n ** 3


def cpu_seconds(fn: Callable[[], None], steps: int) -> float:
    """CPU seconds per call, after two warm-up calls."""
    fn()
    fn()
    t0 = time.process_time()
    for _ in range(steps):
        fn()
    return (time.process_time() - t0) / steps


def measure(rounds: int, steps: int, bf16: bool = False) -> pd.DataFrame:
    variants = VARIANTS + (BF16_VARIANTS if bf16 else ())
    cases = {name: (*make_step(fmt, batch, name.startswith("bf16")), batch) for name, fmt, batch in variants}
    gemm, gemm_flops = make_gemm()
    times: dict[str, list[float]] = {name: [] for name in [*cases, "GEMM"]}
    for _ in range(rounds):  # interleaved: every variant once per round
        for name, (step, _, _) in cases.items():
            times[name].append(cpu_seconds(step, steps))
        times["GEMM"].append(cpu_seconds(gemm, steps))
    gemm_rate = gemm_flops / min(times["GEMM"])
    base_name = VARIANTS[0][0]
    base = min(times[base_name]) / cases[base_name][2]  # CPU s per sample
    rows = []
    for name, (_, flops, batch) in cases.items():
        best = min(times[name])
        rows.append({"variant": name, "CPU ms / step": 1e3 * best, "CPU us / sample": 1e6 * best / batch,
                     "GFLOP / step": flops / 1e9, "GFLOP/s": flops / best / 1e9,
                     "share of GEMM rate": flops / best / gemm_rate, "speed-up per sample": base / (best / batch)})
    rows.append({"variant": "fp32 GEMM 1024^3 (reference)", "CPU ms / step": 1e3 * min(times["GEMM"]),
                 "GFLOP / step": gemm_flops / 1e9, "GFLOP/s": gemm_rate / 1e9, "share of GEMM rate": 1.0})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best is kept (default 3)")
    parser.add_argument("--steps", type=int, default=10, help="steps timed per round and variant (default 10)")
    parser.add_argument("--bf16", action="store_true", help="also time the forward pass under bf16 autocast")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    table = measure(args.rounds, args.steps, args.bf16)
    print(f"torch {torch.__version__}, {args.threads} thread(s), CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}; best of {args.rounds} rounds x {args.steps} steps")
    print(table.to_markdown(index=False, floatfmt=".3g"))


if __name__ == "__main__":
    main()
