"""sybil: ES Attack spread over several accounts with natural queries mixed in, the adaptive attack
against PRADA (Juuti, Szyller, Marchal, Asokan, "PRADA: Protecting Against DNN Model Stealing
Attacks", IEEE EuroS&P 2019).

PRADA keeps, per account, the minimum distance of each query to that account's earlier queries of
the same predicted class, and refuses the account once the Shapiro-Wilk W of those distances drops
below ``delta``. Synthetic streams (ESA's optimised inputs; Jacobian-based augmentation) give
skewed distance sets; PRADA's own paper names Sybil accounts as the way around it. Here:

- ``accounts`` = 4 handles sharing the budget; each batch's rows are dealt round-robin in a random
  order over the live accounts (``sybil=true``), so each account sees a quarter of the stream and
  the near-duplicates of a synthetic stream land mostly on different accounts;
- ``mix`` = 0.5: every account's batches are half natural images (the query set, without repeats),
  interleaved, so its distance distribution looks like natural traffic. This gives the data-free
  ESA attacker natural images: the threat model of knockoff, not of ESA.
- a refused account is dropped and its batch re-asked from the next; with none left the attack
  trains on what it has (``refused_queries`` in the details).

On a 600-query Jacobian-style stream against the tiny test victim, one account is refused after
100 queries, four accounts without mixing are all refused, four with ``mix=0.5`` are not
(``tests/attacks/test_adaptive_attacks.py``). This is ``esa`` with those defaults (every ESA option applies;
``attacks/esa.py``, ``attacks/_common.py``). Cost: mix / (1 - mix) natural queries per attack
query (at 0.5 half the budget), and ESA then completes fewer rounds.
"""

from __future__ import annotations

from dataclasses import dataclass

from attacks.esa import ESA
from benchmark.plugins import ATTACKS


@ATTACKS.register("sybil")
@dataclass(frozen=True)
class Sybil(ESA):
    """ESA over 4 accounts (random round-robin) with half natural queries mixed in (vs PRADA)."""

    accounts: int = 4
    sybil: bool = True
    mix: float = 0.5
