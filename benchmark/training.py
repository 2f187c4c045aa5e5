"""Training loops shared by everyone who trains a multi-exit network: victim owners (their recipes
live with the victims) and attackers (their substitutes). A minibatch loop with a step schedule,
an optimiser from a spec's options, and every exit's confidence on a data split."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from benchmark.api.victim import MultiExitNet, VictimSpec
from benchmark.data import Split


def make_optimizer(params, spec: VictimSpec) -> torch.optim.Optimizer:
    if spec.optimizer == "adam":
        return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)


def fit(model: MultiExitNet, n: int, batch_size: int, epochs: int, optimizer: torch.optim.Optimizer,
        step_loss: Callable[[Tensor, int], Tensor], seed: int, desc: str, progress: bool = True,
        milestones: tuple[float, ...] = (0.5, 0.75)) -> None:
    """Generic minibatch loop: ``step_loss(idx, epoch)`` returns the loss of a batch of row indices.
    The learning rate drops 10x at the given fractions of training (step schedule)."""
    gen = torch.Generator().manual_seed(seed)
    sched = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, [max(1, int(m * epochs)) for m in milestones if int(m * epochs) < epochs], 0.1)
    model.train()
    bar = tqdm(range(epochs), desc=desc, disable=not progress, leave=False)
    for epoch in bar:
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, n, batch_size):
            idx = perm[start:start + batch_size]
            loss = step_loss(idx, epoch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
        sched.step()
        bar.set_postfix(loss=f"{total / n:.3f}")
    model.eval()


@torch.no_grad()
def exit_confidences(model: MultiExitNet, data: Split, device: str, batch: int = 512) -> tuple[Tensor, Tensor]:
    """Max-softmax and predicted label at every exit, no early exit: (N, K) each."""
    model.eval()
    confs, preds = [], []
    for start in range(0, len(data), batch):
        outs = model(data.images(slice(start, start + batch), device))
        p = torch.stack([torch.softmax(o, 1) for o in outs], 1)  # (B, K, C)
        c, y = p.max(2)
        confs.append(c.cpu())
        preds.append(y.cpu())
    return torch.cat(confs), torch.cat(preds)
