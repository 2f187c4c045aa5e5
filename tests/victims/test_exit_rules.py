"""Victim option exit_rule: balanced per-exit thresholds, the per-class exit policy, bad values."""

import pytest
import torch

from benchmark.errors import ConfigError
from benchmark.plugins import VICTIMS
from victims._sdn import PerClassExitNet
from victims._training import balanced_thresholds, class_first_exits


def exits_of(conf, t):
    hit = conf >= t[None, :]
    hit[:, -1] = True
    return hit.to(torch.int8).argmax(1)


def test_balanced_thresholds_give_the_asked_mix():
    gen = torch.Generator().manual_seed(0)
    conf = torch.rand(1000, 4, generator=gen)
    hist = torch.bincount(exits_of(conf, balanced_thresholds(conf)), minlength=4)
    assert hist.tolist() == [250, 250, 250, 250]
    hist = torch.bincount(exits_of(conf, balanced_thresholds(conf, (0.1, 0.2, 0.3, 0.4))), minlength=4)
    assert hist.tolist() == [100, 200, 300, 400]


def test_class_first_exits_rank_classes_by_first_exit_accuracy():
    labels = torch.arange(8).repeat(10)
    correct = torch.zeros(80, 4, dtype=torch.bool)
    correct[:, 0] = labels >= 4  # classes 4-7 easy at exit 0
    first = class_first_exits(correct, 8, labels)
    assert sorted(first[4:].tolist()) == [0, 0, 1, 1] and sorted(first[:4].tolist()) == [2, 2, 3, 3]


def test_per_class_net_holds_back_classes_and_still_forces_exits():
    torch.manual_seed(0)
    spec = VICTIMS["sdn-tiny"](exit_rule="per-class")
    net = spec.build(10, (3, 32, 32)).eval()
    assert isinstance(net, PerClassExitNet) and "first_exit" in net.state_dict()
    x = torch.rand(64, 3, 32, 32)
    net.set_thresholds([0.0, 0.0, 0.0, 0.0])  # every exit would fire on confidence alone
    net.first_exit.fill_(3)  # ... but no class may leave before the last exit
    assert net.early_exit(x).exits.tolist() == [3] * 64
    net.first_exit.fill_(1)
    assert net.early_exit(x).exits.tolist() == [1] * 64
    net.set_thresholds(net.forced_exit_thresholds(0))  # timing / FLOP counting ignore the classes
    assert net.early_exit(x).exits.tolist() == [0] * 64
    assert len(net.exit_flops()) == 4
    with pytest.raises(ConfigError, match="exit_rule must be one of owner, balanced, per-class"):
        VICTIMS["sdn-tiny"](exit_rule="global")


def test_default_rule_keeps_the_zoo_key():
    from pathlib import Path

    from benchmark.data import TASKS, DataRequest
    from benchmark.zoo import victim_key

    task = TASKS["synthetic"](DataRequest(Path("unused")))
    assert victim_key(VICTIMS["sdn-tiny"](), task, 0) == victim_key(VICTIMS["sdn-tiny"](exit_rule="owner"), task, 0)
    assert victim_key(VICTIMS["sdn-tiny"](), task, 0) != victim_key(VICTIMS["sdn-tiny"](exit_rule="balanced"), task, 0)


def test_exit_mix_is_checked():
    assert VICTIMS["sdn-tiny"](exit_rule="balanced", exit_mix=(0.1, 0.2, 0.3, 0.4)).exit_mix == (0.1, 0.2, 0.3, 0.4)
    with pytest.raises(ConfigError, match="exit_mix must be non-negative shares summing to 1"):
        VICTIMS["sdn-tiny"](exit_rule="balanced", exit_mix=(0.5, 0.6, 0.0, 0.0))
