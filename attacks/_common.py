"""Pieces every multi-exit attack shares: batched querying and the distillation loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from benchmark.data import Split
from benchmark.oracle import BlackBox


def query_split(oracle: BlackBox, data: Split, index: Tensor, batch: int = 500,
                progress: bool = True, desc: str = "query") -> tuple[Tensor, Tensor]:
    """Query rows ``index`` of ``data`` in batches: (probs (N, C), latency (N,))."""
    probs, lats = [], []
    for start in tqdm(range(0, len(index), batch), desc=desc, disable=not progress, leave=False):
        r = oracle.query(data.images(index[start:start + batch]))
        probs.append(r.probs.float())
        lats.append(r.latency)
    return torch.cat(probs), torch.cat(lats)


def kl_to_targets(outs: list[Tensor], target: Tensor) -> Tensor:
    """Performance loss (multi-exit paper, Eq. 2): sum over exits of KL(victim output || exit i)."""
    target = target.clamp_min(1e-8)
    target = target / target.sum(1, keepdim=True)
    return sum(F.kl_div(F.log_softmax(o, 1), target, reduction="batchmean") for o in outs)
