"""The victim's service: one deployment of the defended victim answering an attacker's accounts
and an honest user in one stream, with the budget and every counter kept here, server-side.

Honest traffic: held-out task images (``carve_honest``: half of the test split, never used for
training, thresholds or scoring), each asked once, from its own account, at a seeded uniformly
random point of the attacker's query stream; what the attacker leaves of its budget, the honest
user still asks after the attacker is done. Account ids are opaque (random hex from the seed), so
a defense tells the parties apart only by what a real service sees: the images and the account.
The defense's cost is measured on the honest answers only (``Service.cost``).

Both victim families are served this way: multi-exit victims (images, probabilities as float32)
and the exact-extraction family (flat float64 inputs, raw float64 outputs: ``float64=True``, with
the family's own ``labels`` rule and honest inputs that are plain vectors, see ``benchmark.exact``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from benchmark.data import Split
from benchmark.errors import AccountRefused, BudgetExceeded, InvalidQuery
from benchmark.oracle import ForwardingOracle, Oracle, Response

HONEST_BATCH = 256


def carve_honest(test: Split, seed: int) -> tuple[Split, Split]:
    """(scoring part, honest part) of the test split: a seeded half each, disjoint."""
    perm = torch.randperm(len(test), generator=torch.Generator().manual_seed(0x40E57 + seed))
    score, honest = perm[: len(test) - len(test) // 2].sort().values, perm[len(test) - len(test) // 2:]
    return Split(test.x[score], test.y[score]), Split(test.x[honest], test.y[honest])


class _Recording(ForwardingOracle):
    """Passes queries to the victim's oracle and keeps the last undefended response (the service
    compares it with what the defense made of it)."""

    def __init__(self, inner: Oracle) -> None:
        super().__init__(inner)
        self.last: Response | None = None

    def query(self, x: Tensor, account: str = "") -> Response:
        self.last = self.inner.query(x, account)
        return self.last


class Service:
    """Serves ``attacker_accounts`` accounts (one budget between them) and one honest user through
    ``defense.wrap(victim_oracle, seed)``. ``victim_oracle``'s own budget must allow
    ``budget + 2 * len(honest)`` (honest batches a defense refuses are answered undefended once
    more, for the reference accuracy). ``honest`` is any split-like object (``len``, ``images(idx)``,
    ``y``); ``labels`` turns answers into labels (argmax by default); ``float64`` sends answers to
    the attacker in float64 (raw outputs) instead of float32."""

    def __init__(self, victim_oracle: Oracle, defense, seed: int, budget: int, honest: Split | None = None,
                 attacker_accounts: int = 1, exit_flops: list[int] | None = None,
                 labels: Callable[[Tensor], Tensor] | None = None, float64: bool = False) -> None:
        self._victim = _Recording(victim_oracle)
        self._labels = labels if labels is not None else _argmax
        self.float64 = bool(float64)
        self.deployment = defense.wrap(self._victim, seed=seed)
        rng = np.random.default_rng([seed, 0x5E41CE])
        ids = [f"{v:08x}" for v in rng.choice(2**32, size=attacker_accounts + 1, replace=False)]
        self.honest_id, self.attacker_ids = ids[0], ids[1:]
        self.budget, self.used = int(budget), 0
        self.refused: set[str] = set()
        self.exit_flops = exit_flops
        self.honest = honest
        n = len(honest) if honest is not None else 0
        self._order = rng.permutation(n)
        self._positions = np.sort(rng.uniform(0, max(self.budget, 1), n))
        self._next = 0
        self._log: dict[str, list] = {k: [] for k in ("label", "raw", "served", "raw_lat", "lat", "raw_exit", "exit")}

    @property
    def num_classes(self) -> int:
        return self._victim.num_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self._victim.input_shape

    def query(self, account: int, x: Tensor) -> Response:
        """An attacker's batch from its account number ``account``: checked, charged, answered."""
        if not 0 <= account < len(self.attacker_ids):
            raise InvalidQuery(f"no account {account}: this client holds {len(self.attacker_ids)}")
        self._victim.check_query(x)
        n = len(x)
        if n > self.budget - self.used:
            raise BudgetExceeded(f"query budget exhausted: asked for {n} more, {self.budget - self.used} of "
                                 f"{self.budget} left")
        self._serve_honest(until=self.used + n)
        self.used += n
        aid = self.attacker_ids[account]
        if aid in self.refused:
            raise AccountRefused(f"account {aid} is refused by the service")
        try:
            out = self.deployment.query(x, aid)
        except AccountRefused:
            self.refused.add(aid)
            raise
        return Response(out.probs, out.latency)  # exits stay here

    def finish(self) -> None:
        """The attacker is done: the honest user asks the rest of its images."""
        self._serve_honest(until=np.inf)

    def _serve_honest(self, until: float) -> None:
        if self.honest is None:
            return
        stop = int(np.searchsorted(self._positions, until, side="left")) if until != np.inf else len(self._order)
        while self._next < stop:
            idx = torch.from_numpy(self._order[self._next:min(stop, self._next + HONEST_BATCH)])
            self._next += len(idx)
            self._answer_honest(self.honest.images(idx), self.honest.y[idx])

    def _answer_honest(self, x: Tensor, y: Tensor) -> None:
        log = self._log
        self._victim.last = None
        try:
            out = None if self.honest_id in self.refused else self.deployment.query(x, self.honest_id)
        except AccountRefused:
            self.refused.add(self.honest_id)
            out = None
        raw = self._victim.last
        if raw is None or len(raw.probs) != len(x):  # refused before the victim answered
            raw = self._victim.query(x, self.honest_id)
        log["label"].append(y)
        log["raw"].append(self._labels(raw.probs))
        log["raw_lat"].append(raw.latency)
        log["raw_exit"].append(raw.exits if raw.exits is not None else torch.zeros(len(x), dtype=torch.long))
        if out is None:  # refused: the honest user gets no answer
            log["served"].append(torch.full((len(x),), -1))
            log["lat"].append(torch.full((len(x),), float("nan"), dtype=torch.float64))
            log["exit"].append(torch.full((len(x),), -1))
        else:
            log["served"].append(self._labels(out.probs))
            log["lat"].append(out.latency)
            log["exit"].append(out.exits if out.exits is not None else log["raw_exit"][-1])

    def cost(self) -> dict:
        """What the defense cost the honest user: accuracy lost, added latency (mean, p50, p99),
        the share of early-exit savings kept (FLOPs and latency) and refused honest queries."""
        if not self._log["label"]:
            return {"honest_queries": 0}
        c = {k: torch.cat(v) for k, v in self._log.items()}
        answered = c["served"] >= 0
        raw_acc = float((c["raw"] == c["label"]).double().mean())
        served_acc = float((c["served"] == c["label"]).double().mean())
        added = (c["lat"] - c["raw_lat"])[answered].numpy()
        out = {"accuracy_lost": raw_acc - served_acc, "defended_acc": served_acc, "undefended_acc": raw_acc,
               "added_latency_mean_s": float(added.mean()) if added.size else None,
               "added_latency_p50_s": float(np.percentile(added, 50)) if added.size else None,
               "added_latency_p99_s": float(np.percentile(added, 99)) if added.size else None,
               "honest_queries": len(answered), "honest_refused": int((~answered).sum()),
               "honest_share": len(answered) / (len(answered) + self.used)}
        profile = self._victim.latency_profile
        if profile is not None and answered.any():
            full = max(profile.mean)
            out["latency_savings_kept"] = _kept(full, float(c["raw_lat"][answered].mean()),
                                                float(c["lat"][answered].mean()))
        if self.exit_flops is not None and answered.any():
            f = torch.tensor(self.exit_flops, dtype=torch.float64)
            out["flops_savings_kept"] = _kept(float(f[-1]), float(f[c["raw_exit"][answered]].mean()),
                                              float(f[c["exit"][answered]].mean()))
        return out


    def labels_changed(self) -> float | None:
        """Share of honest inputs whose served label differs from the undefended one (a refused
        input counts as changed); None without honest traffic."""
        if not self._log["label"]:
            return None
        return float((torch.cat(self._log["served"]) != torch.cat(self._log["raw"])).double().mean())


def _argmax(probs: Tensor) -> Tensor:
    return probs.argmax(1)


def _kept(full: float, undefended: float, defended: float) -> float | None:
    """Share of the early-exit saving (full - undefended) the defended service still gives; None
    where the undefended service saves less than 1% of the full cost (nothing to keep)."""
    saving = full - undefended
    return None if saving <= 0.01 * full else (full - defended) / saving
