"""sdn-vgg16: SDN VGG16-BN for 32x32 inputs (Kaya et al., ICML 2019, "Shallow-Deep Networks").

Thirteen 3x3 conv layers (BN, ReLU; 2x2 max pooling after layers 2, 4, 7, 10 and 13) with widths
64-64-128-128-256-256-256-512-512-512-512-512-512, then the classifier FC 512 - FC 512 - classes
(ReLU and dropout 0.5 between). Each conv layer (with its pooling) is one block, so SDN's internal
classifiers land where SDN puts them: after conv layers 2, 4, 6, 7, 9 and 10, at about
13/31/49/61/79/91% of the compute (SDN aims at 15/30/45/60/75/90%). 6 internal + final = 7 exits.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from benchmark.api.victim import Normalize
from benchmark.plugins import VICTIMS
from victims._sdn import SDNRecipe


class VGGClassifier(nn.Module):
    """VGG's final classifier on the flattened last feature map: FC - FC - classes."""

    def __init__(self, features: int, widths: tuple[int, ...], num_classes: int, dropout: float = 0.5) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        for width in widths:
            layers += [nn.Linear(features, width), nn.ReLU(), nn.Dropout(dropout)]
            features = width
        layers.append(nn.Linear(features, num_classes))
        self.layers = nn.Sequential(*layers)
        for m in self.layers:
            if isinstance(m, nn.Linear):  # SDN's VGG initialisation of the FC layers
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


VGG16_WIDTHS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
VGG16_POOL_AFTER = (1, 3, 6, 9, 12)  # 0-based conv layers followed by 2x2 max pooling


@VICTIMS.register("sdn-vgg16")
@dataclass(frozen=True)
class SDNVGG16(SDNRecipe):
    """SDN VGG16-BN: 13 conv blocks, 7 exits by default (``exits=n`` for n evenly spaced)."""

    weight_decay: float = 5e-4
    fc_widths: tuple[int, ...] = (512, 512)

    def backbone(self, input_shape, num_classes):
        cin = input_shape[0]
        pairs = []
        for i, width in enumerate(VGG16_WIDTHS):
            layers: list[nn.Module] = [Normalize()] if i == 0 else []
            layers += [nn.Conv2d(cin, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            if i in VGG16_POOL_AFTER:
                layers.append(nn.MaxPool2d(2))
            pairs.append((nn.Sequential(*layers), width))
            cin = width
        return pairs

    def final_head(self, shape, num_classes):
        c, h, w = shape
        return VGGClassifier(c * h * w, self.fc_widths, num_classes)
