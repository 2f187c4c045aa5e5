"""jitter: random extra latency on every response (a classic timing-channel defense).

``size`` is the jitter's scale relative to the victim's exit-latency span (slowest minus fastest
exit mean), so one setting means the same on every machine; ``dist`` picks uniform [0, size*span]
or exponential with mean size*span/2. With ``keyed=true`` the jitter is a keyed pseudo-random
function of the input (HMAC-SHA256 with a secret drawn from the seed), so asking the same query
again returns the same delay and repeating queries cannot average it away.

The key is the input's canonical form, its pixels quantised to the 256 uint8 levels images are
stored in (``defenses._common.canonical_bytes``), not its exact float bytes: a perturbation below
half a level per pixel (e.g. one float step, ``torch.nextafter``) gets the same delay. What it
costs and what it leaves open: two inputs that round to the same uint8 image share a delay (they
are the same image as stored); an attacker who moves one pixel by a whole level (1/255) draws a
fresh delay (imperceptible to the eye, no longer to float precision); and an attacker who first
puts pixels exactly on rounding boundaries (half a level off a stored value) can flip the key of
each such pixel with one float step, so the keyed delay stops averaging-by-repeats only for
inputs it did not craft (any quantised key has boundaries; see
``tests/defenses/test_literature_defenses.py``). Hashing one 32x32x3 image costs a few microseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from benchmark.api.defense import Defense
from benchmark.errors import ConfigError
from benchmark.oracle import Oracle, Response
from benchmark.plugins import DEFENSES
from defenses._common import keyed_uniforms


def exit_span(oracle: Oracle) -> float:
    """Owner-side knowledge: slowest minus fastest exit mean latency (seconds)."""
    profile = oracle.latency_profile
    if profile is None or len(profile.mean) < 2:
        return 1e-3
    return float(max(profile.mean) - min(profile.mean))


@DEFENSES.register("jitter")
@dataclass(frozen=True)
class Jitter(Defense):
    """Random extra latency on every answer, i.i.d. or keyed on the input's canonical form."""

    acts_on = "timing"

    size: float = 1.0
    dist: str = "uniform"
    keyed: bool = False

    #: options at which the defense answers exactly as ``none`` (checked by the contract tests)
    zero_options: ClassVar[dict] = {"size": 0.0}

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ConfigError(f"defense 'jitter': size must be >= 0, got {self.size}")
        if self.dist not in ("uniform", "exponential"):
            raise ConfigError(f"defense 'jitter': dist must be uniform or exponential, got {self.dist!r}")

    def make_state(self, oracle: Oracle, seed: int) -> Any:
        rng = np.random.default_rng([seed, 0x717])
        key = rng.bytes(32)
        return {"rng": rng, "key": key, "scale": self.size * exit_span(oracle)}

    def _uniforms(self, state: dict, x: Tensor) -> np.ndarray:
        if not self.keyed:
            return state["rng"].random(len(x))
        return keyed_uniforms(state["key"], x)

    def apply(self, state: Any, x: Tensor, response: Response, account: str = "") -> Response:
        u = self._uniforms(state, x)
        if self.dist == "uniform":
            extra = u * state["scale"]
        else:
            extra = -np.log1p(-u) * state["scale"] / 2
        return Response(response.probs, response.latency + torch.from_numpy(extra))
