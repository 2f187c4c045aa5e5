"""The Oracle: the black-box service, the ONLY thing an attack may touch.

``query(x) -> Response(probs, latency)`` for a batch of images; counts queries against a budget
and refuses past it (the whole batch, before answering any of it). Server-side code (defenses,
the runner) sees the Oracle; the attack gets ``oracle.black_box()``, a facade that holds no
reference to the model, the timing profile or the server's logs.

Every batch is checked before a single query is charged: a ``torch.Tensor`` (else
``InvalidQueryType``, a TypeError) of an accepted dtype (``input_dtypes``; the image oracle
``VictimOracle`` takes exactly ``torch.float32``, nothing is converted), non-empty, of shape
``(B, *input_shape)``, every value finite and inside ``input_range`` (``[0, 1]`` for images) --
else ``InvalidQuery`` (a ValueError). A refused batch leaves ``used`` unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from benchmark.errors import BudgetExceeded, InvalidQuery, InvalidQueryType
from benchmark.timing import LatencyProfile

# dtypes checked through numpy on the CPU: far cheaper than torch for the tiny batches of exact extraction
_NUMPY_FLOATS = (torch.float16, torch.float32, torch.float64)


@dataclass(frozen=True)
class Response:
    """One batch's answer: probabilities (B, C) float32 on CPU; latency (B,) float64 seconds;
    server-side only, the exit each sample left at (B,) long (never sent to a client)."""

    probs: Tensor
    latency: Tensor
    exits: Tensor | None = None


@dataclass(frozen=True)
class OwnerResources:
    """What the victim's owner has and a defense may use server-side (e.g. to train a surrogate
    or an out-of-distribution detector): the deployed model, the owner's task data, the device
    and a cache folder for what the defense trains (keyed by the victim's cache key)."""

    model: Any
    task: Any
    device: str
    cache_key: str


class Oracle:
    """Base class: input checks and budget bookkeeping around ``_answer``; subclasses produce the
    responses and may narrow what they accept (``input_dtypes``, ``input_range``)."""

    #: dtypes a query batch may have; None: any floating-point dtype
    input_dtypes: ClassVar[tuple[torch.dtype, ...] | None] = None
    #: closed interval every input value must lie in; None: any finite value
    input_range: ClassVar[tuple[float, float] | None] = None

    def __init__(self, budget: int, num_classes: int, input_shape: tuple[int, ...]) -> None:
        self.budget = int(budget)
        self.used = 0
        self.num_classes = num_classes
        self.input_shape = tuple(input_shape)

    @property
    def remaining(self) -> int:
        return self.budget - self.used

    def query(self, x: Tensor, account: str = "") -> Response:
        """Answer the batch ``x`` from ``account`` (checked by ``check_query`` first), charging
        ``len(x)`` queries. The base oracle ignores the account; defenses may not."""
        self.check_query(x)
        n = int(x.shape[0])
        if n > self.remaining:
            raise BudgetExceeded(f"query budget exhausted: asked for {n} more, {self.remaining} of "
                                 f"{self.budget} left")
        self.used += n
        return self._answer(x)

    def check_query(self, x: Tensor) -> None:
        """Refuse a batch this oracle does not answer (see the module docstring); charges nothing."""
        if not isinstance(x, Tensor):
            raise InvalidQueryType(f"queries must be a torch.Tensor, got {type(x).__name__}")
        if self.input_dtypes is not None and x.dtype not in self.input_dtypes:
            raise InvalidQueryType(f"queries must have dtype {' or '.join(map(str, self.input_dtypes))}, "
                                   f"got {x.dtype}")
        if not x.is_floating_point():
            raise InvalidQueryType(f"queries must have a floating-point dtype, got {x.dtype}")
        shape = f"(B, {', '.join(map(str, self.input_shape))})"
        if x.dim() != 1 + len(self.input_shape) or tuple(x.shape[1:]) != self.input_shape:
            raise InvalidQuery(f"queries must have shape {shape}, got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise InvalidQuery(f"queries must have shape {shape} with B >= 1, got an empty batch")
        values = x.detach().numpy() if x.device.type == "cpu" and x.dtype in _NUMPY_FLOATS else x.detach()
        if not bool(values.isfinite().all() if isinstance(values, Tensor) else np.isfinite(values).all()):
            raise InvalidQuery("queries must be finite, got NaN or infinite values")
        if self.input_range is not None:
            lo, hi = self.input_range
            xmin, xmax = float(values.min()), float(values.max())
            if xmin < lo or xmax > hi:
                raise InvalidQuery(f"query values must lie in [{lo:g}, {hi:g}], got values in "
                                   f"[{xmin:g}, {xmax:g}]")

    def _answer(self, x: Tensor) -> Response:
        raise NotImplementedError

    # server-side view, for defenses
    @property
    def latency_profile(self) -> LatencyProfile | None:
        return None

    #: the owner's resources, where the deployment has them (the runner's service does)
    owner: OwnerResources | None = None

    def black_box(self) -> BlackBox:
        return BlackBox(self)


class ForwardingOracle(Oracle):
    """An Oracle in front of another (``inner``): counters, shapes, profile, owner resources and
    input checks are the inner oracle's; subclasses change ``query``."""

    def __init__(self, inner: Oracle) -> None:  # no super().__init__: the counters are the inner's
        self.inner = inner

    budget = property(lambda self: self.inner.budget)
    used = property(lambda self: self.inner.used)
    num_classes = property(lambda self: self.inner.num_classes)
    input_shape = property(lambda self: self.inner.input_shape)
    latency_profile = property(lambda self: self.inner.latency_profile)
    owner = property(lambda self: self.inner.owner)

    def check_query(self, x: Tensor) -> None:
        self.inner.check_query(x)

    def query(self, x: Tensor, account: str = "") -> Response:
        return self.inner.query(x, account)


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
        if not isinstance(x, Tensor):
            raise InvalidQueryType(f"queries must be a torch.Tensor, got {type(x).__name__}")
        r = self._query(x.detach().cpu())
        return Response(r.probs.clone(), r.latency.clone())  # exits stay server-side

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
    server-side (``exit_log``) for scoring. Accepts float32 images with values in [0, 1] only
    (``Split.images`` gives exactly that); anything else is refused before it is charged."""

    input_dtypes = (torch.float32,)
    input_range = (0.0, 1.0)

    def __init__(self, model, timing, budget: int, batch_size: int = 512, owner: OwnerResources | None = None) -> None:
        super().__init__(budget, model.num_classes, model.input_shape)
        self.owner = owner
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
        probs, lats, exit_ids = [], [], []
        for start in range(0, len(x), self._batch):
            logits, exits, lat = self._timing.serve(self._model, x[start:start + self._batch].to(self._device))
            probs.append(torch.softmax(logits.float(), 1).cpu())
            lats.append(lat)
            exit_ids.append(exits.cpu())
        self.exit_log.extend(exit_ids)
        return Response(torch.cat(probs), torch.cat(lats).double(), torch.cat(exit_ids))
