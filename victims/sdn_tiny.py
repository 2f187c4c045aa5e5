"""sdn-tiny: the embedded default victim, a small SDN-style CNN with evenly placed exits.

Eight 3x3 conv blocks (BN, ReLU; stride 2 into 16x16, 8x8 and 4x4), SDN heads (mixed pooling +
linear), trained on the embedded synthetic task in well under a minute on 2 CPU cores.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from benchmark.api.victim import Normalize
from benchmark.plugins import VICTIMS
from victims._sdn import SDNSpec

WIDTHS = (16, 24, 24, 32, 32, 48, 64, 64)
STRIDES = (1, 2, 1, 2, 1, 1, 2, 1)


def conv_block(cin: int, cout: int, stride: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


@VICTIMS.register("sdn-tiny")
@dataclass(frozen=True)
class SDNTiny(SDNSpec):
    """Small multi-exit CNN; 4 exits evenly spaced by compute unless ``exits`` says otherwise."""

    head_pool = 2

    exits: int = 4
    epochs: int = 8
    lr: float = 3e-3
    optimizer: str = "adam"
    weight_decay: float = 1e-4

    def backbone(self, input_shape, num_classes):
        cin = input_shape[0]
        pairs = []
        for i, (w, s) in enumerate(zip(WIDTHS, STRIDES)):
            block = conv_block(cin, w, s)
            if i == 0:
                block = nn.Sequential(Normalize(), block)
            pairs.append((block, w))
            cin = w
        return pairs
