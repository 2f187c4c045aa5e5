"""``python -m benchmark victims info NAME --dataset D [--json]``: a victim's exits and their cost.

Builds the (untrained) victim for the dataset's input shape and class count and measures, with
``torch.utils.flop_counter.FlopCounterMode``, the cumulative FLOPs of one sample's early-exit path
to each exit (internal classifiers on the way included). FLOPs count 2 per multiply-add; both
are reported.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmark.api.victim import MultiExitNet
from benchmark.data import TASKS, DataRequest
from benchmark.datasets.vision import DATASET_SHAPES
from benchmark.options import build_plugin, plugin_options
from benchmark.paths import data_dir
from benchmark.plugins import VICTIMS


def dataset_shape(dataset: str) -> tuple[tuple[int, ...], int]:
    """(input shape, number of classes) of a task, without loading it when it is a known one."""
    if dataset in DATASET_SHAPES:
        shape, classes = DATASET_SHAPES[dataset]
        return tuple(shape), classes
    task = TASKS.get(dataset)(DataRequest(root=data_dir()))  # unknown names: "did you mean"
    return task.input_shape, task.num_classes


@torch.no_grad()
def backbone_flops(net: MultiExitNet) -> int:
    """FLOPs of the plain network: every stage and the final classifier, no internal classifier."""
    was = net.training
    net.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        h = torch.zeros(1, *net.input_shape, device=net.thresholds.device)
        for stage in net.stages:
            h = stage(h)
        net.heads[-1](h)
    net.train(was)
    return int(counter.get_total_flops())


@torch.no_grad()
def _stage_info(net: MultiExitNet) -> tuple[list[int], list[str]]:
    """Cumulative block count and output feature-map shape of every stage."""
    was = net.training
    net.eval()
    h = torch.zeros(1, *net.input_shape, device=net.thresholds.device)
    blocks, shapes, count = [], [], 0
    for stage in net.stages:
        h = stage(h)
        count += len(stage) if isinstance(stage, torch.nn.Sequential) else 1
        blocks.append(count)
        shapes.append("x".join(str(d) for d in h.shape[1:]))
    net.train(was)
    return blocks, shapes


def victim_summary(name: str, dataset: str, options: dict[str, str]) -> dict[str, Any]:
    """The facts ``victims info`` prints, as a JSON-ready dict."""
    spec = build_plugin(VICTIMS.get(name), options, "victim")
    shape, classes = dataset_shape(dataset)
    torch.manual_seed(0)
    net = spec.build(classes, shape)
    flops = net.exit_flops()
    blocks, features = _stage_info(net)
    total = flops[-1]
    return {
        "victim": name,
        "dataset": dataset,
        "options": plugin_options(spec),
        "input_shape": list(shape),
        "num_classes": classes,
        "num_exits": net.num_exits,
        "exit_flops": flops,
        "exit_macs": [f // 2 for f in flops],
        "exit_fractions": [f / total for f in flops],
        "exit_blocks": blocks,
        "exit_features": features,
        "num_blocks": blocks[-1],
        "total_flops": total,
        "backbone_flops": backbone_flops(net),
        "params": sum(p.numel() for p in net.parameters()),
    }


def victims_info(name: str, dataset: str, options: dict[str, str], as_json: bool) -> str:
    """The text ``victims info`` prints: a table of exits, or (``as_json``) one JSON object whose
    ``exit_flops`` is the list of cumulative FLOPs to each exit."""
    info = victim_summary(name, dataset, options)
    if as_json:
        return json.dumps(info, indent=2)
    import pandas as pd

    rows = [{"exit": k + 1,
             "after block": f"{b}/{info['num_blocks']}",
             "features": feat,
             "MFLOPs": f / 1e6,
             "M mult-adds": m / 1e6,
             "% of total": 100 * frac}
            for k, (b, feat, f, m, frac) in enumerate(zip(info["exit_blocks"], info["exit_features"],
                                                           info["exit_flops"], info["exit_macs"],
                                                           info["exit_fractions"]))]
    table = pd.DataFrame(rows).to_markdown(index=False, floatfmt=".1f")
    shape = "x".join(map(str, info["input_shape"]))
    head = (f"{name} on {dataset}: input {shape}, {info['num_classes']} classes, {info['num_exits']} exits, "
            f"{info['params'] / 1e6:.2f}M parameters\n"
            f"to the final exit: {info['total_flops'] / 1e6:.1f} MFLOPs = {info['total_flops'] / 2e6:.1f}M "
            f"multiply-adds (backbone alone, no internal classifiers: {info['backbone_flops'] / 1e6:.1f} MFLOPs); "
            f"cumulative FLOPs of one sample's early-exit path, FlopCounterMode, 2 FLOPs per multiply-add")
    return f"{head}\n\n{table}"
