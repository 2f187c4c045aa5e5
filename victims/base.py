"""MultiExitNet: the multi-exit network contract every victim and substitute follows.

A backbone cut into stages with one classifier head (exit) after each stage. ``forward`` returns
the logits of every exit (for training); ``early_exit`` really stops computing for a sample once
the max-softmax at an exit reaches that exit's threshold (per sample, also inside a batch), as in
SDN (Kaya et al., ICML 2019). FLOPs to each exit are measured with ``torch.utils.flop_counter``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

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

    @torch.no_grad()
    def early_exit(self, x: Tensor) -> ExitOutput:
        """Early-exit inference: each sample stops at the first exit whose confidence reaches its
        threshold; only the samples still running are carried into the next stage."""
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
                done = torch.softmax(out, dim=1).amax(dim=1) >= self.thresholds[k]
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
