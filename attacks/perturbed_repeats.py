"""perturbed_repeats: the multi-exit timing attack (``ours``) with every query asked R times, each
repeat an imperceptibly perturbed copy, the fastest answer kept: the adaptive attack against
random and input-keyed delays.

Random delays (``jitter``) average out over repeats (Expectation over Transformation, Athalye,
Carlini, Wagner, "Obfuscated Gradients Give a False Sense of Security", ICML 2018); keyed delays
(keyed ``jitter``; TimeGuard, Li et al., "Auditing Membership Leakages of Multi-Exit Networks", ACM
CCS 2022, input-seeded) return the same delay for the same input, so the repeats here move
``perturb_pixels`` (4) random pixel values of each copy by one uint8 level: the canonical form the
defenses key on changes, a fresh delay is drawn, and the minimum over R copies approaches the
service time (for a uniform delay of span S the minimum's excess has mean S / (R + 1)). The
exit a perturbed copy leaves at can differ from the original's; one level on four pixels rarely
moves it.

This is ``ours`` with ``repeats=4`` and ``perturb=true`` as defaults (every ``ours`` option applies,
e.g. ``repeat_stat``, ``delay_span``; ``attacks/ours.py``). Cost: R queries per sample (a budget of
10,000 buys 2,500 samples).
"""

from __future__ import annotations

from dataclasses import dataclass

from attacks.ours import Ours
from benchmark.plugins import ATTACKS


@ATTACKS.register("perturbed_repeats")
@dataclass(frozen=True)
class PerturbedRepeats(Ours):
    """ours asking each query 4 times, perturbed by one level on 4 pixels, fastest kept (vs keyed delays)."""

    repeats: int = 4
    perturb: bool = True
