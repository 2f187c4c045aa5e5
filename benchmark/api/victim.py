"""Victim contract: the multi-exit network every victim and substitute is, and the victim spec.

``MultiExitNet`` is a backbone cut into stages with one classifier head (exit) after each stage.
``forward`` returns the logits of every exit (for training); ``early_exit`` really stops computing
for a sample once the max-softmax at an exit reaches that exit's threshold (per sample, also inside
a batch), as in SDN (Kaya et al., ICML 2019); a subclass changes that rule by overriding
``exit_mask``. FLOPs to each exit are measured with ``torch.utils.flop_counter``.

``VictimSpec`` is a registered victim family: a backbone cut into blocks plus a training recipe.
It builds a MultiExitNet with exits after chosen blocks (at given compute fractions, or ``n`` evenly
spaced by compute, as the multi-exit paper's attacker does for its substitute, Sec. 3) and trains
it (``train``: the family's recipe and the owner's threshold rule).
"""


from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from benchmark.errors import ConfigError

if TYPE_CHECKING:
    from benchmark.data import TaskData

NEVER = 2.0  # a threshold above any softmax confidence: the exit never fires


@dataclass(frozen=True)
class ExitOutput:
    """Early-exit inference result for a batch."""

    logits: Tensor  # (B, C) logits of the exit each sample left at
    exits: Tensor  # (B,) long, index of that exit


class MixedPool(nn.Module):
    """SDN's mixed max/average pooling with a learned mixing weight."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.max = nn.AdaptiveMaxPool2d(size)
        self.avg = nn.AdaptiveAvgPool2d(size)
        self.alpha = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        a = torch.sigmoid(self.alpha)
        return a * self.max(x) + (1 - a) * self.avg(x)


class ExitHead(nn.Module):
    """SDN internal classifier: mixed pooling to ``pool`` x ``pool``, then one linear layer."""

    def __init__(self, channels: int, num_classes: int, pool: int = 4) -> None:
        super().__init__()
        self.pool = MixedPool(pool)
        self.fc = nn.Linear(channels * pool * pool, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.pool(x), 1))


class MultiExitNet(nn.Module):
    """Stages + heads; ``thresholds[k]`` is exit k's confidence threshold (the last always exits)."""

    def __init__(self, stages: list[nn.Module], heads: list[nn.Module], input_shape: tuple[int, ...],
                 num_classes: int) -> None:
        super().__init__()
        if len(stages) != len(heads) or not stages:
            raise ValueError("a MultiExitNet needs one head per stage and at least one stage")
        self.stages = nn.ModuleList(stages)
        self.heads = nn.ModuleList(heads)
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.register_buffer("thresholds", torch.full((len(stages),), NEVER))
        self._exit_flops: list[int] | None = None

    @property
    def num_exits(self) -> int:
        return len(self.stages)

    def set_thresholds(self, thresholds) -> None:
        t = torch.as_tensor(thresholds, dtype=torch.float32).flatten()
        if t.numel() != self.num_exits:
            raise ValueError(f"need {self.num_exits} thresholds, got {t.numel()}")
        self.thresholds.copy_(t.to(self.thresholds.device))

    def forward(self, x: Tensor) -> list[Tensor]:
        """Logits of every exit, computing the whole network (for training and analysis)."""
        outs = []
        h = x
        for stage, head in zip(self.stages, self.heads):
            h = stage(h)
            outs.append(head(h))
        return outs

    def exit_mask(self, k: int, probs: Tensor) -> Tensor:
        """Which of the samples still running leave at internal exit ``k``: a (B,) bool mask, given
        that exit's softmax ``probs`` (B, C). Here: max-softmax >= ``thresholds[k]``. Subclasses
        override this to change the exit rule; the last exit takes every sample left."""
        return probs.amax(dim=1) >= self.thresholds[k]

    @torch.no_grad()
    def early_exit(self, x: Tensor) -> ExitOutput:
        """Early-exit inference: each sample stops at the first exit that lets it leave
        (``exit_mask``); only the samples still running are carried into the next stage."""
        n = x.shape[0]
        logits = torch.empty(n, self.num_classes, device=x.device)
        exits = torch.empty(n, dtype=torch.long, device=x.device)
        active = torch.arange(n, device=x.device)
        h = x
        last = self.num_exits - 1
        for k, (stage, head) in enumerate(zip(self.stages, self.heads)):
            h = stage(h)
            out = head(h)
            if k == last:
                done = torch.ones(out.shape[0], dtype=torch.bool, device=x.device)
            else:
                done = self.exit_mask(k, torch.softmax(out, dim=1))
            idx = active[done]
            logits[idx] = out[done]
            exits[idx] = k
            if bool(done.all()):
                break
            keep = ~done
            h, active = h[keep], active[keep]
        return ExitOutput(logits, exits)

    def forced_exit_thresholds(self, k: int) -> Tensor:
        """Thresholds that make every sample leave at exit ``k`` (for timing and FLOP counting)."""
        t = torch.full((self.num_exits,), NEVER)
        t[k] = -1.0
        return t

    @torch.no_grad()
    def exit_flops(self) -> list[int]:
        """Cumulative FLOPs of one sample's early-exit path to each exit (measured once, cached)."""
        if self._exit_flops is None:
            saved = self.thresholds.clone()
            device = self.thresholds.device
            x = torch.zeros(1, *self.input_shape, device=device)
            flops = []
            was_training = self.training
            self.eval()
            try:
                for k in range(self.num_exits):
                    self.set_thresholds(self.forced_exit_thresholds(k))
                    counter = FlopCounterMode(display=False)
                    with counter:
                        self.early_exit(x)
                    flops.append(int(counter.get_total_flops()))
            finally:
                self.set_thresholds(saved)
                self.train(was_training)
            self._exit_flops = flops
        return list(self._exit_flops)

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

    def train(self, model: MultiExitNet, task: TaskData, seed: int, device: str, progress: bool = True) -> None:
        """Train ``model`` (built by :meth:`build`) on ``task.train`` and set its thresholds from
        ``task.val``: the owner's recipe and threshold rule. Implemented by each victim family."""
        raise NotImplementedError(f"victim {self.name!r} has no training recipe")
