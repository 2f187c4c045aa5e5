"""Early-exit inference over a split and the positional matching of exits between models with
different exit counts: the primitives both ``benchmark.metrics`` and ``benchmark.closeness`` use."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from benchmark.api.victim import MultiExitNet
from benchmark.data import Split


@dataclass(frozen=True)
class ExitRun:
    pred: Tensor
    exits: Tensor


@torch.no_grad()
def run_early_exit(model: MultiExitNet, data: Split, device: str, batch: int = 512) -> ExitRun:
    model.eval()
    preds, exits = [], []
    for start in range(0, len(data), batch):
        out = model.early_exit(data.images(slice(start, start + batch), device))
        preds.append(out.logits.argmax(1).cpu())
        exits.append(out.exits.cpu())
    return ExitRun(torch.cat(preds), torch.cat(exits))


def align_exits(exits: Tensor, k_from: int, k_to: int) -> Tensor:
    """Map exit indices of a K'=k_from-exit model onto a K=k_to-exit model by relative position."""
    if k_from == k_to:
        return exits
    pos_from = (torch.arange(k_from, dtype=torch.float64) + 1) / k_from
    pos_to = (torch.arange(k_to, dtype=torch.float64) + 1) / k_to
    dist = (pos_from[:, None] - pos_to[None, :]).abs()
    # nearest, ties to the deeper exit: pick the last index among the minima
    best = k_to - 1 - torch.argmin(dist.flip(1), dim=1)
    return best[exits]


