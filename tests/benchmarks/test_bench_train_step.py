"""The training-step benchmark script runs and reports a sane table (tiny setting)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_train_step_table(capsys):
    spec = importlib.util.spec_from_file_location("bench_train_step", ROOT / "benchmarks" / "bench_train_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    table = module.measure(rounds=1, steps=1)
    assert list(table["variant"])[-1].startswith("fp32 GEMM")
    steps = table.iloc[:-1]
    # the same network: batch 256 does twice the FLOPs of batch 128, whatever the layout
    assert steps["GFLOP / step"].iloc[2] == 2 * steps["GFLOP / step"].iloc[0]
    assert steps["GFLOP / step"].iloc[1] == steps["GFLOP / step"].iloc[0]
    assert (steps["GFLOP/s"] > 0).all() and steps["speed-up per sample"].iloc[0] == 1.0
    module.main(["--rounds", "1", "--steps", "1"])
    assert "channels_last, batch 128" in capsys.readouterr().out
