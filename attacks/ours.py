"""ours: the multi-exit model stealing attack (arXiv 2305.13584, Sec. 2).

1. Estimation: query the victim with a task-irrelevant query set; KDE over the response times
   recovers each query's exit and the number of exits (Sec. 2.2, Eq. 1; ``attacks/_exits.py``; an
   exit used by few queries counts when its peak is statistically significant, ``rare_prominence``
   and ``min_z``).
   With ``repeats`` > 1 every query is asked that often and one statistic of its R times is kept
   (``repeat_stat``, below; defeats i.i.d. jitter; a keyed delay needs ``perturb``).
2. Training: a substitute of the chosen family with that many evenly placed exits, trained with
   the performance loss (KL from the victim's output to every exit, Eq. 2) plus the strategy loss
   (Eq. 3): for a sample the victim answered at exit k, push exit k's confidence above ``alpha``
   (0.95) and every earlier exit's confidence below ``beta`` (0.9), both as hinge penalties. The
   paper gives no relative weight; Eq. 2 sums K KL terms while each hinge is at most 1, so the
   strategy loss is weighted 3 by default (``strategy_weight``; measured on the default, seed 0:
   weight 1 gave clo 0.762 / cc_ratio 1.154, weight 3 gave 0.766 / 1.093).
3. Output-strategy search: thresholds maximising exit agreement on the queries (Eq. 4;
   ``attacks/_strategy.py``).

Adaptive options (``docs/attacks.md``):

``repeat_stat`` = ``min`` (default) | ``mean`` | ``median``, with ``repeats`` = R
    Expectation over Transformation (Athalye et al., ICML 2018) against random delays (``jitter``,
    TimeGuard of Li et al., CCS 2022): the R latencies of a query are reduced to one. ``min`` is
    the first order statistic: for a delay distribution with its mass down to 0 (uniform jitter
    of span S) the minimum of R answers exceeds the service time by S / (R + 1) on average (the
    mean of the minimum of R uniforms on [0, S]) and its spread shrinks as 1/R, where the mean's
    shrinks as 1/sqrt(R); ``mean`` is the right statistic for symmetric zero-mean noise;
    ``median`` resists outliers. Costs R queries per sample.
``delay_span`` (seconds, default 0: unknown)
    Order statistics where the delay distribution is known: with uniform jitter of known span S,
    the kept minimum is corrected by its bias, ``min - S / (R + 1)``, an unbiased estimate of the
    service time (the exits' times are then on the victim's own scale). A constant shift does not
    change which queries the KDE groups together; it matters where the times are compared with
    known exit costs.
``perturb`` (default false), ``perturb_pixels`` (default 4)
    Against keyed delays (keyed ``jitter``, TimeGuard: the delay is a function of the input, so
    exact repeats return it again): every repeat after the first asks an imperceptibly perturbed
    copy, ``perturb_pixels`` random pixel values moved by one uint8 level (1/255), which changes
    the canonical form the defenses key on and so draws a fresh delay; the fastest is kept. The
    answer's exit can change with the input; one level on a few pixels rarely moves it.
``labels_only`` (default false)
    Train on the one-hot of the victim's labels instead of its probabilities (against output
    perturbation: reverse sigmoid, MAD, rounding, adaptive misinformation); exit recovery is
    unchanged.
``accounts``, ``sybil``, ``mix``
    Several accounts, round-robin spreading and natural-query mixing against PRADA and refusal
    handling, as for the baselines (``attacks/_common.py``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from attacks._common import Accounts, AdaptiveOptions, as_labels, kl_to_targets, query_split
from attacks._exits import estimate_exits
from attacks._strategy import search_thresholds
from benchmark.api.attack import Attack, AttackContext, StolenModel
from benchmark.data import Split
from benchmark.errors import ConfigError
from benchmark.oracle import BlackBox
from benchmark.plugins import ATTACKS
from benchmark.training import exit_confidences, fit


def strategy_loss(outs: list[Tensor], exits: Tensor, alpha: float, beta: float) -> Tensor:
    """Eq. 3: sum over samples of relu(alpha - conf at their exit) + sum over earlier exits of
    relu(conf - beta), averaged over the batch. The last exit always fires, so no first term there."""
    conf = torch.stack([torch.softmax(o, 1).amax(1) for o in outs], 1)  # (B, K)
    k = conf.shape[1]
    pos = torch.arange(k, device=conf.device)[None, :]
    at = pos == exits[:, None]
    before = pos < exits[:, None]
    reach = torch.relu(alpha - conf) * (at & (exits[:, None] < k - 1))
    stay = torch.relu(conf - beta) * before
    return (reach + stay).sum(1).mean()


REPEAT_STATS = ("min", "mean", "median")


def perturbed_images(data: Split, rows: Tensor, pixels: int, gen: torch.Generator) -> Tensor:
    """Rows ``rows`` of ``data`` as float images with ``pixels`` random values per image moved by
    one uint8 level (up, or down where the value is 255): a new canonical form, the same image
    to the eye."""
    x = data.x[rows].clone()
    flat = x.view(len(x), -1)
    pos = torch.randint(flat.shape[1], (len(x), pixels), generator=gen)
    vals = flat.gather(1, pos).long()
    vals = torch.where(vals >= 255, vals - 1, vals + 1)
    flat.scatter_(1, pos, vals.to(torch.uint8))
    return x.float().div_(255.0)


def repeated_latency(pool, data: Split, index: Tensor, repeats: int, stat: str = "min", perturb: bool = False,
                     pixels: int = 4, seed: int = 0, delay_span: float = 0.0, progress: bool = False
                     ) -> tuple[Tensor, np.ndarray]:
    """Ask rows ``index`` of ``data`` ``repeats`` times (repeats after the first perturbed when
    ``perturb``); returns (first answers' probabilities, one latency per answered row: ``stat``
    over its repeats, the minimum corrected by ``delay_span / (repeats + 1)`` when a uniform delay
    span is known). Stops early, keeping what it has, when the accounts are refused."""
    gen = torch.Generator().manual_seed(seed + 0x9E7)
    probs, first = query_split(pool, data, index, progress=progress, desc="query victim")
    lats = [first.numpy()]
    n = len(probs)
    for r in range(1, repeats):
        images = (lambda rows: perturbed_images(data, rows, pixels, gen)) if perturb else None
        _, again = query_split(pool, data, index[:n], progress=progress, desc=f"repeat {r}", images=images)
        if len(again) < n:  # refused part-way: the rows answered this time get one more sample
            again = torch.cat([again, torch.full((n - len(again),), float("nan"), dtype=again.dtype)])
        lats.append(again.numpy())
    stack = np.stack(lats)
    if stat == "min":
        lat = np.nanmin(stack, 0)
        if delay_span > 0:
            lat = lat - delay_span / (np.isfinite(stack).sum(0) + 1)
    elif stat == "mean":
        lat = np.nanmean(stack, 0)
    else:
        lat = np.nanmedian(stack, 0)
    return probs, lat


@dataclass(frozen=True)
class OursOptions(Attack):
    """The options of ``ours`` other than the shared adaptive ones (``AdaptiveOptions``)."""

    epochs: int = 10
    lr: float = 2e-3
    batch_size: int = 128
    alpha: float = 0.95
    beta: float = 0.9
    strategy_weight: float = 3.0
    repeats: int = 1
    bandwidth: str = "scott"
    bw_scale: float = 0.5
    prominence: float = 0.005
    rare_prominence: float = 0.002
    min_z: float = 2.5
    max_valley: float = 0.5
    min_mass: float = 0.002
    max_exits: int = 8
    repeat_stat: str = "min"
    delay_span: float = 0.0
    perturb: bool = False
    perturb_pixels: int = 4


@ATTACKS.register("ours")
@dataclass(frozen=True)
class Ours(AdaptiveOptions, OursOptions):
    """KDE exit recovery + performance/strategy loss + output-strategy search."""

    min_budget = 200
    default_budget = 10_000

    def __post_init__(self) -> None:
        if self.repeat_stat not in REPEAT_STATS:
            raise ConfigError(f"attack 'ours': repeat_stat must be one of {', '.join(REPEAT_STATS)}, "
                              f"got {self.repeat_stat!r}")
        if not self.delay_span >= 0 or self.perturb_pixels < 1 or self.accounts < 1 or not 0 <= self.mix < 1:
            raise ConfigError("attack 'ours': need delay_span >= 0, perturb_pixels >= 1, accounts >= 1 "
                              "and 0 <= mix < 1")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("attack 'ours': epochs, batch_size and lr must be positive")
        if not 0 < self.beta <= self.alpha < 1:
            raise ConfigError("attack 'ours': need 0 < beta <= alpha < 1 (paper: 0.9, 0.95)")
        if self.bw_scale <= 0 or not 0 < self.max_valley <= 1 or not 0 <= self.min_mass < 1:
            raise ConfigError("attack 'ours': need bw_scale > 0, 0 < max_valley <= 1, 0 <= min_mass < 1")
        if self.prominence <= 0 or self.rare_prominence <= 0 or self.min_z < 0:
            raise ConfigError("attack 'ours': need prominence > 0, rare_prominence > 0 and min_z >= 0")
        if self.repeats < 1 or self.max_exits < 1:
            raise ConfigError("attack 'ours': repeats and max_exits must be >= 1")
        if self.bandwidth not in ("scott", "silverman"):
            try:
                value = float(self.bandwidth)
                if not math.isfinite(value) or value <= 0:  # float("nan") <= 0 is False
                    raise ValueError
            except ValueError:
                raise ConfigError("attack 'ours': bandwidth must be scott, silverman or a positive number") from None

    def check_budget(self, budget: int) -> None:
        if budget // self.repeats < self.min_budget:
            raise ConfigError(f"attack 'ours' needs a budget of at least {self.min_budget * self.repeats} queries "
                              f"({self.min_budget} samples x {self.repeats} repeats), got {budget}")

    def run(self, oracle: BlackBox, query_data: Split, budget: int, ctx: AttackContext) -> StolenModel:
        self.check_budget(budget)
        gen = torch.Generator().manual_seed(ctx.seed)
        n = min(len(query_data), budget // self.repeats)
        index = torch.randperm(len(query_data), generator=gen)[:n]

        # 1. estimation
        pool = Accounts.of(oracle, ctx, budget, self, natural=query_data)
        probs, lat = repeated_latency(pool, query_data, index, self.repeats, self.repeat_stat, self.perturb,
                                      self.perturb_pixels, ctx.seed, self.delay_span, ctx.progress)
        n = len(probs)
        index = index[:n]
        if n < 2:
            raise ConfigError(f"attack 'ours': the service answered {n} queries before refusing every account "
                              f"({pool.details()['refused_queries']} refused); nothing to estimate exits from")
        if self.labels_only:
            probs = as_labels(probs)
        bw = self.bandwidth if self.bandwidth in ("scott", "silverman") else float(self.bandwidth)
        est = estimate_exits(lat, bw, self.bw_scale, self.prominence, self.max_valley, self.min_mass, self.max_exits,
                             rare_prominence=self.rare_prominence, min_z=self.min_z)
        exits = torch.from_numpy(est.labels)

        # 2. training
        torch.manual_seed(ctx.seed)
        t0 = time.perf_counter()
        # the family's default options (never the victim's), with the inferred number of exits
        model = type(ctx.substitute)().build(oracle.num_classes, oracle.input_shape,
                                             exits=est.num_exits).to(ctx.device)
        opt = torch.optim.Adam(model.parameters(), lr=self.lr)
        targets, exit_dev = probs.to(ctx.device), exits.to(ctx.device)

        def step_loss(idx: Tensor, epoch: int) -> Tensor:
            outs = model(query_data.images(index[idx], ctx.device))
            idx = idx.to(ctx.device)
            loss = kl_to_targets(outs, targets[idx])
            if model.num_exits > 1 and self.strategy_weight > 0:
                loss = loss + self.strategy_weight * strategy_loss(outs, exit_dev[idx], self.alpha, self.beta)
            return loss

        fit(model, n, self.batch_size, self.epochs, opt, step_loss, ctx.seed, "train substitute", ctx.progress)
        train_seconds = time.perf_counter() - t0

        # 3. output-strategy search on the query samples
        conf, _ = exit_confidences(model, Split(query_data.x[index], query_data.y[index]), ctx.device)
        thresholds, agree = search_thresholds(conf.numpy(), est.labels)
        model.set_thresholds(thresholds)

        step = max(1, len(est.grid) // 256)
        details = {
            "estimated_exits": est.num_exits,
            "boundaries_s": est.boundaries.tolist(),
            "bandwidth_s": est.bandwidth,
            "samples": n,
            "repeats": self.repeats,
            "repeat_stat": self.repeat_stat,
            "perturb": self.perturb,
            "labels_only": self.labels_only,
            **pool.details(),
            "thresholds": [float(t) for t in thresholds],
            "query_exit_agreement": agree / n,
            "train_seconds": train_seconds,
            "kde": {"grid_s": est.grid[::step].tolist(), "density": est.density[::step].tolist()},
        }
        return StolenModel(model.eval(), details, index, exits)
