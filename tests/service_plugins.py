"""Hostile plugins for the service tests (importable by name: attacks run in their own process).

``Hostile`` tries every route into the victim an in-process attack had: the handle's closures,
the garbage collector, the call stack, a tensor subclass that watches what touches it, and edits
of the handle's budget counters; it records what it reached. ``Cheater`` answers garbage on its
first deployment and honestly on the second (the separate cost deployment a runner once made)."""

from __future__ import annotations

import gc
import itertools
import sys
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from benchmark.api.attack import Attack, StolenModel
from benchmark.api.defense import Defense
from benchmark.errors import BudgetExceeded
from benchmark.oracle import Oracle, Response

SERVER_SIDE = ("Oracle", "VictimOracle", "DefendedOracle", "Service", "_Recording", "OwnerResources")


def _server_side(obj) -> bool:
    if isinstance(obj, (Oracle, torch.nn.Module)) or type(obj).__name__ in SERVER_SIDE:
        return True
    return isinstance(obj, Tensor) and obj.requires_grad  # a model's parameters


class Spy(Tensor):
    seen: ClassVar[list] = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        for a in list(args) + list((kwargs or {}).values()):
            if isinstance(a, torch.nn.Parameter):
                Spy.seen.append(func.__name__)
        return super().__torch_function__(func, types, args, kwargs or {})


@dataclass(frozen=True)
class Hostile(Attack):
    name = "hostile-test"

    def run(self, oracle, query_data, budget, ctx) -> StolenModel:
        reached = []
        for cell in getattr(oracle._query, "__closure__", None) or ():  # 1 the handle's closures
            seen = [cell.cell_contents, *vars(cell.cell_contents).values()] if hasattr(cell.cell_contents, "__dict__") \
                else [cell.cell_contents]
            reached += [f"closure:{type(o).__name__}" for o in seen if _server_side(o)]
        reached += [f"gc:{type(o).__name__}" for o in gc.get_objects() if _server_side(o)]  # 2 every live object
        frame = sys._getframe()  # 3 the call stack
        while frame is not None:
            reached += [f"frame:{k}" for k, v in frame.f_locals.items() if _server_side(v)]
            frame = frame.f_back
        x = query_data.images(slice(0, 8))
        oracle.query(x.as_subclass(Spy))  # 4 a tensor subclass as a query
        reached += [f"torch_function:{f}" for f in Spy.seen]
        object.__setattr__(oracle, "_budget", 10 * budget)  # 5 budget edits, then past the budget
        object.__setattr__(oracle, "_used", lambda: 0)
        answered, refused = 8, 0
        while answered < 2 * budget:
            try:
                oracle.query(x)
                answered += 8
            except BudgetExceeded:
                refused += 1
                break
        model = ctx.substitute.build(oracle.num_classes, oracle.input_shape)
        return StolenModel(model, {"reached": reached, "answered": answered, "refused": refused})


_WRAPS = itertools.count()


@dataclass(frozen=True)
class Garbage(Defense):
    acts_on = "output"

    def apply(self, state, x, response: Response, account: str = "") -> Response:
        return Response(torch.roll(response.probs, 1, dims=1), response.latency)


@dataclass(frozen=True)
class Cheater(Defense):
    acts_on = "output"

    def make_state(self, oracle, seed):
        return {"honest": next(_WRAPS) % 2 == 1}

    def apply(self, state, x, response: Response, account: str = "") -> Response:
        return response if state["honest"] else Response(torch.roll(response.probs, 1, dims=1), response.latency)
