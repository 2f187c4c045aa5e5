"""The SDN backbones (sdn-vgg16, sdn-resnet56, sdn-mobilenet): compute, exit placement, heads,
recipe options, and a short training + early-exit run of each on CPU."""

from __future__ import annotations

import time

import pytest
import torch

from benchmark.api.victim import ExitHead
from benchmark.data import Split
from benchmark.datasets.synthetic import make_task_split
from benchmark.errors import ConfigError
from benchmark.options import build_plugin
from benchmark.plugins import VICTIMS
from benchmark.training import exit_confidences
from victims._sdn import SDN_FRACTIONS, FlatHead, GlobalPoolHead
from victims._training import choose_thresholds, train_victim
from victims.sdn_vgg16 import VGGClassifier

SHAPE = (3, 32, 32)
NAMES = ("sdn-vgg16", "sdn-resnet56", "sdn-mobilenet")


# ---- analytic multiply-add counts, written out from the architectures (no model code) ----------

def conv_macs(cin, cout, k, hw_out, groups=1):
    return cin // groups * cout * k * k * hw_out * hw_out


def vgg16_macs(classes=10):
    widths = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    pool_after = {1, 3, 6, 9, 12}
    total, cin, hw = 0, 3, 32
    for i, w in enumerate(widths):
        total += conv_macs(cin, w, 3, hw)
        cin = w
        if i in pool_after:
            hw //= 2
    return total + 512 * 512 + 512 * 512 + 512 * classes


def resnet56_macs(classes=10):
    total, cin, hw = conv_macs(3, 16, 3, 32), 16, 32
    for s, w in enumerate((16, 32, 64)):
        for b in range(9):
            if s > 0 and b == 0:
                hw //= 2
                total += conv_macs(cin, w, 1, hw)  # projection shortcut
            total += conv_macs(cin, w, 3, hw) + conv_macs(w, w, 3, hw)
            cin = w
    return total + 64 * classes


def mobilenet_macs(classes=10):
    cfg = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    total, cin, hw = conv_macs(3, 32, 3, 32), 32, 32
    for cout, stride in cfg:
        hw //= stride
        total += conv_macs(cin, cin, 3, hw, groups=cin) + conv_macs(cin, cout, 1, hw)
        cin = cout
    return total + 1024 * classes


ANALYTIC = {"sdn-vgg16": vgg16_macs(), "sdn-resnet56": resnet56_macs(), "sdn-mobilenet": mobilenet_macs()}
#: the issue's figures (millions of multiply-adds at 32x32, 10 classes)
ISSUE_MMACS = {"sdn-vgg16": 313.7, "sdn-resnet56": 125.7, "sdn-mobilenet": 46.4}
#: blocks (1-based, stem excluded for ResNet/MobileNet) after which SDN's code puts its ICs
SDN_IC_BLOCKS = {"sdn-vgg16": [2, 4, 6, 7, 9, 10], "sdn-resnet56": [4, 8, 12, 16, 20, 24],
                 "sdn-mobilenet": [3, 5, 7, 9, 12]}
HAS_STEM = {"sdn-vgg16": False, "sdn-resnet56": True, "sdn-mobilenet": True}


@pytest.fixture(scope="module")
def nets():
    out = {}
    for name in NAMES:
        torch.manual_seed(0)
        out[name] = VICTIMS[name]().build(10, SHAPE)
    return out


def exit_blocks(net, stem: bool) -> list[int]:
    """1-based index of the block after which each internal exit sits."""
    ends = torch.tensor([len(s) for s in net.stages]).cumsum(0).tolist()
    return [e - 1 if stem else e for e in ends[:-1]]


def test_analytic_counts_match_the_issue():
    for name, macs in ANALYTIC.items():
        assert macs / 1e6 == pytest.approx(ISSUE_MMACS[name], rel=0.002)


@pytest.mark.parametrize("name", NAMES)
def test_total_flops_within_5_percent_of_analytic(nets, name):
    flops = nets[name].exit_flops()
    assert flops == sorted(flops) and len(set(flops)) == len(flops)
    total_macs = flops[-1] / 2  # FlopCounterMode counts 2 FLOPs per multiply-add
    assert abs(total_macs - ANALYTIC[name]) / ANALYTIC[name] < 0.05
    # the internal classifiers on the path are cheap: the path is within 1% of the bare backbone
    assert total_macs >= ANALYTIC[name] * 0.999
    assert total_macs <= ANALYTIC[name] * 1.01


@pytest.mark.parametrize("name", NAMES)
def test_default_exits_sit_where_sdn_puts_them(nets, name):
    net = nets[name]
    assert net.num_exits == len(SDN_IC_BLOCKS[name]) + 1
    assert exit_blocks(net, HAS_STEM[name]) == SDN_IC_BLOCKS[name]
    flops = net.exit_flops()
    fractions = [f / flops[-1] for f in flops[:-1]]
    if name == "sdn-mobilenet":  # SDN's MobileNet skips one of the six nominal positions
        assert fractions == pytest.approx([0.22, 0.36, 0.49, 0.68, 0.91], abs=0.01)
    else:
        assert fractions == pytest.approx(list(SDN_FRACTIONS), abs=0.04)


@pytest.mark.parametrize("name", NAMES)
def test_sdn_heads(nets, name):
    net = nets[name]
    h = torch.zeros(1, *SHAPE)
    net.eval()
    with torch.no_grad():
        for k, (stage, head) in enumerate(zip(net.stages, net.heads)):
            h = stage(h)
            if k < net.num_exits - 1:
                if min(h.shape[2:]) >= 4:
                    assert isinstance(head, ExitHead) and head.fc.in_features == h.shape[1] * 16
                else:
                    assert isinstance(head, FlatHead) and head.fc.in_features == h[0].numel()
            assert head(h).shape == (1, 10)
    final = net.heads[-1]
    if name == "sdn-vgg16":
        assert isinstance(final, VGGClassifier)
        widths = [m.out_features for m in final.modules() if isinstance(m, torch.nn.Linear)]
        assert widths == [512, 512, 10]
    else:
        assert isinstance(final, GlobalPoolHead)
    if name == "sdn-mobilenet":  # SDN's 5th IC sits on the 2x2 map after block 12: linear only
        assert isinstance(net.heads[4], FlatHead) and net.heads[4].fc.in_features == 1024 * 2 * 2


@pytest.mark.parametrize("name", NAMES)
def test_four_exits_evenly_spaced(name):
    net = VICTIMS[name](exits=4).build(10, SHAPE)
    assert net.num_exits == 4
    flops = net.exit_flops()
    fractions = [f / flops[-1] for f in flops]
    assert fractions[:3] == pytest.approx([0.25, 0.5, 0.75], abs=0.06)


@pytest.mark.parametrize("n", [3, 5, 6])
def test_three_to_six_exits(n):
    net = VICTIMS["sdn-resnet56"](exits=n).build(10, SHAPE)
    assert net.num_exits == n
    assert len(net(torch.zeros(2, *SHAPE))) == n


def test_other_class_counts_and_grayscale_inputs():
    net = VICTIMS["sdn-mobilenet"]().build(43, (1, 32, 32))
    outs = net(torch.rand(2, 1, 32, 32))
    assert [o.shape for o in outs] == [(2, 43)] * net.num_exits


def test_recipe_options():
    cls = VICTIMS["sdn-resnet56"]
    spec = build_plugin(cls, {"milestones": "0.5,0.75", "augment": "crop", "epochs": "3"}, "victim")
    assert spec.milestones == (0.5, 0.75) and spec.augment == "crop" and spec.epochs == 3
    defaults = cls()
    assert (defaults.lr, defaults.momentum, defaults.epochs, defaults.optimizer) == (0.1, 0.9, 100, "sgd")
    assert defaults.weight_decay == 1e-4 and VICTIMS["sdn-vgg16"]().weight_decay == 5e-4
    assert defaults.milestones == (0.35, 0.60, 0.85)
    with pytest.raises(ConfigError, match="augment"):
        build_plugin(cls, {"augment": "mixup"}, "victim")
    with pytest.raises(ConfigError, match="milestones"):
        build_plugin(cls, {"milestones": "0.8,0.2"}, "victim")
    with pytest.raises(ConfigError, match="cannot place"):
        VICTIMS["sdn-mobilenet"](exits=20).build(10, SHAPE)


def _crops(padded, h, w):
    return [padded[:, oy:oy + h, ox:ox + w] for oy in range(9) for ox in range(9)]


def test_augmentation_is_crop_and_flip():
    torch.manual_seed(1)
    x = torch.rand(6, 3, 32, 32)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    spec = VICTIMS["sdn-vgg16"]
    assert torch.equal(spec(augment="none").augment_batch(x), x)
    out = spec(augment="crop").augment_batch(x)
    assert out.shape == x.shape
    for b in range(len(x)):
        assert any(torch.equal(out[b], c) for c in _crops(padded[b], 32, 32))
    torch.manual_seed(2)
    out = spec(augment="crop+flip").augment_batch(x)
    flipped = 0
    for b in range(len(x)):
        plain = any(torch.equal(out[b], c) for c in _crops(padded[b], 32, 32))
        mirrored = any(torch.equal(out[b].flip(2), c) for c in _crops(padded[b], 32, 32))
        assert plain or mirrored
        flipped += mirrored and not plain
    assert 0 < flipped < len(x)


def test_train_victim_uses_the_recipe(monkeypatch):
    """train_victim passes the spec's milestones to the step schedule and augments each batch."""
    import victims._training as training

    seen = {}

    def fake_fit(model, n, batch_size, epochs, optimizer, step_loss, seed, desc, progress=True,
                 milestones=(0.5, 0.75)):
        seen["milestones"] = milestones
        seen["lr"] = optimizer.param_groups[0]["lr"]
        seen["momentum"] = optimizer.param_groups[0]["momentum"]
        step_loss(torch.arange(4), 0)

    calls = []
    spec = VICTIMS["sdn-mobilenet"](epochs=2, exits=3)
    original = type(spec).augment_batch
    monkeypatch.setattr(type(spec), "augment_batch", lambda self, x: calls.append(x.shape) or original(self, x))
    monkeypatch.setattr(training, "fit", fake_fit)
    net = spec.build(10, SHAPE)
    split = make_task_split(8, torch.Generator().manual_seed(0))
    training.train_victim(net, spec, split, seed=0, device="cpu", progress=False)
    assert seen == {"milestones": (0.35, 0.60, 0.85), "lr": 0.1, "momentum": 0.9}
    assert calls == [(4, 3, 32, 32)]


@pytest.mark.parametrize("name", NAMES)
def test_short_training_then_early_exit(name):
    """A few SGD steps of the real recipe on CPU, thresholds by the owner's rule, early exit."""
    gen = torch.Generator().manual_seed(0)
    train, val = make_task_split(32, gen), make_task_split(32, gen)
    spec = VICTIMS[name](epochs=1, batch_size=16, exits=4)
    torch.manual_seed(0)
    net = spec.build(10, SHAPE)
    before = [p.detach().clone() for p in net.parameters()]
    start = time.perf_counter()
    train_victim(net, spec, train, seed=0, device="cpu", progress=False)
    assert time.perf_counter() - start < 60
    changed = sum(not torch.equal(a, b.detach()) for a, b in zip(before, net.parameters()))
    assert changed > len(before) // 2
    assert not net.training
    conf, pred = exit_confidences(net, val, "cpu")
    assert conf.shape == (32, 4) and torch.isfinite(conf).all()
    net.set_thresholds(choose_thresholds(conf, pred == val.y[:, None]))
    out = net.early_exit(val.images())
    assert out.logits.shape == (32, 10) and out.exits.min() >= 0 and out.exits.max() <= 3
    full = net(val.images())  # the early-exit logits are those of the exit each sample left at
    for i in range(32):
        assert torch.allclose(out.logits[i], full[int(out.exits[i])][i], atol=1e-4)
    # forcing every sample to one exit gives that exit's logits
    net.set_thresholds(net.forced_exit_thresholds(1))
    forced = net.early_exit(val.images())
    assert (forced.exits == 1).all() and torch.allclose(forced.logits, full[1], atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_one_epoch_on_synthetic_through_the_zoo(name, tmp_path, monkeypatch):
    """The full `--epochs 1` victim path on the embedded task (10k images): minutes on CPU."""
    from benchmark.data import DataRequest
    from benchmark.datasets.synthetic import load_synthetic
    from benchmark.zoo import load_or_train

    monkeypatch.setenv("STEALBENCH_CACHE", str(tmp_path))
    task = load_synthetic(DataRequest(tmp_path))
    spec = VICTIMS[name](epochs=1)
    entry = load_or_train(spec, task, seed=0, progress=False)
    assert not entry.cached and entry.path.exists()
    print(f"{name}: one CPU epoch on synthetic + thresholds in {entry.train_seconds:.0f} s")
    out = entry.model.early_exit(task.test.images(slice(0, 256)))
    assert out.exits.max() < entry.model.num_exits
    again = load_or_train(spec, task, seed=0, progress=False)
    assert again.cached and torch.equal(again.model.thresholds, entry.model.thresholds)
    assert isinstance(task.train, Split)


# ---- `victims info` -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_victims_info_json(name):
    import json

    from benchmark.victims_info import victims_info

    info = json.loads(victims_info(name, "cifar10", {}, as_json=True))
    assert info["victim"] == name and info["dataset"] == "cifar10"
    assert info["input_shape"] == [3, 32, 32] and info["num_classes"] == 10
    flops = info["exit_flops"]
    assert len(flops) == info["num_exits"] == len(SDN_IC_BLOCKS[name]) + 1
    assert all(isinstance(f, int) for f in flops) and flops == sorted(flops)
    assert info["total_flops"] == flops[-1] and info["exit_macs"] == [f // 2 for f in flops]
    assert abs(flops[-1] / 2 - ANALYTIC[name]) / ANALYTIC[name] < 0.05
    assert info["backbone_flops"] / 2 == pytest.approx(ANALYTIC[name], rel=1e-3)
    assert info["exit_fractions"][-1] == 1.0
    nominal = [0.22, 0.36, 0.49, 0.68, 0.91] if name == "sdn-mobilenet" else list(SDN_FRACTIONS)
    assert info["exit_fractions"][:-1] == pytest.approx(nominal, abs=0.04)
    assert info["params"] > 0


def test_victims_info_table_options_and_errors():
    from benchmark.errors import StealBenchError
    from benchmark.victims_info import victims_info

    text = victims_info("sdn-mobilenet", "gtsrb", {"exits": "4"}, as_json=False)
    lines = text.splitlines()
    assert lines[0].startswith("sdn-mobilenet on gtsrb: input 3x32x32, 43 classes, 4 exits")
    assert "M mult-adds" in text and text.count("\n|") == 2 + 4  # header, rule, 4 exit rows
    with pytest.raises(StealBenchError, match="did you mean 'sdn-vgg16'"):
        victims_info("sdn-vgg61", "cifar10", {}, as_json=False)
    with pytest.raises(StealBenchError, match="did you mean 'cifar10'"):
        victims_info("sdn-vgg16", "cifar01", {}, as_json=False)
    with pytest.raises(StealBenchError, match="has no option 'exit'"):
        victims_info("sdn-vgg16", "cifar10", {"exit": "4"}, as_json=False)
