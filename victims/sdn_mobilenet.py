"""sdn-mobilenet: SDN MobileNet (v1, CIFAR variant) for 32x32 inputs (Kaya et al., ICML 2019).

A 3x3 stem conv to 32 channels (stride 1), then 13 depthwise-separable blocks (3x3 depthwise conv,
BN, ReLU, 1x1 pointwise conv, BN, ReLU) with widths 64, 128/2, 128, 256/2, 256, 512/2, 512 x 5,
1024/2, 1024 ("/2": stride 2 in the depthwise conv), then global average pooling + linear.
Each depthwise-separable block is one block. SDN's code puts 5 internal classifiers on this
network, after blocks 3, 5, 7, 9 and 12; at 32x32 they sit at about 22/36/49/68/91% of the compute,
and ``exit_fractions`` below reproduces exactly that placement. 5 internal + final = 6 exits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from benchmark.api.victim import Normalize
from benchmark.plugins import VICTIMS
from victims._sdn import SDNRecipe

STEM_WIDTH = 32
#: (out channels, stride) of the 13 depthwise-separable blocks
BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1),
          (512, 1), (512, 1), (1024, 2), (1024, 1))


def separable_block(cin: int, cout: int, stride: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU(),
        nn.Conv2d(cin, cout, 1, 1, 0, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


@VICTIMS.register("sdn-mobilenet")
@dataclass(frozen=True)
class SDNMobileNet(SDNRecipe):
    """SDN MobileNet: stem + 13 depthwise-separable blocks, 6 exits by default (``exits=n``: n evenly)."""

    # compute fractions of SDN's IC positions (after separable blocks 3, 5, 7, 9, 12) at 32x32
    exit_fractions: ClassVar[tuple[float, ...] | None] = (0.22, 0.36, 0.49, 0.68, 0.91)

    weight_decay: float = 1e-4

    def backbone(self, input_shape, num_classes):
        stem = nn.Sequential(Normalize(), nn.Conv2d(input_shape[0], STEM_WIDTH, 3, 1, 1, bias=False),
                             nn.BatchNorm2d(STEM_WIDTH), nn.ReLU())
        pairs: list[tuple[nn.Module, int]] = [(stem, STEM_WIDTH)]
        cin = STEM_WIDTH
        for cout, stride in BLOCKS:
            pairs.append((separable_block(cin, cout, stride), cout))
            cin = cout
        return pairs
