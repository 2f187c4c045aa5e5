"""Named configurations for the multi-exit stealing paper's experiments (``--preset NAME``).

``paper:<backbone>-<dataset>``: Table 1 (and Table 2), an SDN victim with SDN's own exits
(7 for VGG16 and ResNet56, 6 for MobileNet) trained on the dataset, queried with TinyImageNet; the
substitute uses the victim's backbone. The table's rows (Knock, Noise, ESA, Ours) are the attack,
chosen with ``--attack``.

``paper:table3:<victim>-by-<substitute>``: Table 3, cross-architecture stealing on CIFAR10 with
4-exit victims (``exits=4``) and the substitute backbone given.

``paper:cpu-fashionmnist``: the paper's Fashion-MNIST protocol at a size two CPU cores train in
minutes: the embedded ``sdn-tiny`` victim (4 exits) trained on a seeded 10,000-image subset of the
real training split (``train_subset``; scored on the full 10,000-image test set), the 5,000 real
MNIST digits as the task-irrelevant query set (in place of TinyImageNet, which needs a download),
``sdn-tiny`` as the substitute. Departures from the paper: victim size and training set, query set.

Backbones: vgg16, resnet56, mobilenet; datasets: cifar10, gtsrb, svhn, fashionmnist. A preset only
fills RunConfig settings; flags given next to it override them.
"""

from __future__ import annotations

import copy
import difflib
from typing import Any

from benchmark.errors import StealBenchError

BACKBONES = {"vgg16": "sdn-vgg16", "resnet56": "sdn-resnet56", "mobilenet": "sdn-mobilenet"}
DATASETS = ("cifar10", "gtsrb", "svhn", "fashionmnist")
#: digits and traffic signs change meaning when mirrored: SDN's random crop only
NO_FLIP = ("gtsrb", "svhn")
QUERY_DATA = "tinyimagenet"
CPU_PRESET = "paper:cpu-fashionmnist"
CPU_TRAIN_SUBSET = 10_000


def _victim_options(dataset: str, **extra: Any) -> dict[str, Any]:
    opts: dict[str, Any] = {"augment": "crop"} if dataset in NO_FLIP else {}
    opts.update(extra)
    return opts


def _build() -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    presets: dict[str, dict[str, Any]] = {}
    docs: dict[str, str] = {}
    for short, victim in BACKBONES.items():
        for dataset in DATASETS:
            name = f"paper:{short}-{dataset}"
            presets[name] = {"victim": victim, "dataset": dataset, "query_data": QUERY_DATA,
                             "substitute_arch": victim, "victim_options": _victim_options(dataset)}
            docs[name] = f"Table 1: SDN {short} victim (SDN exits) on {dataset}, TinyImageNet queries"
    for v_short, victim in BACKBONES.items():
        for s_short, substitute in BACKBONES.items():
            name = f"paper:table3:{v_short}-by-{s_short}"
            presets[name] = {"victim": victim, "dataset": "cifar10", "query_data": QUERY_DATA,
                             "substitute_arch": substitute, "victim_options": _victim_options("cifar10", exits=4)}
            docs[name] = (f"Table 3: 4-exit SDN {v_short} victim on cifar10 stolen with an SDN {s_short} "
                          f"substitute, TinyImageNet queries")
    presets[CPU_PRESET] = {"victim": "sdn-tiny", "dataset": "fashionmnist", "query_data": "mnist",
                           "substitute_arch": "sdn-tiny", "victim_options": {"train_subset": CPU_TRAIN_SUBSET}}
    docs[CPU_PRESET] = (f"Table 1 protocol on two CPU cores: sdn-tiny on {CPU_TRAIN_SUBSET:,} real Fashion-MNIST "
                        f"training images, real MNIST digits as queries")
    return presets, docs


#: preset name -> RunConfig settings
PRESETS, PRESET_DOCS = _build()


def apply_preset(name: str) -> dict[str, Any]:
    """The RunConfig settings of preset ``name`` (a fresh copy); unknown names are a one-line error."""
    if name in PRESETS:
        return copy.deepcopy(PRESETS[name])
    close = difflib.get_close_matches(name, PRESETS, n=1, cutoff=0.6)
    if close:
        raise StealBenchError(f"unknown preset {name!r}; did you mean {close[0]!r}?")
    raise StealBenchError(f"unknown preset {name!r}; presets are paper:<backbone>-<dataset> and "
                          f"paper:table3:<victim>-by-<substitute> with backbones {', '.join(BACKBONES)} "
                          f"and datasets {', '.join(DATASETS)}, and {CPU_PRESET}")
