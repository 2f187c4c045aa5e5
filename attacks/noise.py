"""noise: model theft with noise inputs (Roberts, Prabhu, McAteer, "Model Weight Theft With Just
Noise Inputs: The Curious Case of the Petulant Attacker", arXiv 1912.08987, 2019), the ``Noise``
row of the multi-exit paper's Table 1.

The attacker owns no data at all: every query is an image of i.i.d. noise, and the substitute is
distilled from the victim's softmax answers to them. Roberts et al. steal MNIST and KMNIST models
with i.i.d. Bernoulli noise inputs, hence the default ``distribution=bernoulli`` (each pixel and
channel is 1 with probability ``p`` = 0.5, else 0); ``uniform`` (U[0, 1]) and ``gaussian``
(N(``mean``, ``std``^2) clipped to [0, 1]; the defaults are N(0, 1) after the models' input
normalisation) are options. The query set passed to the attack is ignored.

The substitute is trained like every baseline's (``attacks/_baseline.py``: performance loss on all
exits, Adam, same epochs as ``ours``, the family's default exits) and gets the output strategy
option ``strategy`` documented there (``owner-rule`` calibrates on noise queries, which is all the
data this attacker has).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from attacks._baseline import (
    NOISE_KINDS,
    BaselineAttack,
    as_split,
    build_substitute,
    finish,
    holdout,
    noise_images,
    query_all,
    train_substitute,
)
from attacks._common import Accounts
from benchmark.api.attack import AttackContext, StolenModel
from benchmark.data import Split
from benchmark.errors import ConfigError
from benchmark.oracle import BlackBox
from benchmark.plugins import ATTACKS

CHUNK = 2_000


@ATTACKS.register("noise")
@dataclass(frozen=True)
class Noise(BaselineAttack):
    """Model theft with i.i.d. noise queries (Roberts et al. 2019); Bernoulli noise by default."""

    distribution: str = "bernoulli"
    p: float = 0.5
    mean: float = 0.5
    std: float = 0.25

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.distribution not in NOISE_KINDS:
            raise ConfigError(f"attack 'noise': distribution must be one of {', '.join(NOISE_KINDS)}, "
                              f"got {self.distribution!r}")
        if not 0 < self.p < 1 or self.std <= 0:
            raise ConfigError("attack 'noise': need 0 < p < 1 and std > 0")

    def run(self, oracle: BlackBox, query_data: Split, budget: int, ctx: AttackContext) -> StolenModel:
        n = self.usable_budget(oracle, budget)
        gen = torch.Generator().manual_seed(ctx.seed)
        parts = [as_split(noise_images(min(CHUNK, n - s), oracle.input_shape, gen, self.distribution, self.p,
                                       self.mean, self.std)) for s in range(0, n, CHUNK)]
        data = Split(torch.cat([s.x for s in parts]), torch.cat([s.y for s in parts]))
        pool = Accounts.of(oracle, ctx, budget, self, natural=query_data)
        probs = query_all(pool, data, ctx, "query victim (noise)")
        n = len(probs)
        data = Split(data.x[:n], data.y[:n])
        train_rows, val_rows = holdout(n, self.val_fraction, gen)
        model = build_substitute(oracle, ctx)
        seconds = train_substitute(model, data, probs, train_rows, self, ctx)
        labels = torch.bincount(probs.argmax(1), minlength=oracle.num_classes)
        details = {"queries": n, "distribution": self.distribution, "train_seconds": seconds,
                   "victim_label_hist": (labels.double() / max(n, 1)).tolist(),
                   "victim_mean_confidence": float(probs.max(1).values.mean()) if n else None,
                   "labels_only": self.labels_only, **pool.details()}
        return finish(model, data, probs, train_rows, val_rows, self, ctx, details)
