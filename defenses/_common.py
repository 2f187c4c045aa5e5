"""Shared helpers of the in-tree defenses (not a plugin): the canonical form keyed defenses hash,
owner-resource checks, fresh seeded copies of the victim's architecture and the defense cache."""

from __future__ import annotations

import copy
import hashlib
import hmac
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from benchmark.errors import ConfigError
from benchmark.oracle import Oracle, OwnerResources
from benchmark.paths import cache_dir


def canonical_bytes(x: Tensor) -> list[bytes]:
    """Each image's canonical form: its pixels quantised to the 256 uint8 levels images are stored
    in (``round(255 x)``). A perturbation of less than half a level per pixel (e.g. one float step,
    ``torch.nextafter``) of a stored image leaves it unchanged; images that differ by a level
    anywhere differ; a pixel placed exactly on a rounding boundary flips with one float step."""
    q = x.detach().cpu().float().clamp(0, 1).mul(255).round().to(torch.uint8).contiguous().numpy()
    return [q[i].tobytes() for i in range(len(q))]


def keyed_uniforms(key: bytes, x: Tensor) -> np.ndarray:
    """One uniform in (0, 1) per image: HMAC-SHA256 under ``key`` of its canonical form."""
    out = np.empty(len(x))
    for i, blob in enumerate(canonical_bytes(x)):
        digest = hmac.new(key, blob, hashlib.sha256).digest()
        out[i] = (int.from_bytes(digest[:8], "big") + 0.5) / 2.0**64
    return out


def require_owner(oracle: Oracle, defense: str, what: str) -> OwnerResources:
    """The owner's resources, or a one-line ConfigError saying why the defense needs them."""
    owner = getattr(oracle, "owner", None)
    if owner is None:
        raise ConfigError(f"defense {defense!r} needs the owner's resources ({what}); this oracle has none "
                          f"(serve the victim with VictimOracle(..., owner=OwnerResources(...)))")
    return owner


def fresh_copy(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """The victim's architecture with freshly initialised weights, seeded (the victim's weights are
    never copied: every module with ``reset_parameters`` is re-drawn)."""
    net = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in net.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    return net.eval()


def defense_cache(defense: str, owner: OwnerResources, tag: str) -> Path:
    """Where a defense caches what it trained for this victim (keyed by the victim's cache key)."""
    name = hashlib.sha256(f"{owner.cache_key}|{tag}".encode()).hexdigest()[:16]
    path = cache_dir() / "defenses" / defense / f"{name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
