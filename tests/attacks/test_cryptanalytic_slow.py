"""Longer exact-extraction runs (``pytest -m slow``): the larger sizes of the issue, several seeds."""

from __future__ import annotations

import pytest

from benchmark.config import RunConfig
from benchmark.runner import run

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("layers,weights_seed,seed", [
    ("10-5-5-1", 1, 1), ("10-5-5-1", 2, 2),
    ("20-10-10-1", 0, 0), ("20-10-10-1", 2, 1),
    ("10-15-15-1", 0, 0), ("10-15-15-1", 1, 1),
    ("50-25-25-1", 0, 1), ("50-25-25-1", 1, 0),
])
def test_full_recovery(layers, weights_seed, seed):
    cfg = RunConfig(attack="cryptanalytic", victim="relu-mlp", seed=seed,
                    victim_options={"layers": layers, "seed": weights_seed})
    s = run(cfg, progress=False).scores
    assert s["neurons_recovered"] == 1.0
    assert s["max_weight_error_log2"] <= -30
    assert s["output_agreement"] == 1.0


def test_trained_victim_is_extracted():
    cfg = RunConfig(attack="cryptanalytic", victim="relu-mlp", dataset="synthetic",
                    victim_options={"layers": "48-16-16-1", "init": "trained", "epochs": 3})
    result = run(cfg, progress=False)
    s = result.scores
    assert "synthetic" in s["label_agreement_on"]
    assert s["label_agreement"] >= 0.99
    assert s["neurons_identified"] >= 0.9


def test_mnist_trained_784_4_4_1_is_extracted_exactly():
    """A ReLU net trained on real MNIST digits (odd vs even), 784 inputs: every neuron, exactly
    (about 20-50 s on one core)."""
    cfg = RunConfig(attack="cryptanalytic", victim="relu-mlp", dataset="mnist", seed=0,
                    victim_options={"layers": "784-4-4-1", "init": "trained", "seed": 0, "epochs": 20})
    result = run(cfg, progress=False)
    s = result.scores
    assert result.victim["test_accuracy"] >= 0.85
    assert "mnist test set (1000 inputs)" in s["label_agreement_on"]
    assert s["neurons_recovered"] == 1.0 and s["complete"]
    assert s["max_weight_error_log2"] <= -30
    assert s["output_agreement"] == 1.0 and s["label_agreement"] == 1.0
