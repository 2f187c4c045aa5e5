"""examples/art_knockoff.py: ART's KnockoffNets, an attack written elsewhere, steals from a real
``serve`` process over loopback and its substitute is scored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from test_serve import ROOT, served

pytest.importorskip("art", reason="adversarial-robustness-toolbox (the dev extra) is not installed")

EXAMPLE = ROOT / "examples" / "art_knockoff.py"


def test_art_knockoff_example_steals_from_serve_and_is_scored(tmp_path):
    budget = 96
    with served(tmp_path, defense="none", budget=budget) as (proc, url):
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
        bad = subprocess.run([sys.executable, str(EXAMPLE), "--url", url, "--queries", str(budget + 1)], cwd=ROOT,
                             env=env, capture_output=True, text=True, timeout=300)
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr[-3000:]
        assert f"--queries must be from 1 to the {budget} queries left" in bad.stderr
        t0 = time.monotonic()
        ex = subprocess.run([sys.executable, str(EXAMPLE), "--url", url, "--epochs", "2", "--batch", "32"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        seconds = time.monotonic() - t0
        assert ex.returncode == 0, ex.stderr[-3000:]
        answer = json.loads(ex.stdout.strip().splitlines()[-1])
        assert proc.wait(timeout=120) == 0
    r = json.loads((tmp_path / "result.json").read_text())
    assert r["scores"] == answer["scores"] and r["scores"]["queries"] == budget  # the whole budget, by default
    assert 0 <= r["scores"]["acc"] <= 1 and 0 <= r["scores"]["clo"] <= 1
    assert r["attack"]["name"] == "art-knockoff" and r["config"]["attack"] == "external"
    d = r["attack"]["details"]
    assert d["library"] == "adversarial-robustness-toolbox" and d["method"] == "KnockoffNets"
    assert d["queries"] == budget and d["service_accounts"]["opened"] == 1
    assert seconds < 240
    shown = {k: r["scores"][k] for k in ("acc", "clo", "fidelity")}
    print(f"art_knockoff: {seconds:.1f} s, scores {json.dumps(shown)}")

