"""SDN-style training of a victim and the victim owner's threshold rule.

Loss: sum over exits of w_k * CE, where internal exit k's weight grows linearly during the first
half of training up to its compute fraction (SDN, Kaya et al. 2019, Sec. 4 "IC-only / SDN
training"), and the final exit has weight 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from benchmark.api.victim import NEVER, MultiExitNet, VictimSpec
from benchmark.data import Split
from benchmark.training import fit, make_optimizer


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


#: the owner's output strategies (victim option ``exit_rule``)
EXIT_RULES = ("owner", "balanced", "per-class")
#: confidence an exit needs under ``per-class`` (the owner rule's floor)
PER_CLASS_CONFIDENCE = 0.5


def balanced_thresholds(conf: Tensor, mix: tuple[float, ...] | None = None) -> Tensor:
    """``exit_rule=balanced``: per-exit thresholds aimed at the exit mix ``mix`` (shares per exit,
    default equal) on validation data. Exit by exit, the threshold is the confidence quantile of the
    samples still running that sends the wanted share of *all* samples out there."""
    n, k_exits = conf.shape
    mix = tuple(mix) if mix else (1.0 / k_exits,) * k_exits
    thresholds = torch.full((k_exits,), NEVER)
    thresholds[-1] = 0.0
    running = torch.ones(n, dtype=torch.bool)
    for k in range(k_exits - 1):
        left = int(running.sum())
        want = min(left, round(mix[k] * n))
        if left == 0 or want <= 0:
            continue
        c = conf[running, k].sort(descending=True).values
        thresholds[k] = float(c[want - 1])
        running &= ~(conf[:, k] >= thresholds[k])
    return thresholds


def class_first_exits(correct: Tensor, num_classes: int, labels: Tensor) -> Tensor:
    """``exit_rule=per-class``: the earliest exit each class may leave at. Classes are ranked by the
    first exit's validation accuracy on them (easiest first) and cut into K groups of (nearly) equal
    size: group g may leave at exit g or later, the last group only at the last exit."""
    k_exits = correct.shape[1]
    acc = torch.stack([correct[labels == c, 0].float().mean() if bool((labels == c).any()) else torch.tensor(0.0)
                       for c in range(num_classes)])
    order = torch.argsort(-acc, stable=True)
    first = torch.empty(num_classes, dtype=torch.long)
    first[order] = torch.arange(num_classes) * k_exits // num_classes
    return first
