"""Reading ``serve``'s request bodies: a query as a tensor (JSON nested lists or ``.npy`` bytes,
``np.load`` with ``allow_pickle=False``: never code) and a submission as a StolenModel (a
``torch.save``d dict loaded with ``weights_only=True`` and rebuilt from the substitute family's
spec)."""

from __future__ import annotations

import io
import json

import numpy as np
import torch

from benchmark.api.attack import StolenModel
from benchmark.errors import InvalidQueryType, StealBenchError
from benchmark.service.attacker import rebuild_substitute

NPY = "application/x-npy"


class BadRequest(ValueError):
    """A request the server cannot read (400)."""


def parse_query(body: bytes, content_type: str) -> tuple[torch.Tensor, str | None]:
    """A query body as a fresh CPU tensor (its dtype kept, for the service's checks), and the
    account a JSON body names (``"account"``; None where it names none)."""
    account = None
    if content_type == NPY:
        try:
            arr = np.load(io.BytesIO(body), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise BadRequest(f"body is not a .npy array: {exc}") from None
        if not isinstance(arr, np.ndarray):
            raise BadRequest("body is an .npz archive; send one .npy array")
    elif content_type in ("application/json", ""):
        try:
            obj = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise BadRequest(f"body is not JSON: {str(exc)[:200]}") from None
        if not isinstance(obj, dict) or "x" not in obj:
            raise BadRequest('JSON body must be an object {"x": [[[[...]]]]} (B, C, H, W)')
        account = obj.get("account")
        if account is not None and not isinstance(account, str):
            raise BadRequest(f'"account" must be a string (an id the server gave), got {type(account).__name__}')
        try:
            arr = np.asarray(obj["x"], dtype=np.float32)
        except (ValueError, TypeError, RecursionError, OverflowError) as exc:
            raise BadRequest(f'"x" is not a rectangular array of numbers: {str(exc)[:200]}') from None
    else:
        raise BadRequest(f"Content-Type must be application/json or {NPY}, got {content_type!r}")
    if arr.dtype.kind != "f":
        raise InvalidQueryType(f"queries must be float32, got {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("="))
    try:
        return torch.from_numpy(arr.copy()), account
    except TypeError as exc:
        raise InvalidQueryType(f"queries must be float32, got {arr.dtype}: {exc}") from None


def decode_submission(body: bytes, substitute, num_classes: int, input_shape: tuple[int, ...],
                      device: str) -> StolenModel:
    """``torch.save({"state_dict": ..., "exits": None or k, ["details": {...}]})`` as a StolenModel,
    rebuilt by ``substitute.build`` (``attacker.rebuild_substitute``)."""
    try:
        obj = torch.load(io.BytesIO(body), weights_only=True, map_location="cpu")
    except Exception as exc:  # any unreadable upload is the client's error
        raise BadRequest(f"body is not a torch.save'd dict of tensors: {type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:200]}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("state_dict"), dict):
        raise BadRequest('the submission must be a dict {"state_dict": ..., "exits": None or k}')
    exits = obj.get("exits")
    if exits is not None and (not isinstance(exits, int) or isinstance(exits, bool)):
        raise BadRequest(f'"exits" must be null or an integer, got {type(exits).__name__}')
    details = obj.get("details") or {}
    if not isinstance(details, dict):
        raise BadRequest('"details" must be a dict')
    try:
        json.dumps(details, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise BadRequest(f'"details" must be plain JSON data: {exc}') from None
    try:
        model = rebuild_substitute(substitute, num_classes, input_shape, exits, obj["state_dict"])
    except (StealBenchError, RuntimeError, TypeError, ValueError, KeyError) as exc:
        raise BadRequest(f"the state_dict does not fit {substitute.name}.build(exits={exits}): "
                         f"{' '.join(str(exc).split())[:400] or type(exc).__name__}") from None
    if "attack" in obj:
        details = {**details, "attack": str(obj["attack"])}
    return StolenModel(model.to(device).eval(), dict(details), None, None)
