"""top1: label-only answers, a one-hot vector of the victim's predicted class."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from benchmark.api.defense import Defense
from benchmark.oracle import Response
from benchmark.plugins import DEFENSES


@DEFENSES.register("top1")
@dataclass(frozen=True)
class Top1(Defense):
    """Label-only answers: a one-hot vector of the victim's predicted class."""

    acts_on = "output"

    def apply(self, state: Any, x: Tensor, response: Response, account: str = "") -> Response:
        probs = response.probs
        onehot = F.one_hot(probs.argmax(1), probs.shape[1]).to(probs.dtype)
        return Response(onehot, response.latency)
