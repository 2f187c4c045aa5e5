"""knockoff: Knockoff Nets (Orekondy, Schiele, Fritz, "Knockoff Nets: Stealing Functionality of
Black-Box Models", CVPR 2019), the ``Knock`` row of the multi-exit paper's Table 1.

The attacker queries natural images from an unrelated distribution (here the query set) and trains
a knockoff on the victim's soft outputs. Two sampling strategies for the transfer set (paper Sec. 4):

``--attack-opt sampling=random``
    Draw the transfer set uniformly without replacement from the query set, query it, train.

``--attack-opt sampling=adaptive``
    A gradient bandit (Sutton & Barto, Sec. 2.8) over the query set's classes picks what to query.
    At each step ``batch_size`` actions z ~ pi = softmax(H) are drawn, each answered by the next
    unused image of class z (a class leaves the action set once its images are used up); the
    victim's outputs y give each query a reward, and a knockoff trained online on the queries so
    far (one Adam step per batch) supplies the loss reward. The paper's three rewards:

    - certainty: the margin between the victim's two largest probabilities, y_(1) - y_(2);
    - diversity: sum_k max(0, y_k - mean of y_k over the last ``window`` (Delta) answers);
    - loss: the online knockoff's loss on the query before it learns from it (here the suite's
      performance loss: KL from y to every exit, summed).

    Each is rescaled to [0, 1] with the running min and max of that reward so far and their sum
    (``reward=all``; or one of ``cert``, ``div``, ``loss``) is the reward r. Per query, in order,
    with baseline r_bar = the mean of the earlier rewards: H(z) += a (r - r_bar)(1 - pi(z)) and
    H(z') -= a (r - r_bar) pi(z') for z' != z, a = ``bandit_lr``. As in the paper's pipeline, the
    transfer set the policy collected is then used to train the final knockoff from scratch, exactly
    as for random sampling. The paper's hierarchy over actions (coarse-to-fine classes) only matters
    for label sets of hundreds of classes; the query sets here have flat labels (``synthetic-ood``: 8 and
    ``synthetic-world``: 9 families; TinyImageNet: 200 classes), so the bandit is flat.

Not fixed by anything we could check in the paper, so options with stated defaults: ``window``
(Delta, 100 answers) and ``bandit_lr`` (0.1, the usual gradient-bandit step size). The paper trains
pretrained ImageNet networks with SGD; here the substitute is trained like every other attack's
(``attacks/_baseline.py``: performance loss on all exits, Adam, same epochs), and gets the
output strategy option ``strategy`` (``global`` fixed threshold, default, or ``owner-rule``), documented
there.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch
from torch import Tensor

from attacks._baseline import (
    BaselineAttack,
    build_substitute,
    finish,
    holdout,
    train_substitute,
)
from attacks._common import Accounts, Exhausted, as_labels, kl_to_targets, query_split
from benchmark.api.attack import AttackContext, StolenModel
from benchmark.data import Split
from benchmark.errors import ConfigError
from benchmark.oracle import BlackBox
from benchmark.plugins import ATTACKS

SAMPLINGS = ("random", "adaptive")
REWARDS = ("all", "cert", "div", "loss")


class RunningScale:
    """Rescales a reward to [0, 1] with the running min and max of everything it has seen."""

    def __init__(self) -> None:
        self.lo = float("inf")
        self.hi = float("-inf")

    def __call__(self, values: Tensor) -> Tensor:
        self.lo = min(self.lo, float(values.min()))
        self.hi = max(self.hi, float(values.max()))
        if self.hi <= self.lo:
            return torch.zeros_like(values)
        return (values - self.lo) / (self.hi - self.lo)


def certainty_reward(y: Tensor) -> Tensor:
    """Margin between the two largest probabilities of each answer."""
    top = y.topk(min(2, y.shape[1]), dim=1).values
    return top[:, 0] - (top[:, 1] if top.shape[1] > 1 else 0)


def diversity_reward(y: Tensor, history: deque) -> Tensor:
    """sum_k max(0, y_k - mean of the last Delta answers), answer by answer (each then joins the
    window); 0 for the very first answer."""
    out = torch.zeros(len(y))
    for i, yi in enumerate(y):
        if history:
            out[i] = torch.relu(yi - torch.stack(tuple(history)).mean(0)).sum()
        history.append(yi)
    return out


@ATTACKS.register("knockoff")
@dataclass(frozen=True)
class KnockOff(BaselineAttack):
    """Knockoff Nets (Orekondy et al., CVPR 2019): query-set images, random or adaptive (bandit) sampling."""

    sampling: str = "random"
    reward: str = "all"
    window: int = 100
    bandit_lr: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sampling not in SAMPLINGS:
            raise ConfigError(f"attack 'knockoff': sampling must be random or adaptive, got {self.sampling!r}")
        if self.reward not in REWARDS:
            raise ConfigError(f"attack 'knockoff': reward must be one of {', '.join(REWARDS)}, got {self.reward!r}")
        if self.window < 1 or self.bandit_lr <= 0:
            raise ConfigError("attack 'knockoff': window must be >= 1 and bandit_lr > 0")

    def run(self, oracle: BlackBox, query_data: Split, budget: int, ctx: AttackContext) -> StolenModel:
        n = min(self.usable_budget(oracle, budget), len(query_data))
        gen = torch.Generator().manual_seed(ctx.seed)
        pool = Accounts.of(oracle, ctx, budget, self, natural=query_data)
        if self.sampling == "random":
            index = torch.randperm(len(query_data), generator=gen)[:n]
            probs, _ = query_split(pool, query_data, index, progress=ctx.progress, desc="query victim")
            index = index[:len(probs)]
            extra = {}
        else:
            index, probs, extra = self.adaptive(pool, query_data, n, gen, ctx)
        n = len(index)
        data = Split(query_data.x[index], query_data.y[index])
        train_rows, val_rows = holdout(n, self.val_fraction, gen)
        model = build_substitute(oracle, ctx)
        seconds = train_substitute(model, data, probs, train_rows, self, ctx)
        classes, counts = data.y.unique(return_counts=True)
        details = {"sampling": self.sampling, "queries": n, "train_seconds": seconds,
                   "labels_only": self.labels_only, **pool.details(),
                   "query_class_hist": {int(c): int(k) for c, k in zip(classes, counts)}, **extra}
        return finish(model, data, probs, train_rows, val_rows, self, ctx, details)

    def adaptive(self, oracle: BlackBox | Accounts, query_data: Split, n: int, gen: torch.Generator,
                 ctx: AttackContext) -> tuple[Tensor, Tensor, dict]:
        """Collect ``n`` queries with the gradient bandit; returns (rows of query_data, answers, details)."""
        classes = query_data.y.unique()
        if len(classes) < 2:
            raise ConfigError("attack 'knockoff' with sampling=adaptive needs a query set with class labels "
                              f"(>= 2 classes); this one has {len(classes)}")
        pools = [(query_data.y == c).nonzero().flatten() for c in classes]
        pools = [p[torch.randperm(len(p), generator=gen)] for p in pools]
        used = [0] * len(pools)
        h = torch.zeros(len(classes), dtype=torch.float64)
        reward_sum, reward_count = 0.0, 0
        scales = {name: RunningScale() for name in ("cert", "div", "loss")}
        history: deque = deque(maxlen=self.window)
        online = build_substitute(oracle, ctx)
        opt = torch.optim.Adam(online.parameters(), lr=self.lr)
        index, answers, actions, raw = [], [], [], {k: [] for k in scales}

        def policy() -> Tensor:
            alive = torch.tensor([u < len(p) for u, p in zip(used, pools)])
            return torch.softmax(h.masked_fill(~alive, float("-inf")), 0)

        collected = 0
        while collected < n:
            b = min(self.batch_size, n - collected)
            pi = policy()
            batch_rows, batch_actions = [], []
            for _ in range(b):
                z = int(torch.multinomial(pi, 1, generator=gen))
                batch_rows.append(int(pools[z][used[z]]))
                batch_actions.append(z)
                used[z] += 1
                if used[z] == len(pools[z]):
                    pi = policy()
            rows = torch.tensor(batch_rows)
            x = query_data.images(rows)
            try:
                y = oracle.query(x).probs.float()
            except Exhausted:  # every account refused (or no budget left): train on what we have
                break
            if len(y) < len(x):
                rows, x, batch_actions = rows[:len(y)], x[:len(y)], batch_actions[:len(y)]
            if self.labels_only:
                y = as_labels(y)
            x = x.to(ctx.device)
            target = y.clamp_min(1e-8)
            target = target / target.sum(1, keepdim=True)

            online.eval()
            with torch.no_grad():  # the online knockoff's loss on each query before it learns from it
                outs = online(x)
                logt = target.log().to(ctx.device)
                loss = sum((target.to(ctx.device) * (logt - torch.log_softmax(o, 1))).sum(1) for o in outs).cpu()
            parts = {"cert": certainty_reward(y), "div": diversity_reward(y, history), "loss": loss}
            for name, values in parts.items():
                raw[name].append(values)
            chosen = ("cert", "div", "loss") if self.reward == "all" else (self.reward,)
            r = sum(scales[name](parts[name]) for name in chosen)

            for z, rz in zip(batch_actions, r.tolist()):  # gradient-bandit update, query by query
                baseline = rz if reward_count == 0 else reward_sum / reward_count
                pi = policy()
                h -= self.bandit_lr * (rz - baseline) * pi
                h[z] += self.bandit_lr * (rz - baseline)
                reward_sum += rz
                reward_count += 1

            online.train()
            step_loss = kl_to_targets(online(x), y.to(ctx.device))
            opt.zero_grad(set_to_none=True)
            step_loss.backward()
            opt.step()

            index.append(rows)
            answers.append(y)
            actions.extend(batch_actions)
            collected += b
            if len(rows) < b:
                break

        final_pi = policy()
        details = {"bandit": {"classes": [int(c) for c in classes], "final_policy": final_pi.tolist(),
                              "actions_hist": torch.bincount(torch.tensor(actions, dtype=torch.long),
                                                             minlength=len(classes)).tolist(),
                              "mean_raw_reward": {k: float(torch.cat(v).mean()) if v else None
                                                   for k, v in raw.items()},
                              "mean_reward": reward_sum / max(1, reward_count), "reward": self.reward,
                              "window": self.window, "bandit_lr": self.bandit_lr}}
        if not index:
            return torch.empty(0, dtype=torch.long), torch.empty(0, oracle.num_classes), details
        return torch.cat(index), torch.cat(answers), details
