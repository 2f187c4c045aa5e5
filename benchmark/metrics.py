"""Scores, defined once so every attack is scored the same way (DESIGN.md, Metrics).

- acc: stolen model's accuracy with its own early exits on the victim's test set
- clo: share of test samples leaving the stolen model at the same exit as the victim. When the
  attacker estimated a different number of exits (K' != K), exits are matched by their place in
  the sequence: the stolen model's j-th of K' exits is taken as the victim's exit i whose relative
  position (i+1)/K is nearest to (j+1)/K' (ties to the deeper exit); a single-exit substitute
  makes no exit decision and gets no agreement. With K' == K this is plain index equality.
  The paper's clo on held-out query samples, the trivial references, lifts, balanced clo and the
  exit confusion matrix: ``benchmark.closeness`` (docs/metrics.md).
- fidelity: same label as the victim; clo_and_fidelity: both at once
- cc_flops: mean FLOPs per test sample under early exit; cc_ratio: over the victim's
- exit_accuracy: the attack's inferred exits (matched the same way) vs the victim's true exits
  on its queries; exit_accuracy_baseline: always guessing the victim's commonest exit
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from benchmark import closeness
from benchmark.api.victim import MultiExitNet
from benchmark.data import Split
from benchmark.exit_runs import ExitRun, align_exits, run_early_exit

__all__ = ["ExitRun", "align_exits", "compare", "exit_accuracy", "exit_histogram", "mean_flops", "run_early_exit"]


def mean_flops(model: MultiExitNet, exits: Tensor) -> float:
    flops = torch.tensor(model.exit_flops(), dtype=torch.float64)
    return float(flops[exits].mean())


def exit_histogram(exits: Tensor, num_exits: int) -> list[float]:
    counts = torch.bincount(exits, minlength=num_exits).double()
    return (counts / counts.sum()).tolist()


def compare(victim: MultiExitNet, stolen: MultiExitNet, test: Split, device: str,
            query_heldout: Split | None = None) -> dict:
    """acc, clo (and every closeness score of ``benchmark.closeness``), fidelity, cc of the stolen
    model against the victim on ``test``; ``clo_query`` on ``query_heldout`` if given."""
    v = run_early_exit(victim, test, device)
    s = run_early_exit(stolen, test, device)
    same_exit = closeness.same_exit(v.exits, s.exits, victim.num_exits, stolen.num_exits)
    same_label = s.pred == v.pred
    victim_cc = mean_flops(victim, v.exits)
    stolen_cc = mean_flops(stolen, s.exits)
    return {
        "acc": float((s.pred == test.y).double().mean()),
        "victim_acc": float((v.pred == test.y).double().mean()),
        **closeness.closeness_scores(victim, stolen, test, query_heldout, device, (v.exits, s.exits)),
        "fidelity": float(same_label.double().mean()),
        "clo_and_fidelity": float((same_exit & same_label).double().mean()),
        "cc_flops": stolen_cc,
        "victim_cc_flops": victim_cc,
        "cc_ratio": stolen_cc / victim_cc,
        "victim_exit_hist": exit_histogram(v.exits, victim.num_exits),
        "stolen_exit_hist": exit_histogram(s.exits, stolen.num_exits),
    }


def exit_accuracy(true_exits: Tensor, inferred: Tensor, k_true: int, k_inferred: int) -> dict:
    """Inferred vs true exits on the attack's queries, with the always-guess-the-commonest baseline."""
    true_exits = true_exits.long()
    inferred = align_exits(inferred.long(), k_inferred, k_true)
    commonest = float(np.bincount(true_exits.numpy()).max() / len(true_exits))
    return {"exit_accuracy": float((true_exits == inferred).double().mean()),
            "exit_accuracy_baseline": commonest}
