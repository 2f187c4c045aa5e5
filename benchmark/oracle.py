"""The Oracle: the black-box service, the ONLY thing an attack may touch.

``query(x) -> Response(probs, latency)`` for a batch of images in [0, 1]; counts queries against a
budget and refuses past it (the whole batch, before answering any of it). Server-side code
(defenses, the runner) sees the Oracle; the attack gets ``oracle.black_box()``, a facade that
holds no reference to the model, the timing profile or the server's logs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from benchmark.errors import BudgetExceeded
from benchmark.timing import LatencyProfile


@dataclass(frozen=True)
class Response:
    """One batch's answer: probabilities (B, C) float32 on CPU; latency (B,) float64 seconds."""

    probs: Tensor
    latency: Tensor


class Oracle:
    """Base class: budget bookkeeping around ``_answer``; subclasses produce the responses."""

    def __init__(self, budget: int, num_classes: int, input_shape: tuple[int, ...]) -> None:
        self.budget = int(budget)
        self.used = 0
        self.num_classes = num_classes
        self.input_shape = tuple(input_shape)

    @property
    def remaining(self) -> int:
        return self.budget - self.used

    def query(self, x: Tensor) -> Response:
        if x.dim() != 1 + len(self.input_shape) or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"queries must have shape (B, {', '.join(map(str, self.input_shape))}), "
                             f"got {tuple(x.shape)}")
        n = int(x.shape[0])
        if n > self.remaining:
            raise BudgetExceeded(f"query budget exhausted: asked for {n} more, {self.remaining} of "
                                 f"{self.budget} left")
        self.used += n
        return self._answer(x)

    def _answer(self, x: Tensor) -> Response:
        raise NotImplementedError

    # server-side view, for defenses
    @property
    def latency_profile(self) -> LatencyProfile | None:
        return None

    def black_box(self) -> BlackBox:
        return BlackBox(self)


class BlackBox:
    """What an attack holds: query, budget counters, output size and input shape. Nothing else
    (``__slots__`` and closures keep the server object out of reach of ordinary attribute access)."""

    __slots__ = ("_budget", "_input_shape", "_num_classes", "_query", "_used")

    def __init__(self, oracle: Oracle) -> None:
        self._query = lambda x: oracle.query(x)
        self._used = lambda: oracle.used
        self._budget = oracle.budget
        self._num_classes = oracle.num_classes
        self._input_shape = oracle.input_shape

    def query(self, x: Tensor) -> Response:
        r = self._query(x.detach().cpu())
        return Response(r.probs.clone(), r.latency.clone())

    @property
    def budget(self) -> int:
        return self._budget

    @property
    def used(self) -> int:
        return self._used()

    @property
    def remaining(self) -> int:
        return self._budget - self._used()

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self._input_shape


class VictimOracle(Oracle):
    """Serves a MultiExitNet through a timing channel; logs each answered sample's true exit
    server-side (``exit_log``) for scoring."""

    def __init__(self, model, timing, budget: int, batch_size: int = 512) -> None:
        super().__init__(budget, model.num_classes, model.input_shape)
        self._model = model.eval()
        self._timing = timing
        self._device = model.thresholds.device
        self._batch = batch_size
        self.exit_log: list[Tensor] = []

    @property
    def latency_profile(self) -> LatencyProfile | None:
        return self._timing.profile

    @property
    def num_exits(self) -> int:
        return self._model.num_exits

    @torch.no_grad()
    def _answer(self, x: Tensor) -> Response:
        probs, lats = [], []
        for start in range(0, len(x), self._batch):
            logits, exits, lat = self._timing.serve(self._model, x[start:start + self._batch].to(self._device))
            probs.append(torch.softmax(logits.float(), 1).cpu())
            lats.append(lat)
            self.exit_log.append(exits.cpu())
        return Response(torch.cat(probs), torch.cat(lats).double())
