"""Closeness (exit agreement) as the multi-exit stealing paper defines it, with the references that
say how much of it is free. Every definition is written out once in docs/metrics.md.

- ``clo_query``: the paper's CLO, "the proportion of samples in the query dataset that produce
  identical outputs in both models", measured on held-out query-set samples the attack never saw
  (:func:`split_query_heldout`); ``clo``: the same on the victim's test set.
- ``*_trivial``: the score of the best constant-exit model (one that sends every sample out at the
  same exit k), i.e. the victim's largest exit share on that set; ``*_lift``: clo minus it.
- ``clo_balanced`` (test set): mean over the victim's exits of the share of that exit's samples
  the substitute sends out at the same exit (per-exit recall; exits the victim never uses on the
  set are left out). A constant-exit model scores 1 / (exits used).
- ``exit_confusion`` (test set): counts, rows = victim exit (K), columns = substitute exit (K',
  its own indices, not matched).

Substitutes with another exit count (K' != K) are matched by relative position
(``benchmark.exit_runs.align_exits``), except that a one-exit substitute against a multi-exit victim
makes no exit decision and is credited with no agreement (the positional rule would credit it with
the victim's last-exit share).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from benchmark.data import Split
from benchmark.exit_runs import align_exits, run_early_exit

if TYPE_CHECKING:
    from benchmark.api.victim import MultiExitNet

#: the held-out tail of the query set: at most this many rows ...
HELDOUT_MAX = 1000
#: ... and at most this share of them
HELDOUT_FRACTION = 0.1


def split_query_heldout(query: Split, max_rows: int = HELDOUT_MAX,
                        fraction: float = HELDOUT_FRACTION) -> tuple[Split, Split]:
    """Deterministic split of the attacker's query set into (attack part, held-out part): the
    held-out part is the last min(``max_rows``, floor(``fraction`` x N)) rows, never given to the
    attack, on which ``clo_query`` is measured."""
    n_held = min(max_rows, int(fraction * len(query)))
    cut = len(query) - n_held
    return Split(query.x[:cut], query.y[:cut]), Split(query.x[cut:], query.y[cut:])


def same_exit(victim_exits: Tensor, stolen_exits: Tensor, k_victim: int, k_stolen: int) -> Tensor:
    """Per sample: does the substitute leave at the victim's exit (rule in the module docstring)?"""
    if k_stolen == 1 and k_victim > 1:
        return torch.zeros(len(victim_exits), dtype=torch.bool)
    return align_exits(stolen_exits.long(), k_stolen, k_victim) == victim_exits.long()


def trivial_closeness(victim_exits: Tensor, k_victim: int) -> float:
    """The best constant-exit model's closeness: the victim's largest exit share."""
    if len(victim_exits) == 0:
        return float("nan")
    return float(torch.bincount(victim_exits.long(), minlength=k_victim).max()) / len(victim_exits)


def balanced_closeness(victim_exits: Tensor, agree: Tensor, k_victim: int) -> float:
    """Mean per-exit recall over the exits the victim uses on this set."""
    v = victim_exits.long()
    counts = torch.bincount(v, minlength=k_victim).double()
    hits = torch.bincount(v[agree], minlength=k_victim).double()
    used = counts > 0
    return float((hits[used] / counts[used]).mean()) if bool(used.any()) else float("nan")


def exit_confusion(victim_exits: Tensor, stolen_exits: Tensor, k_victim: int, k_stolen: int) -> list[list[int]]:
    """Counts: rows victim exit, columns substitute exit (its own indices)."""
    flat = victim_exits.long() * k_stolen + stolen_exits.long()
    return torch.bincount(flat, minlength=k_victim * k_stolen).view(k_victim, k_stolen).tolist()


def closeness_from_exits(victim_exits: Tensor, stolen_exits: Tensor, k_victim: int, k_stolen: int) -> dict:
    """clo, its trivial reference and lift, balanced clo and the confusion matrix, from the exits."""
    agree = same_exit(victim_exits, stolen_exits, k_victim, k_stolen)
    clo = float(agree.double().mean()) if len(agree) else float("nan")
    trivial = trivial_closeness(victim_exits, k_victim)
    return {"clo": clo, "trivial": trivial, "lift": clo - trivial,
            "balanced": balanced_closeness(victim_exits, agree, k_victim),
            "confusion": exit_confusion(victim_exits, stolen_exits, k_victim, k_stolen)}


def closeness_scores(victim: MultiExitNet, stolen: MultiExitNet, test: Split, query_heldout: Split | None,
                     device: str, test_exits: tuple[Tensor, Tensor] | None = None) -> dict:
    """Every closeness score of the result JSON: on the test set (``clo``, ``clo_trivial``,
    ``clo_lift``, ``clo_balanced``, ``exit_confusion``) and, if given, on the held-out query samples
    (``clo_query``, ``clo_query_trivial``, ``clo_query_lift``, ``clo_query_balanced``,
    ``query_heldout_samples``; null without them). ``test_exits``: (victim, substitute) exits on
    ``test`` if the caller already ran both models on it."""
    k_v, k_s = victim.num_exits, stolen.num_exits
    if test_exits is None:
        test_exits = (run_early_exit(victim, test, device).exits, run_early_exit(stolen, test, device).exits)
    t = closeness_from_exits(*test_exits, k_v, k_s)
    out = {"clo": t["clo"], "clo_trivial": t["trivial"], "clo_lift": t["lift"], "clo_balanced": t["balanced"],
           "exit_confusion": t["confusion"]}
    if query_heldout is None or len(query_heldout) == 0:
        out.update({"clo_query": None, "clo_query_trivial": None, "clo_query_lift": None,
                    "clo_query_balanced": None, "query_heldout_samples": 0})
        return out
    q = closeness_from_exits(run_early_exit(victim, query_heldout, device).exits,
                             run_early_exit(stolen, query_heldout, device).exits, k_v, k_s)
    out.update({"clo_query": q["clo"], "clo_query_trivial": q["trivial"], "clo_query_lift": q["lift"],
                "clo_query_balanced": q["balanced"], "query_heldout_samples": len(query_heldout)})
    return out
