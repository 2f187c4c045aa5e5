"""GPU path end to end (run with ``pytest -m gpu`` on a machine with an NVIDIA GPU)."""

import json

import pytest
import torch

from benchmark.cli import main

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")]


def test_cuda_run_measured_timing_and_nvml_energy(tmp_path):
    out = tmp_path / "gpu.json"
    assert main(["run", "--device", "cuda", "--timing", "measured", "--victim-opt", "epochs=2",
                 "--attack-opt", "epochs=2", "--budget", "2000", "--quiet", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    energy = r["scores"]["energy_j_per_sample"]
    assert r["scores"]["energy_source"] == "nvml", r["scores"]["energy_reason"]
    assert energy["victim"] > 0 and energy["stolen"] > 0
    assert r["environment"]["gpu"]
    assert r["scores"]["queries"] == 2000
