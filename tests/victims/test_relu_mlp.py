"""relu-mlp victim: options, random and trained weights, the float64 raw-output oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.errors import BudgetExceeded, ConfigError
from benchmark.options import build_plugin
from benchmark.plugins import VICTIMS
from victims.relu_mlp import MLPOracle, ReLUMLPSpec, image_shape, parse_layers


def test_registered_with_kind_and_string_options():
    cls = VICTIMS["relu-mlp"]
    assert cls.kind == "relu-mlp"
    spec = build_plugin(cls, {"layers": "20-10-10-1", "seed": "3", "bias_std": "0.2"}, "victim")
    assert spec.sizes == (20, 10, 10, 1) and spec.seed == 3 and spec.bias_std == 0.2


@pytest.mark.parametrize("text,sizes", [("10-5-5-1", (10, 5, 5, 1)), ("784-32x2-1", (784, 32, 32, 1)),
                                        (" 3-2-1 ", (3, 2, 1))])
def test_parse_layers(text, sizes):
    assert parse_layers(text) == sizes


@pytest.mark.parametrize("bad", ["10-5", "a-b-c", "10--1", "10-0-1", "", "10-5-5-1.5", "1000000-2-1"])
def test_bad_layers_is_a_one_line_config_error(bad):
    with pytest.raises(ConfigError) as err:
        build_plugin(VICTIMS["relu-mlp"], {"layers": bad}, "victim")
    assert "\n" not in str(err.value) and "layer" in str(err.value)


@pytest.mark.parametrize("opts", [{"init": "pretrained"}, {"bias_std": "-1"}, {"epochs": "0"},
                                  {"init": "trained", "layers": "10-5-1"}, {"seed": "-2"}])
def test_bad_options(opts):
    with pytest.raises(ConfigError):
        build_plugin(VICTIMS["relu-mlp"], opts, "victim")


def test_random_weights_follow_the_seed():
    a = ReLUMLPSpec(layers="10-5-5-1").build(0).net.parameters_numpy()[0]
    b = ReLUMLPSpec(layers="10-5-5-1").build(0).net.parameters_numpy()[0]
    c = ReLUMLPSpec(layers="10-5-5-1", seed=1).build(0).net.parameters_numpy()[0]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    assert ReLUMLPSpec(layers="10-5-5-1", seed=1).weight_seed(7) == 1
    assert ReLUMLPSpec(layers="10-5-5-1").weight_seed(7) == 7


def test_oracle_answers_raw_float64_outputs_and_counts():
    victim = ReLUMLPSpec(layers="10-5-5-2").build(0)
    oracle = MLPOracle(victim.net, budget=10)
    x = torch.randn(4, 10, dtype=torch.float64)
    r = oracle.query(x)
    assert r.probs.dtype == torch.float64 and r.probs.shape == (4, 2)
    assert r.latency.dtype == torch.float64 and torch.all(r.latency == 0)
    with torch.no_grad():
        ref = victim.net(x)
    assert torch.allclose(r.probs, ref, rtol=1e-13, atol=1e-13)  # raw outputs, no softmax
    assert oracle.used == 4
    bb = oracle.black_box()
    bb.query(x[:3])
    assert oracle.used == 7 and bb.remaining == 3
    with pytest.raises(BudgetExceeded):
        bb.query(x)
    assert oracle.used == 7  # a refused batch is not answered
    assert not hasattr(bb, "net") and not hasattr(bb, "_weights")


def test_image_shape_for_trained_inputs():
    assert image_shape(3072) == (3, 32) and image_shape(784) == (1, 28) and image_shape(48) == (3, 4)
    with pytest.raises(ConfigError):
        image_shape(10)


def test_trained_victim_on_the_embedded_task():
    spec = ReLUMLPSpec(layers="48-8-1", init="trained", epochs=1, seed=0)
    victim = spec.build(0, "synthetic")
    assert victim.test_x is not None and victim.test_x.shape[1] == 48
    assert victim.test_x.dtype == torch.float64
    assert 0.0 <= victim.test_accuracy <= 1.0
    again = spec.build(0, "synthetic")  # cached
    assert again.cached
    assert all(np.array_equal(a, b) for a, b in zip(victim.net.parameters_numpy()[0],
                                                    again.net.parameters_numpy()[0]))
    with pytest.raises(ConfigError):
        ReLUMLPSpec(layers="48-8-3", init="trained", epochs=1).build(0, "synthetic")  # 3 outputs, 10 classes


def test_trained_victims_live_in_the_victim_zoo(capsys):
    """One zoo for both families: the same cache folder and cache step (``zoo.load_or_fit``), so a
    cached relu-mlp with non-finite weights is trained again, as a multi-exit victim would be."""
    from benchmark.paths import cache_dir

    spec = ReLUMLPSpec(layers="48-6-1", init="trained", epochs=1, seed=1)
    first = spec.build(0, "synthetic")
    (path,) = (cache_dir() / "victims").glob("relu-mlp-synthetic-s1-*.pt")
    assert path.with_suffix(".json").exists() and not first.cached
    state = torch.load(path, weights_only=True)
    state["linears.0.weight"][0, 0] = float("nan")
    torch.save(state, path)
    again = spec.build(0, "synthetic")
    assert not again.cached and "non-finite" in capsys.readouterr().err
    assert all(np.array_equal(a, b) for a, b in zip(first.net.parameters_numpy()[0], again.net.parameters_numpy()[0]))
