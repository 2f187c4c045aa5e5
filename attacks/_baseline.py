"""What the three baseline attacks (``knockoff``, ``noise``, ``esa``) share.

The baselines of the multi-exit stealing paper (arXiv 2305.13584, Sec. 3, Table 1) steal the
victim's classification function only. To score them like ``ours`` they still return a multi-exit
substitute of the attacker's family (``ctx.substitute`` with the family's default exit placement)
and need an output strategy, which they cannot steal. Everything here is the same for all three,
so that they differ only in *what they query*:

Training (:func:`train_substitute`)
    The victim's answers are soft labels; every exit is trained towards them with the performance
    loss all attacks of the suite use, the sum over exits of KL(victim output || exit output)
    (``attacks._common.kl_to_targets``; equal to soft-label cross-entropy up to a constant). Same
    optimiser, batch size, epochs and step schedule as ``ours`` (Adam, lr 2e-3, batch 128, 10
    epochs, lr x0.1 at 50% and 75% of training), so that differences in the table come from the
    queries and the output strategy, not from how long or how well each substitute was trained.
    The source papers train single-exit models with their own recipes (cited in each plugin);
    their optimiser settings are not carried over.

Substitute (:func:`build_substitute`)
    The attacker's family (``--substitute-arch``, else the victim's family) with the family's
    **default** options and exit placement (``type(ctx.substitute)()``): a baseline does not infer
    exits, so it gets neither the victim's exit count nor any other victim option (with
    ``--victim-opt exits=6`` the victim has 6 exits, a baseline's ``sdn-tiny`` substitute 4).

Queries used for training
    Every attack of the suite trains on **all** the queries it bought (``val_fraction`` default 0,
    as ``ours``), and chooses its output strategy on those same queries. ``val_fraction`` > 0 holds
    a random share out of training for the ``owner-rule`` calibration (the earlier
    default was ``val_fraction=0.1``).

Output strategy, option ``strategy``:

``global`` (default; the paper's likely reading)
    One fixed confidence threshold for every internal exit, ``threshold`` (default 0.9): a sample
    leaves at the first internal exit whose max-softmax is >= ``threshold``, otherwise at the last
    exit. Nothing is calibrated.

``owner-rule`` (the earlier default)
    The global-threshold SDN rule a victim owner uses when deploying an SDN (Kaya et al.,
    "Shallow-Deep Networks", ICML 2019: one confidence threshold for all internal classifiers,
    picked by sweeping candidates on held-out data), i.e. the baseline re-derives an owner's
    policy (:func:`global_threshold`). One threshold ``q`` shared by every internal exit, calibrated:

    - data: the held-out ``val_fraction`` of the attack's own queries if > 0, else its training
      queries, labelled with the victim's top-1 answers (the attacker has no task labels);
    - candidates: ``q`` in 0.10, 0.11, ..., 0.99, 0.995, 0.999 and "never" (no early exit);
    - for each candidate: accuracy (agreement with the victim's top-1) and mean FLOPs per sample
      under early exit on that data;
    - rule: **the cheapest candidate whose accuracy is at least (1 - tolerance) x the best
      candidate's accuracy** (default ``tolerance`` 0.01, i.e. within 1% of the best); ties go
      to the higher accuracy, then to the larger ``q``.

Adaptive options (``docs/attacks.md``), shared by the three baselines:

``labels_only`` (default false)
    Train on the one-hot of each answer's top-1 class (cross-entropy with the victim's labels)
    instead of its probabilities: output perturbations that keep the label (reverse sigmoid, Lee
    et al. 2019; top-1-preserving MAD, Orekondy et al., ICLR 2020; rounding) cannot poison it.
    Costs no queries; loses the dark knowledge of honest soft labels.
``accounts`` (default 1), ``sybil`` (default false), ``mix`` (default 0)
    Against detection (PRADA, Juuti et al., EuroS&P 2019): ``accounts`` = k handles sharing the
    budget; a refused account is dropped and its batch re-asked from the next one (with none left
    the attack stops and trains on what it has; ``refused_queries`` in the details); ``sybil=true``
    deals each batch's rows round-robin over the live accounts; ``mix`` = the share of every
    account's queries that are natural images from the query set (costs mix / (1 - mix) extra
    queries per query; their answers are not used). ``attacks/_common.py`` has the details.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from attacks._common import Accounts, AdaptiveOptions, as_labels, kl_to_targets, query_split
from benchmark.api.attack import Attack, AttackContext, StolenModel
from benchmark.api.victim import NEVER, MultiExitNet
from benchmark.data import Split, to_uint8
from benchmark.errors import ConfigError
from benchmark.oracle import BlackBox
from benchmark.training import exit_confidences, fit

#: candidate global thresholds of the SDN rule (NEVER = no early exit)
GRID: tuple[float, ...] = (*(round(0.10 + 0.01 * i, 2) for i in range(90)), 0.995, 0.999, NEVER)
NOISE_KINDS = ("bernoulli", "uniform", "gaussian")
STRATEGIES = ("global", "owner-rule")


@dataclass(frozen=True)
class BaselineOptions(Attack):
    """Substitute training and the global-threshold rule (the baselines' own options)."""

    epochs: int = 10
    lr: float = 2e-3
    batch_size: int = 128
    val_fraction: float = 0.0
    tolerance: float = 0.01
    strategy: str = "global"
    threshold: float = 0.9


@dataclass(frozen=True)
class BaselineAttack(AdaptiveOptions, BaselineOptions):
    """Options every baseline shares: substitute training and the global-threshold rule."""

    #: what one indivisible step of the attack costs in queries, for the budget check (set per plugin)
    step_name: ClassVar[str] = "one batch"

    def __post_init__(self) -> None:
        self.check_adaptive()
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError(f"attack {self.name!r}: epochs, batch_size and lr must be positive")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"attack {self.name!r}: val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 0 <= self.tolerance < 1:
            raise ConfigError(f"attack {self.name!r}: tolerance must be in [0, 1), got {self.tolerance}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"attack {self.name!r}: strategy must be one of {', '.join(STRATEGIES)}, "
                              f"got {self.strategy!r}")
        if not 0 < self.threshold <= 1:
            raise ConfigError(f"attack {self.name!r}: threshold must be in (0, 1], got {self.threshold}")

    def step_size(self) -> int:
        """Queries of one indivisible step (a batch; ESA: a round)."""
        return self.batch_size

    def check_budget(self, budget: int) -> None:
        if budget < self.step_size():
            raise ConfigError(f"attack {self.name!r} needs a budget of at least {self.step_name} "
                              f"({self.step_size()} queries), got {budget}")

    def usable_budget(self, oracle: BlackBox, budget: int) -> int:
        """Queries this run may spend: the budget, never more than the oracle has left."""
        self.check_budget(budget)
        n = min(budget, oracle.remaining)
        if n < self.step_size():
            raise ConfigError(f"attack {self.name!r}: the oracle has {oracle.remaining} queries left, "
                              f"fewer than {self.step_name} ({self.step_size()})")
        return n


# ---- data -----------------------------------------------------------------------------------

def as_split(x: Tensor) -> Split:
    """Float images in [0, 1] as a Split of 8-bit images (what is stored is exactly what is queried)."""
    return Split(to_uint8(x.detach().cpu()), torch.zeros(len(x), dtype=torch.long))


def noise_images(n: int, shape: tuple[int, ...], gen: torch.Generator, kind: str = "bernoulli",
                 p: float = 0.5, mean: float = 0.5, std: float = 0.25) -> Tensor:
    """``n`` i.i.d. noise images in [0, 1]: ``bernoulli`` (each value 1 with probability ``p``, else
    0), ``uniform`` (U[0, 1]) or ``gaussian`` (N(mean, std^2) clipped to [0, 1]; the defaults are
    N(0, 1) in the input normalisation of the suite's models)."""
    size = (n, *shape)
    if kind == "bernoulli":
        return (torch.rand(size, generator=gen) < p).float()
    if kind == "uniform":
        return torch.rand(size, generator=gen)
    if kind == "gaussian":
        return (mean + std * torch.randn(size, generator=gen)).clamp_(0, 1)
    raise ConfigError(f"noise kind must be one of {', '.join(NOISE_KINDS)}, got {kind!r}")


def holdout(n: int, fraction: float, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Random split of rows 0..n-1 into (train, held-out); held-out gets round(fraction * n) rows
    (at least one if fraction > 0), train keeps at least one."""
    perm = torch.randperm(n, generator=gen)
    n_val = 0 if fraction <= 0 or n < 2 else min(n - 1, max(1, round(fraction * n)))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def query_all(oracle: BlackBox | Accounts, data: Split, ctx: AttackContext, desc: str) -> Tensor:
    """The victim's probabilities for the rows of ``data`` (the caller checked the budget): all of
    them, or the first ones if every account was refused (``query_split``)."""
    probs, _ = query_split(oracle, data, torch.arange(len(data)), progress=ctx.progress, desc=desc)
    return probs


# ---- training -------------------------------------------------------------------------------

def build_substitute(oracle: BlackBox, ctx: AttackContext) -> MultiExitNet:
    """A fresh substitute of the attacker's family with the family's default options and exit
    placement (never the victim's options: a baseline does not infer exits)."""
    torch.manual_seed(ctx.seed)
    return type(ctx.substitute)().build(oracle.num_classes, oracle.input_shape).to(ctx.device)


def train_substitute(model: MultiExitNet, data: Split, targets: Tensor, rows: Tensor, attack: BaselineAttack,
                     ctx: AttackContext, desc: str = "train substitute", *, epochs: int | None = None,
                     optimizer: torch.optim.Optimizer | None = None, milestones: tuple[float, ...] = (0.5, 0.75),
                     seed: int | None = None) -> float:
    """Fit every exit of ``model`` to the soft labels ``targets`` on rows ``rows`` of ``data``
    (performance loss, Adam, step schedule); returns the seconds it took."""
    t0 = time.perf_counter()
    if getattr(attack, "labels_only", False):
        targets = as_labels(targets)
    rows = rows.long()
    if not len(rows):  # every account refused before a single answer: nothing to train on
        return time.perf_counter() - t0
    opt = optimizer or torch.optim.Adam(model.parameters(), lr=attack.lr)
    target_dev = targets.to(ctx.device)
    rows_dev = rows.to(ctx.device)

    def step_loss(idx: Tensor, epoch: int) -> Tensor:
        outs = model(data.images(rows[idx], ctx.device))
        return kl_to_targets(outs, target_dev[rows_dev[idx.to(ctx.device)]])

    fit(model, len(rows), attack.batch_size, epochs or attack.epochs, opt, step_loss,
        ctx.seed if seed is None else seed, desc, ctx.progress, milestones=milestones)
    return time.perf_counter() - t0


# ---- the output strategy --------------------------------------------------------------------

def exits_at(conf: Tensor, q: float) -> Tensor:
    """Exit taken by each sample under one global threshold ``q`` (the last exit always fires)."""
    hit = conf >= q
    hit[:, -1] = True
    return hit.to(torch.int8).argmax(1)


def global_threshold(conf: Tensor, pred: Tensor, labels: Tensor, exit_flops: list[int], tolerance: float,
                     grid: tuple[float, ...] = GRID) -> tuple[float, dict[str, Any]]:
    """The global-threshold SDN rule (module docstring): the cheapest ``q`` in ``grid`` whose accuracy
    on (conf, pred: (N, K) per exit; labels: (N,)) is >= (1 - tolerance) x the best candidate's.
    Returns (q, a JSON-ready summary; ``candidates`` lists [q, accuracy, cost / last exit's cost])."""
    flops = torch.tensor(exit_flops, dtype=torch.float64)
    rows = []
    for q in grid:
        ex = exits_at(conf, q)
        acc = float((pred.gather(1, ex[:, None].long()).squeeze(1) == labels).double().mean())
        rows.append((q, acc, float(flops[ex.long()].mean())))
    best = max(acc for _, acc, _ in rows)
    ok = [r for r in rows if r[1] >= (1 - tolerance) * best - 1e-12]
    q, acc, cost = min(ok, key=lambda r: (r[2], -r[1], -r[0]))
    ex = exits_at(conf, q)
    hist = torch.bincount(ex.long(), minlength=conf.shape[1]).double() / len(ex)
    return q, {"rule": "global-threshold SDN rule: cheapest q with held-out accuracy >= (1 - tolerance) x best",
               "threshold": q, "tolerance": tolerance, "held_out_samples": len(labels),
               "held_out_accuracy": acc, "held_out_best_accuracy": best,
               "held_out_cost_ratio_to_last_exit": cost / float(flops[-1]),
               "held_out_exit_hist": hist.tolist(),
               "candidates": [[q_, round(a, 6), round(c / float(flops[-1]), 6)] for q_, a, c in rows]}


def finish(model: MultiExitNet, data: Split, targets: Tensor, train_rows: Tensor, val_rows: Tensor,
           attack: BaselineAttack, ctx: AttackContext, details: dict[str, Any]) -> StolenModel:
    """Set the substitute's thresholds by the output strategy (``global``: the fixed threshold;
    ``owner-rule``: calibrated on the held-out rows, the training rows if there are none) and
    package the result."""
    if attack.strategy == "global" or not len(train_rows) + len(val_rows):
        q = attack.threshold
        rule: dict[str, Any] = {"strategy": "global", "rule": "one fixed confidence threshold for every internal exit",
                                "threshold": q}
    else:
        rows = val_rows if len(val_rows) else train_rows
        conf, pred = exit_confidences(model, Split(data.x[rows], data.y[rows]), ctx.device)
        q, rule = global_threshold(conf, pred, targets[rows].argmax(1), model.exit_flops(), attack.tolerance)
        rule = {"strategy": "owner-rule", **rule, "held_out": bool(len(val_rows))}
    model.set_thresholds([q] * (model.num_exits - 1) + [0.0])
    details = {**details, "train_samples": len(train_rows), "thresholds": [float(t) for t in model.thresholds],
               "output_strategy": rule}
    return StolenModel(model.eval(), details)
