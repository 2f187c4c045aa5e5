"""adaptive_misinformation: Kariyappa & Qureshi, "Defending Against Model Stealing Attacks with
Adaptive Misinformation" (CVPR 2020).

An out-of-distribution score gates each answer between the victim and a misinformation model
``f^`` trained by the owner to put little probability on the true class:
``y = (1 - alpha) y_victim + alpha y_misinfo`` with ``alpha = 1 / (1 + exp(nu (S(x) - tau)))``,
where ``S(x)`` is the maximum softmax probability of the victim's answer (the paper's OOD score).
In-distribution queries (confident answers, ``S > tau``) get the victim's answer; queries that
look out of distribution, as most model-stealing queries do, get misinformation.

Options: ``tau`` (OOD threshold on the max softmax probability; ``0`` is ``none``: no answer is
ever below it), ``nu`` (steepness of the sigmoid gate; the paper uses a steep one, we default to
1000), and the cost of training ``f^``: ``misinfo_epochs`` passes over ``misinfo_images`` images
of the owner's training split, Adam with learning rate ``misinfo_lr``, loss
``-log(1 - f^(x)_y)`` (the paper's misinformation loss).

Departures from the paper, stated: (1) the OOD score is the deployed victim's own max softmax
probability; the paper trains the defended model with Outlier Exposure to sharpen that score (no
outlier data is part of the owner's resources here); (2) ``f^`` has the victim's architecture
(its final exit's output; freshly initialised, seeded) and is trained briefly (by default two
epochs on 2,000 images, batch 64, 64 Adam steps) rather than to convergence: a cheap stand-in for
the paper's fully trained one, which puts less than chance probability on the true class but not
as little as a converged one would. It is trained once per victim, options and
seed and cached under the StealBench cache (``defenses/adaptive_misinformation/``, keyed by the
victim's cache key). Cost: training ``f^`` once (seconds on a CPU for ``sdn-tiny``), one forward
pass of ``f^`` per query, and the honest accuracy lost where honest inputs score below ``tau``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from benchmark.api.defense import Defense
from benchmark.errors import ConfigError
from benchmark.oracle import Oracle, OwnerResources, Response
from benchmark.plugins import DEFENSES
from defenses._common import defense_cache, fresh_copy, require_owner

BATCH = 64  # misinformation-model training batch


def misinformation_loss(logits: Tensor, y: Tensor) -> Tensor:
    """``-log(1 - p_y)``: low when the model puts little probability on the true class."""
    p_true = torch.softmax(logits, 1).gather(1, y[:, None]).squeeze(1)
    return -torch.log1p(-p_true.clamp(max=1 - 1e-6)).mean()


@DEFENSES.register("adaptive_misinformation")
@dataclass(frozen=True)
class AdaptiveMisinformation(Defense):
    """OOD-gated misinformation answers (Kariyappa & Qureshi, CVPR 2020)."""

    acts_on = "output"
    #: needs ``oracle.owner`` (the victim's architecture and the owner's training data)
    needs_owner: ClassVar[bool] = True
    zero_options: ClassVar[dict] = {"tau": 0.0}

    tau: float = 0.5
    nu: float = 1000.0
    misinfo_epochs: int = 2
    misinfo_images: int = 2000
    misinfo_lr: float = 1e-2

    def __post_init__(self) -> None:
        if not 0 <= self.tau <= 1:
            raise ConfigError(f"defense 'adaptive_misinformation': tau (a max softmax probability) must be in "
                              f"[0, 1], got {self.tau}")
        if not self.nu > 0:
            raise ConfigError(f"defense 'adaptive_misinformation': nu must be > 0, got {self.nu}")
        if self.misinfo_epochs < 1 or self.misinfo_images < 1 or not self.misinfo_lr > 0:
            raise ConfigError("defense 'adaptive_misinformation': misinfo_epochs, misinfo_images and "
                              "misinfo_lr must be positive")

    def make_state(self, oracle: Oracle, seed: int) -> Any:
        if self.tau == 0:
            return None
        owner = require_owner(oracle, "adaptive_misinformation",
                              "the victim's architecture and the owner's training data, for the misinformation model")
        return {"misinfo": self.misinformation_model(owner, seed), "device": owner.device}

    def misinformation_model(self, owner: OwnerResources, seed: int) -> torch.nn.Module:
        """``f^``, trained on the owner's data (or loaded from the cache)."""
        net = fresh_copy(owner.model, seed + 0xA1).to(owner.device)
        tag = f"misinfo|seed={seed}|epochs={self.misinfo_epochs}|images={self.misinfo_images}|lr={self.misinfo_lr}"
        path = defense_cache("adaptive_misinformation", owner, tag)
        if path.exists():
            net.load_state_dict(torch.load(path, map_location=owner.device, weights_only=True))
            return net.eval()
        train = owner.task.train
        gen = torch.Generator().manual_seed(seed + 0xA2)
        idx = torch.randperm(len(train), generator=gen)[:self.misinfo_images]
        opt = torch.optim.Adam(net.parameters(), lr=self.misinfo_lr)
        net.train()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 0xA3)
            for _ in range(self.misinfo_epochs):
                order = idx[torch.randperm(len(idx), generator=gen)]
                for start in range(0, len(order), BATCH):
                    batch = order[start:start + BATCH]
                    x, y = train.images(batch, owner.device), train.y[batch].to(owner.device)
                    loss = misinformation_loss(net(x)[-1], y)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
        net.eval()
        torch.save(net.state_dict(), path)
        return net

    @torch.no_grad()
    def misinfo_probs(self, state: Any, x: Tensor) -> Tensor:
        return torch.softmax(state["misinfo"](x.to(state["device"]).float())[-1].float(), 1).cpu()

    def alpha(self, probs: Tensor) -> Tensor:
        """The weight of the misinformation answer: ``1 / (1 + exp(nu (S - tau)))``."""
        score = probs.double().amax(1)
        return torch.sigmoid(-self.nu * (score - self.tau))

    def apply(self, state: Any, x: Tensor, response: Response, account: str = "") -> Response:
        if self.tau == 0:
            return response
        a = self.alpha(response.probs)[:, None]
        mixed = (1 - a) * response.probs.double() + a * self.misinfo_probs(state, x).double()
        return Response(mixed.to(response.probs.dtype), response.latency, response.exits)
