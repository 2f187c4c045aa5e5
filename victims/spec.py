"""VictimSpec: a registered victim family = a backbone cut into blocks + a training recipe.

A spec builds a MultiExitNet with exits after chosen blocks: at given compute fractions (SDN
places internal classifiers at ~15/30/45/60/75/90% of the compute) or ``n`` evenly spaced by
compute (what the attacker of the multi-exit paper does for its substitute, Sec. 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmark.errors import ConfigError
from victims.base import ExitHead, MultiExitNet


class Normalize(nn.Module):
    """Maps [0, 1] images to roughly zero-mean inputs inside the model, so the oracle takes raw images."""

    def __init__(self, mean: float = 0.5, std: float = 0.25) -> None:
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


@torch.no_grad()
def block_flops(blocks: list[nn.Module], input_shape: tuple[int, ...]) -> list[int]:
    """FLOPs of each block for one sample, counted with FlopCounterMode."""
    h = torch.zeros(1, *input_shape)
    out = []
    for block in blocks:
        was = block.training
        block.eval()
        counter = FlopCounterMode(display=False)
        with counter:
            h = block(h)
        block.train(was)
        out.append(int(counter.get_total_flops()))
    return out


def place_exits(flops: list[int], fractions: list[float]) -> list[int]:
    """Block indices (strictly increasing, last = final block) whose cumulative compute is closest
    to each fraction of the total; the final block always carries the last exit."""
    total = float(sum(flops))
    cum = torch.tensor(flops, dtype=torch.float64).cumsum(0) / total
    chosen: list[int] = []
    for frac in sorted(fractions):
        if frac >= 1.0:
            continue
        lo = chosen[-1] + 1 if chosen else 0
        hi = len(flops) - 1  # leave the final block for the last exit
        if lo >= hi:
            break
        idx = lo + int(torch.argmin((cum[lo:hi] - frac).abs()))
        chosen.append(idx)
    chosen.append(len(flops) - 1)
    return chosen


@dataclass(frozen=True)
class VictimSpec:
    """Base for victim plugins. Subclasses are frozen dataclasses whose fields are options."""

    name: ClassVar[str] = "victim"
    #: exit fractions of the victim's own placement (None: ``exits`` evenly spaced)
    exit_fractions: ClassVar[tuple[float, ...] | None] = None
    head_pool: ClassVar[int] = 4

    exits: int = 0  # 0 = the family's own placement
    epochs: int = 10
    lr: float = 0.1
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    #: train on this many images of the task's training split (a seeded random subset; quick runs
    #: and tests); None: all of them. Part of the victim's cache key when set.
    train_subset: int | None = None

    def __post_init__(self) -> None:
        if self.train_subset is not None and (isinstance(self.train_subset, bool)
                                              or not isinstance(self.train_subset, int) or self.train_subset < 1):
            raise ConfigError(f"victim {self.name!r}: train_subset must be a positive number of images "
                              f"(or none for the whole training split), got {self.train_subset!r}")
        if self.exits < 0 or self.exits == 1:
            raise ConfigError(f"victim {self.name!r}: exits must be 0 (default placement) or >= 2")
        if self.epochs < 1:
            raise ConfigError(f"victim {self.name!r}: epochs must be >= 1")
        if self.lr <= 0 or self.batch_size < 1:
            raise ConfigError(f"victim {self.name!r}: lr and batch_size must be positive")
        if self.optimizer not in ("sgd", "adam"):
            raise ConfigError(f"victim {self.name!r}: optimizer must be sgd or adam")

    def backbone(self, input_shape: tuple[int, ...], num_classes: int) -> list[tuple[nn.Module, int]]:
        """The backbone as (block, output channels) pairs; exits can follow any block."""
        raise NotImplementedError

    def build(self, num_classes: int, input_shape: tuple[int, ...], exits: int | None = None) -> MultiExitNet:
        """Build the net; ``exits`` overrides the placement with that many evenly spaced exits."""
        pairs = self.backbone(tuple(input_shape), num_classes)
        blocks = [b for b, _ in pairs]
        n = exits or self.exits
        if n:
            if n > len(blocks):
                raise ConfigError(f"victim {self.name!r} has {len(blocks)} blocks; cannot place {n} exits")
            fractions = [i / n for i in range(1, n + 1)]
        elif self.exit_fractions is not None:
            fractions = [*self.exit_fractions, 1.0]
        else:
            raise ConfigError(f"victim {self.name!r} needs an exit count")
        where = place_exits(block_flops(blocks, tuple(input_shape)), fractions)
        stages, heads, start = [], [], 0
        for idx in where:
            stages.append(nn.Sequential(*blocks[start:idx + 1]))
            heads.append(self.head(pairs[idx][1], num_classes, idx == len(blocks) - 1))
            start = idx + 1
        return MultiExitNet(stages, heads, input_shape, num_classes)

    def head(self, channels: int, num_classes: int, final: bool) -> nn.Module:
        """Exit head; SDN uses mixed pooling + linear for internal exits."""
        return ExitHead(channels, num_classes, pool=1 if final else self.head_pool)
