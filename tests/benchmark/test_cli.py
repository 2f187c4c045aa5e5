"""The CLI end to end on a tiny configuration, and its handling of bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.cli import main

TINY = ["--victim-opt", "epochs=1", "--attack-opt", "epochs=1", "--budget", "600", "--timing-profile", "flops",
        "--quiet"]
ROOT = Path(__file__).resolve().parents[2]


def test_run_end_to_end(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["run", "--attack", "ours", "--defense", "jitter", *TINY, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "clo" in printed and "exit_accuracy" in printed and str(out) in printed
    r = json.loads(out.read_text())
    assert r["schema_version"] == 1
    cfg = r["config"]
    assert (cfg["attack"], cfg["defense"], cfg["victim"], cfg["dataset"], cfg["query_data"], cfg["budget"],
            cfg["seed"], cfg["timing"]) == ("ours", "jitter", "sdn-tiny", "synthetic", "synthetic-ood", 600, 0,
                                            "simulated")
    s = r["scores"]
    for key in ("acc", "clo", "fidelity", "cc_flops", "cc_ratio", "exit_accuracy", "queries", "attack_seconds",
                "energy_j_per_sample"):
        assert key in s
    assert s["queries"] == 600
    assert 0 <= s["clo"] <= 1 and 0 <= s["acc"] <= 1 and s["cc_ratio"] > 0
    assert s["energy_j_per_sample"]["victim"] is None or s["energy_j_per_sample"]["victim"] > 0
    assert s["energy_j_per_sample"]["victim"] is not None or s["energy_reason"]
    assert r["defense"]["cost"]["added_latency_mean_s"] > 0 and r["defense"]["cost"]["accuracy_lost"] == 0
    assert r["victim"]["num_exits"] == 4 and len(r["victim"]["exit_flops"]) == 4
    assert r["environment"]["torch"]
    # a second run finds the victim in the cache and reproduces the same numbers
    out2 = tmp_path / "r2.json"
    assert main(["run", "--attack", "ours", "--defense", "jitter", *TINY, "--out", str(out2)]) == 0
    r2 = json.loads(out2.read_text())
    assert r2["victim"]["cached"] is True
    for key in ("acc", "clo", "fidelity", "cc_ratio", "exit_accuracy"):
        assert r2["scores"][key] == s[key]


def test_list(capsys):
    assert main(["list", "--options"]) == 0
    out = capsys.readouterr().out
    for name in ("ours", "jitter", "padding", "rounding", "none", "sdn-tiny", "synthetic-ood"):
        assert name in out
    assert "size = 1.0" in out


@pytest.mark.parametrize("argv, message", [
    (["run", "--attack", "nope"], "unknown attack 'nope'"),
    (["run", "--defense", "jiter"], "did you mean 'jitter'"),
    (["run", "--victim", "sdn-tny"], "did you mean 'sdn-tiny'"),
    (["run", "--defense-opt", "size=-3", "--defense", "jitter"], "size must be >= 0"),
    (["run", "--budget", "50"], "needs a budget of at least"),
    (["run", "--budget", "many"], "invalid int value"),
    (["run", "--timing", "psychic"], "invalid choice"),
    (["run", "--attack-opt", "epochs"], "key=value"),
    (["run", "--attack-opt", "min_z=-1"], "min_z >= 0"),
    (["run", "--device", "cuda:7"], "cuda"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_is_one_line(argv, message, capsys, tmp_path):
    out = tmp_path / "never.json"
    assert main([*argv, "--out", str(out)] if argv[0] == "run" else argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_corrupt_cached_victim_is_one_line(tmp_path):
    env = dict(os.environ, STEALBENCH_CACHE=str(tmp_path))
    from benchmark.data import TASKS, DataRequest
    from benchmark.plugins import VICTIMS
    from benchmark.zoo import victim_key

    spec = VICTIMS["sdn-tiny"](epochs=1)
    key = victim_key(spec, TASKS["synthetic"](DataRequest(tmp_path)), 0)
    (tmp_path / "victims").mkdir()
    (tmp_path / "victims" / f"{key}.pt").write_bytes(b"not a checkpoint")
    proc = subprocess.run([sys.executable, "-m", "benchmark", "run", *TINY, "--out", str(tmp_path / "x.json")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "is unreadable" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1
    assert not (tmp_path / "x.json").exists()
