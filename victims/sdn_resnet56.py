"""sdn-resnet56: SDN ResNet56 for 32x32 inputs (Kaya et al., ICML 2019, "Shallow-Deep Networks").

A 3x3 stem conv to 16 channels, then 3 stages x 9 basic residual blocks (two 3x3 convs, BN, ReLU)
with 16 / 32 / 64 channels at 32x32 / 16x16 / 8x8; the first block of stages 2 and 3 halves the
resolution and its shortcut is a 1x1 conv + BN, as in SDN's code. Final classifier: global average
pooling + linear. Each residual block is one block, so SDN's internal classifiers land where SDN
puts them: after blocks 4 and 8 of stage 1, 3 and 7 of stage 2, 2 and 6 of stage 3, at about
15/30/45/60/74/89% of the compute. 6 internal + final = 7 exits.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from benchmark.api.victim import Normalize
from benchmark.plugins import VICTIMS
from victims._sdn import SDNRecipe

STAGE_WIDTHS = (16, 32, 64)
BLOCKS_PER_STAGE = 9


class BasicBlock(nn.Module):
    """ResNet basic block: conv-BN-ReLU-conv-BN plus shortcut, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


@VICTIMS.register("sdn-resnet56")
@dataclass(frozen=True)
class SDNResNet56(SDNRecipe):
    """SDN ResNet56: stem + 27 residual blocks, 7 exits by default (``exits=n`` for n evenly spaced)."""

    weight_decay: float = 1e-4

    def backbone(self, input_shape, num_classes):
        width = STAGE_WIDTHS[0]
        stem = nn.Sequential(Normalize(), nn.Conv2d(input_shape[0], width, 3, 1, 1, bias=False),
                             nn.BatchNorm2d(width), nn.ReLU())
        pairs: list[tuple[nn.Module, int]] = [(stem, width)]
        cin = width
        for s, width in enumerate(STAGE_WIDTHS):
            for b in range(BLOCKS_PER_STAGE):
                stride = 2 if s > 0 and b == 0 else 1
                pairs.append((BasicBlock(cin, width, stride), width))
                cin = width
        return pairs
