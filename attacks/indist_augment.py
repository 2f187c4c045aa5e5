"""indist_augment: queries that look in distribution, made from a few in-distribution images: the
adaptive attack against adaptive misinformation (Kariyappa & Qureshi, "Defending Against Model
Stealing Attacks with Adaptive Misinformation", CVPR 2020).

Adaptive misinformation answers a query from its misinformation model only where an
out-of-distribution score says the query looks out of distribution (here the victim's max softmax
probability below ``tau``); queries that look like the owner's data get the victim's true answer.
The paper's own discussion names the way around it: an attacker with in-distribution data. The
threat model assumed here is a small amount of it, ``seeds`` images (default 500) of the task's
distribution, the rows of the query set the attacker is given (run with ``--query-data
synthetic-indist``, fresh images of the ``synthetic`` task; on another task, a query set of that
task's kind), and no labels (the victim labels them). The rest of the budget is spent on copies of
the seeds that stay in the task's distribution, in the spirit of the synthetic augmentation of
Papernot et al. ("Practical Black-Box Attacks against Machine Learning", AsiaCCS 2017) and of
mixup (Zhang et al., ICLR 2018), with augmentations that keep a task image a task image:

- a random shift by up to ``shift`` pixels in each direction (2; a cyclic roll);
- a blend with another seed, weight ``w ~ U(0, blend)`` (0.2); the ``synthetic`` task's own
  images mix in another class's pattern, so a light blend is itself a task-like image;
- Gaussian pixel noise of standard deviation ``noise`` (0.02 of the pixel range).

The first ``min(seeds, budget)`` queries are the seeds themselves, then copies of seeds drawn
uniformly at random, each augmented independently, stored as uint8 images. The substitute is
trained like every baseline's (``attacks/_baseline.py``: soft labels, performance loss on all
exits, Adam) and gets the output strategy option ``strategy`` documented there; the adaptive
options (``labels_only``, ``accounts``, ``sybil``, ``mix``) apply. Cost: none in queries; the
attacker needs the ``seeds`` in-distribution images, which the paper's threat model (an attacker
without in-distribution data) does not grant.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from attacks._baseline import BaselineAttack, build_substitute, finish, holdout, query_all, train_substitute
from attacks._common import Accounts
from benchmark.api.attack import AttackContext, StolenModel
from benchmark.data import Split, to_uint8
from benchmark.errors import ConfigError
from benchmark.oracle import BlackBox
from benchmark.plugins import ATTACKS

CHUNK = 2_000


def augment(seeds: Tensor, n: int, gen: torch.Generator, shift: int = 2, blend: float = 0.2,
            noise: float = 0.02) -> Tensor:
    """``n`` augmented copies (float images in [0, 1]) of ``seeds`` (float (S, C, H, W)): a seed
    drawn at random, rolled by up to ``shift`` pixels, blended with another seed at a weight drawn
    from U(0, ``blend``), plus N(0, ``noise``^2) pixel noise."""
    s = len(seeds)
    base = seeds[torch.randint(0, s, (n,), generator=gen)]
    other = seeds[torch.randint(0, s, (n,), generator=gen)]
    w = (blend * torch.rand(n, generator=gen))[:, None, None, None]
    out = (1 - w) * base + w * other
    if shift > 0:
        dx = torch.randint(-shift, shift + 1, (n,), generator=gen).tolist()
        dy = torch.randint(-shift, shift + 1, (n,), generator=gen).tolist()
        out = torch.stack([torch.roll(img, (a, b), dims=(-2, -1)) for img, a, b in zip(out, dy, dx)])
    if noise > 0:
        out = out + noise * torch.randn(out.shape, generator=gen)
    return out.clamp_(0, 1)


@ATTACKS.register("indist_augment")
@dataclass(frozen=True)
class InDistAugment(BaselineAttack):
    """A few in-distribution seed images, augmented to fill the budget (vs adaptive misinformation)."""

    seeds: int = 500
    shift: int = 2
    blend: float = 0.2
    noise: float = 0.02

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.seeds < 1 or self.shift < 0 or not 0 <= self.blend <= 0.5 or self.noise < 0:
            raise ConfigError("attack 'indist_augment': need seeds >= 1, shift >= 0, 0 <= blend <= 0.5 "
                              "and noise >= 0")

    def queries(self, query_data: Split, n: int, gen: torch.Generator) -> tuple[Split, Tensor]:
        """The ``n`` query images (uint8 Split; labels are the query set's own, unused) and the rows
        of ``query_data`` used as seeds."""
        rows = torch.randperm(len(query_data), generator=gen)[:min(self.seeds, n, len(query_data))]
        xs = [query_data.x[rows]]
        seeds = query_data.images(rows)
        for start in range(len(rows), n, CHUNK):
            m = min(CHUNK, n - start)
            xs.append(to_uint8(augment(seeds, m, gen, self.shift, self.blend, self.noise)))
        x = torch.cat(xs)
        return Split(x, torch.zeros(len(x), dtype=torch.long)), rows

    def run(self, oracle: BlackBox, query_data: Split, budget: int, ctx: AttackContext) -> StolenModel:
        n = self.usable_budget(oracle, budget)
        gen = torch.Generator().manual_seed(ctx.seed)
        data, rows = self.queries(query_data, n, gen)
        pool = Accounts.of(oracle, ctx, budget, self, natural=query_data)
        probs = query_all(pool, data, ctx, "query victim (augmented seeds)")
        n = len(probs)
        data = Split(data.x[:n], data.y[:n])
        train_rows, val_rows = holdout(n, self.val_fraction, gen)
        model = build_substitute(oracle, ctx)
        seconds = train_substitute(model, data, probs, train_rows, self, ctx)
        details = {"queries": n, "seed_images": len(rows), "augmented": max(0, n - len(rows)),
                   "train_seconds": seconds, "labels_only": self.labels_only,
                   "victim_mean_confidence": float(probs.max(1).values.mean()) if n else None, **pool.details()}
        return finish(model, data, probs, train_rows, val_rows, self, ctx, details)
