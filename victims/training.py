"""SDN-style training of a MultiExitNet and the victim owner's threshold rule.

Loss: sum over exits of w_k * CE, where internal exit k's weight grows linearly during the first
half of training up to its compute fraction (SDN, Kaya et al. 2019, Sec. 4 "IC-only / SDN
training"), and the final exit has weight 1.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from benchmark.data import Split
from victims.base import NEVER, MultiExitNet
from victims.spec import VictimSpec


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


def train_victim(model: MultiExitNet, spec: VictimSpec, train: Split, seed: int, device: str,
                 progress: bool = True) -> None:
    """Train all exits jointly with SDN's growing internal-classifier weights."""
    torch.manual_seed(seed)
    flops = model.exit_flops()
    frac = [f / flops[-1] for f in flops]
    opt = make_optimizer(model.parameters(), spec)
    y_all = train.y.to(device)
    augment = getattr(spec, "augment_batch", None)  # optional per-batch training augmentation

    def step_loss(idx: Tensor, epoch: int) -> Tensor:
        ramp = min(1.0, (epoch + 1) / max(1, spec.epochs // 2))
        x = train.images(idx, device)
        outs = model(augment(x) if augment is not None else x)
        y = y_all[idx.to(device)]
        loss = F.cross_entropy(outs[-1], y)
        for k, out in enumerate(outs[:-1]):
            loss = loss + ramp * frac[k] * F.cross_entropy(out, y)
        return loss

    fit(model, len(train), spec.batch_size, spec.epochs, opt, step_loss, seed, f"train {spec.name}", progress,
        milestones=tuple(getattr(spec, "milestones", (0.5, 0.75))))


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


def choose_thresholds(conf: Tensor, correct: Tensor, slack: float = 0.0, floor: float = 0.5) -> Tensor:
    """The owner's rule, exit by exit on validation data: exit k's threshold is the lowest value
    t >= ``floor`` such that the samples still running that exit at k (confidence >= t) are at
    least as accurate as the final exit is on all samples, minus ``slack``."""
    n, k_exits = conf.shape
    target = float(correct[:, -1].float().mean()) - slack
    thresholds = torch.full((k_exits,), NEVER)
    thresholds[-1] = 0.0
    running = torch.ones(n, dtype=torch.bool)
    for k in range(k_exits - 1):
        c, ok = conf[running, k], correct[running, k].float()
        if len(c) == 0:
            break
        order = torch.argsort(c, descending=True)
        c_sorted, ok_sorted = c[order], ok[order]
        acc_at = ok_sorted.cumsum(0) / torch.arange(1, len(c) + 1)  # accuracy of the top-i
        valid = (acc_at >= target) & (c_sorted >= floor)
        if bool(valid.any()):
            i = int(valid.nonzero().max())  # most samples that keep the accuracy
            thresholds[k] = float(c_sorted[i])
            running &= ~(conf[:, k] >= thresholds[k])
    return thresholds
