"""Defense contract: a frozen dataclass of options whose ``wrap(oracle, seed)`` returns an Oracle
with the same interface, its outputs and/or timing changed. Runtime state (random generators,
per-account state, server-side resources such as the latency profile or ``oracle.owner``, the
owner's model and data) lives in ``make_state``; the response change in ``apply``, which sees the
batch, the undefended response and the opaque id of the account that asked (the only things a
real service sees). ``apply`` may raise ``AccountRefused`` to refuse an account (detection).
The service measures what the defense costs on honest traffic (``benchmark.service``)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor

from benchmark.oracle import ForwardingOracle, Oracle, Response


@dataclass(frozen=True)
class Defense:
    name: ClassVar[str] = "defense"
    #: what the defense touches, for tables and contract tests: "timing", "output", "both",
    #: "detection" or "none"
    acts_on: ClassVar[str] = "none"

    def wrap(self, oracle: Oracle, seed: int = 0) -> DefendedOracle:
        return DefendedOracle(oracle, self, seed)

    def make_state(self, oracle: Oracle, seed: int) -> Any:
        """Per-deployment state (e.g. an RNG); ``oracle`` is the server-side view."""
        return None

    def apply(self, state: Any, x: Tensor, response: Response, account: str = "") -> Response:
        """The defended response to queries ``x`` from ``account`` given the undefended ``response``."""
        return response


def defense_name(defense: Defense) -> str:
    """The registered name, or the class name of an unregistered defense instance."""
    return defense.name if defense.name != "defense" else type(defense).__name__


class DefendedOracle(ForwardingOracle):
    """An Oracle wrapped by a Defense; budget and shape are the inner oracle's."""

    def __init__(self, inner: Oracle, defense: Defense, seed: int) -> None:
        super().__init__(inner)
        self.defense = defense
        self.state = defense.make_state(inner, seed)
        # plugins written before accounts existed define apply(state, x, response): still served
        self._takes_account = "account" in inspect.signature(defense.apply).parameters
        self.answered = 0
        self.added_latency = 0.0

    def query(self, x: Tensor, account: str = "") -> Response:
        raw = self.inner.query(x, account)
        out = (self.defense.apply(self.state, x, raw, account=account) if self._takes_account
               else self.defense.apply(self.state, x, raw))
        if out.probs.shape != raw.probs.shape or out.latency.shape != raw.latency.shape:
            raise RuntimeError(f"defense {self.defense.name!r} changed the response shape")
        if out.exits is None and raw.exits is not None:
            out = Response(out.probs, out.latency, raw.exits)
        self.answered += len(x)
        self.added_latency += float((out.latency - raw.latency).sum())
        self.last_raw = raw
        return out

    def cost(self) -> dict:
        """What the defense added to the answered queries."""
        mean = self.added_latency / self.answered if self.answered else 0.0
        return {"added_latency_mean_s": mean, "answered": self.answered}
