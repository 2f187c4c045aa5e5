"""The exact-extraction benchmark script's trained mode, end to end on a tiny setting."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def bench(tmp_path, monkeypatch):
    monkeypatch.setenv("STEALBENCH_CACHE", str(tmp_path / "cache"))
    spec = importlib.util.spec_from_file_location("bench_cryptanalytic", ROOT / "benchmarks" / "bench_cryptanalytic.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_trained_mnist_mode_runs_records_and_renders(bench, tmp_path, capsys):
    """16-4-4-1 on MNIST digits shrunk to 4x4 (odd vs even): one run at the default sign settings
    and one with the paper's projection wiggle, each a JSON line with the victim's accuracy, the
    settings and per-layer signature, precision and sign costs; ``--table`` renders both tables."""
    out = tmp_path / "runs.jsonl"
    args = ["--trained", "mnist", "--sizes", "16-4-4-1", "--weight-seeds", "0", "--extraction-seeds", "0",
            "--epochs", "10", "--time-limit", "60", "--out", str(out)]
    assert bench.main([*args, "--wiggle", "suppress,projection"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["wiggle"], r["sign_samples"]) for r in rows] == [("suppress", 15), ("projection", 15)]
    for r in rows:
        assert r["dataset"] == "mnist" and r["epochs"] == 10 and r["time_limit"] == 60
        assert r["test_accuracy"] >= 0.7  # odd vs even on 4x4 digits
        assert len(r["per_layer"]) == 2 and len(r["recovered_per_layer"]) == 2
        for log in r["per_layer"]:
            assert log["precision_seconds"] <= log["signature_seconds"]
            assert {"signature_queries", "precision_queries", "sign_seconds", "sign_queries"} <= set(log)
        assert r["hit_time_limit"] is False
    assert bench.main(args) == 0  # done already: skipped, nothing appended
    assert len(out.read_text().splitlines()) == 2
    capsys.readouterr()
    assert bench.main(["--trained", "mnist", "--out", str(out), "--table"]) == 0
    text = capsys.readouterr().out
    assert "| 16-4-4-1 |" in text and "L1 precision s" in text
    assert "| 16-4-4-1 | projection | 15 |" in text and "| 16-4-4-1 | suppress | 15 |" in text
