"""Pieces every attack shares: batched querying through the attacker's accounts, refusal
handling, Sybil spreading and natural-query mixing, label-only targets and the distillation loss.

Accounts (:class:`Accounts`)
    An attack holds the run's oracle and, when it asks for ``accounts > 1`` (the runner reads
    ``attack.accounts``), further handles in ``ctx.sybils``; all share one budget. A detection
    defense (PRADA) may refuse an account: ``oracle.query`` raises ``AccountRefused`` and the
    refused batch was charged. The pool then drops that account and asks the same batch again from
    the next live account; with none left it stops (``Exhausted``) and the attack trains on what it
    has. ``details()`` reports the accounts, those refused, and the queries spent on refused
    batches (``refused_queries``). Adaptive attacks against PRADA (Juuti et al., EuroS&P 2019):

    - ``sybil`` (``spread`` here): the rows of each batch are dealt round-robin, in a random order,
      over the live accounts, so each account's stream is 1/k of the attack's (PRADA tests an
      account only once it holds more than ``min_distances`` = 100 distances: k >= N / 100
      accounts are never tested) and the near-duplicates a synthetic stream is made of land,
      mostly, on different accounts;
    - ``mix`` (natural-query mixing): a share ``mix`` of every account's queries are natural
      images (rows of the attack's query set, in a random order without repeats), interleaved with the attack's own,
      so the account's minimum-distance distribution looks like that of natural traffic. Costs
      ``mix / (1 - mix)`` extra queries per attack query; the mixed answers are discarded (the
      pool returns answers for the attack's rows only).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from benchmark.data import Split
from benchmark.errors import AccountRefused, ConfigError
from benchmark.oracle import BlackBox, Response


@dataclass(frozen=True)
class AdaptiveOptions:
    """The adaptive options the baselines and ``ours`` share (``docs/attacks.md``).

    ``labels_only``: train on the one-hot of each answer's top-1 class (``as_labels``);
    ``accounts``: handles sharing the budget; ``sybil``: deal each batch round-robin over them;
    ``mix``: share of every account's queries that are natural images (see :class:`Accounts`).

    Put it first among an attack's bases (``class A(AdaptiveOptions, AOptions)``) so that these
    fields come after the attack's own, as dataclasses order fields from the last base to the first.
    """

    labels_only: bool = False
    accounts: int = 1
    sybil: bool = False
    mix: float = 0.0

    def check_adaptive(self) -> None:
        """ConfigError for an ``accounts`` below 1 or a ``mix`` outside [0, 1)."""
        if self.accounts < 1:
            raise ConfigError(f"attack {self.name!r}: accounts must be >= 1, got {self.accounts}")
        if not 0 <= self.mix < 1:
            raise ConfigError(f"attack {self.name!r}: mix must be in [0, 1), got {self.mix}")


class Exhausted(Exception):
    """No account left that the service answers, or no budget left for the batch."""


class Accounts:
    """The attacker's accounts as one oracle (see the module docstring). ``query(x)`` answers a
    prefix of ``x`` (all of it unless the budget runs short) or raises ``Exhausted``."""

    def __init__(self, oracle: BlackBox, sybils: tuple[BlackBox, ...] = (), budget: int | None = None,
                 spread: bool = False, mix: float = 0.0, natural: Split | None = None, seed: int = 0) -> None:
        if not 0 <= mix < 1:
            raise ValueError(f"mix must be in [0, 1), got {mix}")
        self.boxes = [oracle, *sybils]
        self.live = list(range(len(self.boxes)))
        left = oracle.remaining
        self.budget = left if budget is None else min(int(budget), left)
        self.spent = 0
        self.refused_queries = 0
        self.refused_accounts: list[int] = []
        self.mixed_queries = 0
        self.spread, self.mix, self.natural = spread, float(mix), natural
        self.gen = torch.Generator().manual_seed(seed)
        self._turn = 0  # next account of the round-robin
        self._perm, self._cursor = torch.empty(0, dtype=torch.long), 0  # natural images, no repeats
        self.num_classes, self.input_shape = oracle.num_classes, oracle.input_shape

    @classmethod
    def of(cls, oracle, ctx, budget: int | None = None, attack=None, natural: Split | None = None) -> Accounts:
        """The pool for an attack run: ``oracle`` (already a pool: itself) plus ``ctx.sybils``, with
        the attack's ``sybil`` (round-robin spreading) and ``mix`` options where it has them."""
        if isinstance(oracle, Accounts):
            return oracle
        return cls(oracle, tuple(getattr(ctx, "sybils", ())), budget, bool(getattr(attack, "sybil", False)),
                   float(getattr(attack, "mix", 0.0)), natural, getattr(ctx, "seed", 0))

    @property
    def remaining(self) -> int:
        return self.budget - self.spent

    @property
    def used(self) -> int:
        return self.spent

    def details(self) -> dict:
        return {"accounts": len(self.boxes), "refused_accounts": len(self.refused_accounts),
                "refused_queries": self.refused_queries, "mixed_queries": self.mixed_queries,
                "spread": self.spread, "mix": self.mix}

    def _natural(self, n: int) -> Tensor:
        """The next ``n`` natural images, in a random order without repeats (an image asked twice
        has distance 0 to itself: a spike in PRADA's distances) until the set is used up."""
        rows = []
        while n > 0:
            if self._cursor >= len(self._perm):
                self._perm, self._cursor = torch.randperm(len(self.natural), generator=self.gen), 0
            take = self._perm[self._cursor:self._cursor + n]
            self._cursor += len(take)
            rows.append(take)
            n -= len(take)
        return self.natural.images(torch.cat(rows))

    def _ask(self, account: int, x: Tensor) -> Response:
        """One batch from one account, with natural queries mixed in; answers for ``x`` only."""
        n_mix = self._cost(len(x)) - len(x)
        if n_mix:
            order = torch.randperm(len(x) + n_mix, generator=self.gen)
            batch = torch.cat([x, self._natural(n_mix)])[order]
        else:
            order, batch = None, x
        self.spent += len(batch)
        try:
            r = self.boxes[account].query(batch)
        except AccountRefused:
            self.refused_queries += len(batch)
            self.refused_accounts.append(account)
            self.live.remove(account)
            raise
        self.mixed_queries += n_mix
        if order is None:
            return r
        mine = torch.empty_like(order)
        mine[order] = torch.arange(len(order))  # position of each original row in the batch
        keep = mine[:len(x)]
        return Response(r.probs[keep], r.latency[keep])

    def _cost(self, n: int) -> int:
        """Queries a batch of ``n`` attack rows costs, natural rows mixed in included."""
        mixing = self.mix > 0 and self.natural is not None and len(self.natural) > 0
        return n + (round(n * self.mix / (1 - self.mix)) if mixing else 0)

    def query(self, x: Tensor) -> Response:
        """Answers for the first rows of ``x`` the budget allows (all, normally); ``Exhausted`` when
        no account is left or not one row fits the budget."""
        while True:
            if not self.live:
                raise Exhausted("every account has been refused")
            n = len(x)
            while n > 0 and self._cost(n) > self.remaining:
                n -= 1
            if n == 0:
                raise Exhausted("the budget is spent")
            x = x[:n]
            try:
                if not self.spread or len(self.live) == 1:
                    return self._ask(self.live[0], x)
                return self._round_robin(x)
            except AccountRefused:
                continue  # that account is gone: the batch goes to the next live one

    def _round_robin(self, x: Tensor) -> Response:
        live = list(self.live)
        k = len(live)
        parts: list[tuple[Tensor, Response]] = []
        order = torch.randperm(len(x), generator=self.gen)  # deal in a random order: a row and the
        for j in range(k):  # rows derived from it (next batches, same positions) rarely share an account
            rows = order[torch.arange((j - self._turn) % k, len(x), k)]
            if len(rows):
                parts.append((rows, self._ask(live[j], x[rows])))  # AccountRefused: the caller re-asks
        self._turn = (self._turn + len(x)) % k
        probs = torch.empty(len(x), parts[0][1].probs.shape[1], dtype=parts[0][1].probs.dtype)
        lat = torch.empty(len(x), dtype=parts[0][1].latency.dtype)
        for rows, r in parts:
            probs[rows], lat[rows] = r.probs, r.latency
        return Response(probs, lat)


def query_split(oracle: BlackBox | Accounts, data: Split, index: Tensor, batch: int = 500,
                progress: bool = True, desc: str = "query", images=None) -> tuple[Tensor, Tensor]:
    """Query rows ``index`` of ``data`` in batches: (probs (M, C), latency (M,)) for the first M
    rows, M = len(index) unless every account was refused or the budget ran out first (then the
    attack trains on the M it has; the pool's ``details()`` say what was refused). ``images``
    (optional) maps rows to the float images to send instead of ``data.images``."""
    pool = oracle if isinstance(oracle, Accounts) else Accounts(oracle)
    probs, lats = [], []
    for start in tqdm(range(0, len(index), batch), desc=desc, disable=not progress, leave=False):
        rows = index[start:start + batch]
        try:
            r = pool.query(images(rows) if images is not None else data.images(rows))
        except Exhausted:
            break
        probs.append(r.probs.float())
        lats.append(r.latency)
        if len(r.probs) < len(rows):
            break
    if not probs:
        return torch.empty(0, pool.num_classes), torch.empty(0, dtype=torch.float64)
    return torch.cat(probs), torch.cat(lats)


def as_labels(probs: Tensor) -> Tensor:
    """Label-only targets: the one-hot of each answer's top-1 class. Output perturbations that keep
    the label (reverse sigmoid, top-1-preserving MAD) cannot change them."""
    return F.one_hot(probs.argmax(1), probs.shape[1]).to(probs.dtype)


def kl_to_targets(outs: list[Tensor], target: Tensor) -> Tensor:
    """Performance loss (multi-exit paper, Eq. 2): sum over exits of KL(victim output || exit i).
    With one-hot targets (``as_labels``) it is the cross-entropy with the victim's labels."""
    target = target.clamp_min(1e-8)
    target = target / target.sum(1, keepdim=True)
    return sum(F.kl_div(F.log_softmax(o, 1), target, reduction="batchmean") for o in outs)
