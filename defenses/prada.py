"""prada: detection of model-stealing query streams, Juuti et al., "PRADA: Protecting Against DNN
Model Stealing Attacks" (IEEE EuroS&P 2019).

Per account and per predicted class ``c`` the service keeps a growing set ``G_c`` of that
account's past queries. Each new query ``x`` (class ``c`` as the victim predicts it) has its minimum
L2 distance ``d`` to ``G_c`` recorded in the account's distance set ``D``; if ``d`` exceeds the
class threshold ``T_c``, ``x`` joins ``G_c`` and ``T_c`` becomes ``max(T_c, mean - std)`` of the
distances that admitted ``G_c``'s members. Natural queries give distances that look normally
distributed; synthetic queries made by small steps around seeds (Jacobian-based augmentation,
FGSM-style) give a skewed, many-modal set. Every ``test_every`` queries the Shapiro-Wilk statistic
``W`` of ``D`` (classes with at least ``class_min`` distances, outliers beyond ``outlier_std``
standard deviations dropped, at least ``min_distances`` left) is compared with ``delta``: ``W <
delta`` raises the alarm, and from then on the account is refused (``AccountRefused``; the batch
that raised it is charged and refused). These constants are those of the authors' public code
(SSG Aalto ``GrowingDistanceAgent``: test every 10 queries, classes with >= 10 distances, 3-sigma
outlier rejection, more than 100 distances).

Options: ``delta`` (the paper tunes it per victim so that benign streams raise no alarm; values
around 0.9 to 0.96 are reported; default 0.9; ``0`` is ``none``: W is never below 0),
``min_distances``, ``test_every``, ``class_min``, ``outlier_std``.

The alarm state is server-side, for the false-alarm rate on honest accounts:
``state["alarms"]`` maps each alarmed account to the number of its queries seen when the alarm
was raised; ``state["w"]`` maps accounts to their last W. Departures from the paper: the alarm is
final (the authors' agent re-evaluates and may clear it), as the detect-and-refuse deployment of
the paper describes; distances are L2 on the float images in [0, 1]. Cost: memory of every
admitted query per account and O(|G_c|) distance computations per query, one Shapiro-Wilk test
per ``test_every`` queries; the answers themselves are unchanged.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from scipy.stats import shapiro
from torch import Tensor

from benchmark.api.defense import Defense
from benchmark.errors import AccountRefused, ConfigError
from benchmark.oracle import Oracle, Response
from benchmark.plugins import DEFENSES


class _Rows:
    """A growing (n, d) float32 matrix (capacity doubling)."""

    def __init__(self, d: int) -> None:
        self.buf = np.empty((8, d), np.float32)
        self.n = 0

    def add(self, row: np.ndarray) -> None:
        if self.n == len(self.buf):
            self.buf = np.concatenate([self.buf, np.empty_like(self.buf)])
        self.buf[self.n] = row
        self.n += 1

    def min_dist(self, row: np.ndarray) -> float:
        diff = self.buf[:self.n] - row
        return float(np.sqrt(np.einsum("ij,ij->i", diff, diff).min()))


@dataclass
class Account:
    """One account's PRADA state."""

    growing: dict = field(default_factory=dict)  # class -> _Rows
    admitted: dict = field(default_factory=dict)  # class -> distances that admitted G_c's members
    threshold: dict = field(default_factory=dict)  # class -> T_c
    distances: dict = field(default_factory=dict)  # class -> min distances of the queries (D)
    seen: int = 0


@DEFENSES.register("prada")
@dataclass(frozen=True)
class Prada(Defense):
    """Per-account Shapiro-Wilk detection of synthetic query streams; refuses (Juuti et al. 2019)."""

    acts_on = "detection"
    zero_options: ClassVar[dict] = {"delta": 0.0}

    delta: float = 0.9
    min_distances: int = 100
    test_every: int = 10
    class_min: int = 10
    outlier_std: float = 3.0

    def __post_init__(self) -> None:
        if not 0 <= self.delta <= 1:
            raise ConfigError(f"defense 'prada': delta (a Shapiro-Wilk W threshold) must be in [0, 1], "
                              f"got {self.delta}")
        if self.min_distances < 3 or self.test_every < 1 or self.class_min < 1 or not self.outlier_std > 0:
            raise ConfigError("defense 'prada': min_distances must be >= 3 and test_every, class_min, "
                              "outlier_std positive")

    def make_state(self, oracle: Oracle, seed: int) -> Any:
        return {"accounts": {}, "alarms": {}, "w": {}}

    def _observe(self, acc: Account, row: np.ndarray, c: int) -> None:
        if c not in acc.growing:
            acc.growing[c] = _Rows(row.size)
            acc.growing[c].add(row)
            acc.admitted[c] = [0.0]
            acc.threshold[c] = 0.0
            return
        d = acc.growing[c].min_dist(row)
        acc.distances.setdefault(c, []).append(d)
        if d > acc.threshold[c]:
            acc.growing[c].add(row)
            acc.admitted[c].append(d)
            adm = np.asarray(acc.admitted[c])
            acc.threshold[c] = max(acc.threshold[c], float(adm.mean() - adm.std()))

    def statistic(self, acc: Account) -> float | None:
        """Shapiro-Wilk W of the account's distance set (None while too few distances)."""
        dists = [d for ds in acc.distances.values() if len(ds) >= self.class_min for d in ds]
        if not dists:
            return None
        arr = np.asarray(dists)
        arr = arr[np.abs(arr - arr.mean()) < self.outlier_std * arr.std()] if arr.std() > 0 else arr
        if len(arr) <= self.min_distances:
            return None
        if np.ptp(arr) == 0:
            return 1.0  # all distances equal: nothing like an attack's spread
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy warns that p-values are inexact past 5000; W is what we use
            return float(shapiro(arr).statistic)

    def apply(self, state: Any, x: Tensor, response: Response, account: str = "") -> Response:
        alarms = state["alarms"]
        if account in alarms:
            raise AccountRefused(f"account {account!r} is refused: PRADA raised an alarm after "
                                 f"{alarms[account]} of its queries")
        acc = state["accounts"].setdefault(account, Account())
        flat = x.detach().cpu().float().reshape(len(x), -1).numpy()
        labels = response.probs.argmax(1).tolist()
        for i in range(len(x)):
            self._observe(acc, flat[i], int(labels[i]))
            due = acc.seen % self.test_every == 0
            acc.seen += 1
            if due and self.delta > 0:
                w = self.statistic(acc)
                if w is not None:
                    state["w"][account] = w
                    if w < self.delta:
                        alarms[account] = acc.seen
                        raise AccountRefused(f"account {account!r} is refused: PRADA raised an alarm after "
                                             f"{acc.seen} of its queries (Shapiro-Wilk W={w:.3f} < delta={self.delta})")
        return response
