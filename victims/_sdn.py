"""What the SDN victims share (Kaya et al., ICML 2019, "Shallow-Deep Networks"): ``SDNSpec``, a
victim family trained SDN-style with the owner's threshold rule (``victims/_training.py``), and
``SDNRecipe``, the full-size backbones' recipe (``sdn-vgg16``, ``sdn-resnet56``,
``sdn-mobilenet``): SDN's training options and exit heads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from benchmark.api.victim import ExitHead, MultiExitNet, VictimSpec
from benchmark.data import TaskData
from benchmark.errors import ConfigError
from benchmark.training import exit_confidences
from victims._training import (
    EXIT_RULES,
    PER_CLASS_CONFIDENCE,
    balanced_thresholds,
    choose_thresholds,
    class_first_exits,
    train_victim,
)


class PerClassExitNet(MultiExitNet):
    """A MultiExitNet whose exit k also needs the class it predicts there to be allowed at k:
    ``first_exit[c]`` is the earliest exit class c may leave at (``exit_rule=per-class``). A
    negative threshold (``forced_exit_thresholds``, timing and FLOP counting) fires regardless."""

    def __init__(self, net: MultiExitNet) -> None:
        super().__init__(list(net.stages), list(net.heads), net.input_shape, net.num_classes)
        self.register_buffer("first_exit", torch.zeros(net.num_classes, dtype=torch.long))

    def exit_mask(self, k: int, probs: Tensor) -> Tensor:
        conf, pred = probs.max(dim=1)
        done = conf >= self.thresholds[k]
        if float(self.thresholds[k]) >= 0:
            done &= self.first_exit[pred] <= k
        return done


@dataclass(frozen=True)
class SDNSpec(VictimSpec):
    """A multi-exit victim trained SDN-style; thresholds by the owner's rule on validation data.

    ``exit_rule`` (the owner's output strategy, chosen on validation data after training; the
    weights do not depend on it): ``owner`` (default; ``victims._training.choose_thresholds``:
    per-exit thresholds keeping the final exit's accuracy), ``balanced`` (per-exit thresholds aimed
    at an equal share of samples per exit, or at the shares ``exit_mix``, ``balanced_thresholds``)
    or ``per-class`` (exit k fires when its confidence is >= 0.5 and the class it predicts may
    leave at k: classes ranked by the first exit's accuracy and cut into K groups, group g
    leaving at exit g or later, ``class_first_exits``). Mixes measured in docs/victims.md.
    """

    exit_rule: str = "owner"
    #: ``exit_rule=balanced``: the exit mix to aim at, one share per exit (empty: equal shares)
    exit_mix: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.exit_rule not in EXIT_RULES:
            raise ConfigError(f"victim {self.name!r}: exit_rule must be one of {', '.join(EXIT_RULES)}, "
                              f"got {self.exit_rule!r}")
        if self.exit_mix and (any(m < 0 for m in self.exit_mix) or abs(sum(self.exit_mix) - 1) > 1e-6):
            raise ConfigError(f"victim {self.name!r}: exit_mix must be non-negative shares summing to 1, "
                              f"got {self.exit_mix}")

    def build(self, num_classes: int, input_shape: tuple[int, ...], exits: int | None = None) -> MultiExitNet:
        net = super().build(num_classes, input_shape, exits)
        return PerClassExitNet(net) if self.exit_rule == "per-class" else net

    def train(self, model: MultiExitNet, task: TaskData, seed: int, device: str, progress: bool = True) -> None:
        train_victim(model, self, task.train, seed, device, progress)
        self.set_exit_rule(model, task, device)

    def set_exit_rule(self, model: MultiExitNet, task: TaskData, device: str) -> None:
        """The owner's output strategy on the validation set (option ``exit_rule``)."""
        conf, pred = exit_confidences(model, task.val, device)
        correct = pred == task.val.y[:, None]
        if self.exit_rule == "balanced":
            if self.exit_mix and len(self.exit_mix) != model.num_exits:
                raise ConfigError(f"victim {self.name!r}: exit_mix has {len(self.exit_mix)} shares for "
                                  f"{model.num_exits} exits")
            model.set_thresholds(balanced_thresholds(conf, self.exit_mix or None))
        elif self.exit_rule == "per-class":
            first = class_first_exits(correct, model.num_classes, task.val.y)
            model.first_exit.copy_(first.to(model.first_exit.device))
            model.set_thresholds([PER_CLASS_CONFIDENCE] * (model.num_exits - 1) + [0.0])
        else:
            model.set_thresholds(choose_thresholds(conf, correct))


#: SDN's nominal internal-classifier positions, as fractions of the backbone's compute
SDN_FRACTIONS = (0.15, 0.30, 0.45, 0.60, 0.75, 0.90)
AUGMENTS = ("none", "crop", "crop+flip")


class FlatHead(nn.Module):
    """SDN internal classifier on a feature map smaller than 4x4: no pooling, one linear layer."""

    def __init__(self, features: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(x, 1))


class GlobalPoolHead(nn.Module):
    """The final classifier of ResNet / MobileNet: global average pooling, then one linear layer."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x.mean(dim=(2, 3)))


@torch.no_grad()
def stage_shapes(net: MultiExitNet) -> list[tuple[int, ...]]:
    """(C, H, W) of every stage's output for one input of the net's shape (eval mode)."""
    was = net.training
    net.eval()
    h = torch.zeros(1, *net.input_shape)
    shapes = []
    for stage in net.stages:
        h = stage(h)
        shapes.append(tuple(h.shape[1:]))
    net.train(was)
    return shapes


def init_sdn_weights(net: nn.Module) -> None:
    """SDN's initialisation: He (fan-out) normal for convs, BN weight 1 / bias 0; linear layers
    keep PyTorch's default unless a head re-initialises them."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@dataclass(frozen=True)
class SDNRecipe(SDNSpec):
    """SDN backbone + SDN training recipe. Options (all overridable with ``--victim-opt``):

    ``exits`` (0 = SDN's own placement; n = n exits evenly spaced by compute, as in the paper's
    3-6-exit study and its 4-exit Table 3), ``epochs`` (100), ``lr`` (0.1), ``momentum`` (0.9),
    ``weight_decay`` (5e-4 VGG, 1e-4 ResNet/MobileNet), ``batch_size`` (128), ``milestones``
    (fractions of training at which the learning rate drops 10x; SDN: epochs 35, 60, 85 of 100) and
    ``augment`` (SDN's CIFAR augmentation: random 32x32 crop of the 4-pixel zero-padded image and
    horizontal flip; ``crop`` for digits and signs, ``none``). The internal-classifier loss weights
    grow during training up to each exit's compute fraction (``victims._training.train_victim``).
    """

    exit_fractions: ClassVar[tuple[float, ...] | None] = SDN_FRACTIONS
    head_pool: ClassVar[int] = 4

    exits: int = 0
    epochs: int = 100
    lr: float = 0.1
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    milestones: tuple[float, ...] = (0.35, 0.60, 0.85)
    augment: str = "crop+flip"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.augment not in AUGMENTS:
            raise ConfigError(f"victim {self.name!r}: augment must be one of {', '.join(AUGMENTS)}, "
                              f"got {self.augment!r}")
        if any(not 0.0 < m < 1.0 for m in self.milestones) or list(self.milestones) != sorted(self.milestones):
            raise ConfigError(f"victim {self.name!r}: milestones must be increasing fractions of training in (0, 1)")

    # ---- exits ------------------------------------------------------------------------------

    def head(self, channels: int, num_classes: int, final: bool) -> nn.Module:
        # placeholder: the real heads need each exit's feature-map size, known once built (below)
        return nn.Identity()

    def build(self, num_classes: int, input_shape: tuple[int, ...], exits: int | None = None) -> MultiExitNet:
        net = super().build(num_classes, input_shape, exits)
        shapes = stage_shapes(net)
        heads = [self.internal_head(s, num_classes) for s in shapes[:-1]]
        heads.append(self.final_head(shapes[-1], num_classes))
        net.heads = nn.ModuleList(heads)
        init_sdn_weights(net)
        return net

    def internal_head(self, shape: tuple[int, ...], num_classes: int) -> nn.Module:
        """SDN's internal classifier: mixed max/avg pooling to 4x4 and a linear layer; on maps
        smaller than 4x4, the linear layer alone (SDN's ``feature_reduction_formula``)."""
        c, h, w = shape
        if min(h, w) >= self.head_pool:
            return ExitHead(c, num_classes, pool=self.head_pool)
        return FlatHead(c * h * w, num_classes)

    def final_head(self, shape: tuple[int, ...], num_classes: int) -> nn.Module:
        return GlobalPoolHead(shape[0], num_classes)

    # ---- training ---------------------------------------------------------------------------

    def augment_batch(self, x: Tensor) -> Tensor:
        """SDN's training augmentation on a float batch (B, C, H, W): random crop with 4-pixel
        zero padding, and a random horizontal flip for ``crop+flip``. Uses torch's global RNG."""
        if self.augment == "none":
            return x
        b, _, h, w = x.shape
        pad = 4
        padded = nn.functional.pad(x, (pad, pad, pad, pad))
        oy = torch.randint(0, 2 * pad + 1, (b,)).to(x.device)
        ox = torch.randint(0, 2 * pad + 1, (b,)).to(x.device)
        rows = (oy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (B, H, 1)
        cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (B, 1, W)
        out = padded[torch.arange(b, device=x.device)[:, None, None], :, rows, cols]  # (B, H, W, C)
        out = out.permute(0, 3, 1, 2).contiguous()
        if self.augment == "crop+flip":
            flip = (torch.rand(b) < 0.5).to(x.device)
            out = torch.where(flip[:, None, None, None], out.flip(3), out)
        return out
