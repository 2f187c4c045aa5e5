"""The attack runs in its own process, started fresh (``spawn``): it never holds the victim, the
defense, the service's counters or the judge's scores, only a connection (``client``). What it
returns crosses back as data, never code: the substitute's tensors (``torch.load`` with
``weights_only=True``) and JSON details; the judge rebuilds the substitute from the substitute
family's spec. Attacks therefore build their substitute with ``ctx.substitute.build(...)``. An
exact-extraction attack returns an ``ExtractedWeights`` instead, which crosses back as its float64
arrays (``numpy.save``, loaded with ``allow_pickle=False``) and JSON."""

from __future__ import annotations

import dataclasses
import io
import json
import multiprocessing
import struct
import time
import traceback
from typing import Any

import numpy as np
import torch

from benchmark.api.attack import Attack, AttackContext, ExtractedWeights, StolenModel
from benchmark.api.victim import MultiExitNet, VictimSpec
from benchmark.data import Split
from benchmark.errors import StealBenchError
from benchmark.service import client, protocol
from benchmark.service.server import Service

DONE, WEIGHTS, FAIL = b"SBD1", b"SBW1", b"SBX1"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON")


def _shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def encode_stolen(stolen: StolenModel, substitute: VictimSpec) -> bytes:
    """The stolen model as data: which ``build(exits=...)`` made it, its tensors, its details."""
    model = stolen.model
    if not isinstance(model, MultiExitNet):
        raise TypeError("the attack returned no MultiExitNet substitute")
    shapes = _shapes(model)
    for exits in (None, model.num_exits):
        try:
            same = _shapes(substitute.build(model.num_classes, model.input_shape, exits=exits)) == shapes
        except StealBenchError:
            same = False
        if same:
            break
    else:
        raise TypeError(f"the substitute was not built by ctx.substitute.build() of {substitute.name!r}")
    tensors = {"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
               "query_index": stolen.query_index, "inferred_exits": stolen.inferred_exits}
    buf = io.BytesIO()
    torch.save(tensors, buf)
    head = json.dumps({"exits": exits, "details": stolen.details}, default=_jsonable).encode()
    return DONE + struct.pack("<I", len(head)) + head + buf.getvalue()


def encode_weights(stolen: ExtractedWeights) -> bytes:
    """An extracted weight set as data: its arrays (``numpy.save`` each) and JSON for the rest."""
    arrays = [*stolen.weights, *stolen.biases, *stolen.recovered]
    blobs = []
    for a in arrays:
        buf = io.BytesIO()
        np.save(buf, np.asarray(a), allow_pickle=False)
        blobs.append(buf.getvalue())
    head = json.dumps({"sizes": list(stolen.sizes), "complete": bool(stolen.complete), "details": stolen.details,
                       "counts": [len(stolen.weights), len(stolen.biases), len(stolen.recovered)],
                       "lengths": [len(b) for b in blobs]}, default=_jsonable).encode()
    return WEIGHTS + struct.pack("<I", len(head)) + head + b"".join(blobs)


def decode_weights(msg: bytes) -> ExtractedWeights:
    (n,) = struct.unpack_from("<I", msg, 4)
    head = json.loads(msg[8:8 + n])
    arrays, at = [], 8 + n
    for length in head["lengths"]:
        arrays.append(np.load(io.BytesIO(msg[at:at + length]), allow_pickle=False))
        at += length
    nw, nb, _ = head["counts"]
    return ExtractedWeights(model=None, details=head["details"], sizes=tuple(head["sizes"]), weights=arrays[:nw],
                            biases=arrays[nw:nw + nb], recovered=arrays[nw + nb:], complete=head["complete"])


def decode_stolen(msg: bytes, substitute: VictimSpec, num_classes: int, input_shape: tuple[int, ...],
                  device: str) -> StolenModel:
    if msg.startswith(WEIGHTS):
        return decode_weights(msg)
    (n,) = struct.unpack_from("<I", msg, 4)
    head = json.loads(msg[8:8 + n])
    tensors = torch.load(io.BytesIO(msg[8 + n:]), weights_only=True)
    model = rebuild_substitute(substitute, num_classes, input_shape, head["exits"], tensors["state_dict"])
    return StolenModel(model.to(device).eval(), head["details"], tensors["query_index"], tensors["inferred_exits"])


def rebuild_substitute(substitute: VictimSpec, num_classes: int, input_shape: tuple[int, ...], exits: int | None,
                       state_dict: dict) -> MultiExitNet:
    """The judge's copy of a substitute: ``substitute.build(..., exits=exits)`` loaded (strictly) with
    ``state_dict``, tensors only (shared by the attack process's result and ``serve``'s /submit)."""
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()):
        raise TypeError("the state_dict must map names to tensors")
    model = substitute.build(num_classes, input_shape, exits=exits)
    model.load_state_dict(state_dict, strict=True)
    return model


def _attack_main(conn, attack: Attack, query: Split, budget: int, ctx: AttackContext, num_classes: int,
                 input_shape: tuple[int, ...], accounts: int, threads: int) -> None:
    torch.set_num_threads(threads)
    try:
        channel = client._Channel(conn)
        boxes = [client.remote_black_box(channel, i, budget, num_classes, input_shape) for i in range(accounts)]
        stolen = attack.run(boxes[0], query, budget, dataclasses.replace(ctx, sybils=tuple(boxes[1:])))
        conn.send_bytes(encode_weights(stolen) if isinstance(stolen, ExtractedWeights)
                        else encode_stolen(stolen, ctx.substitute))
    except BaseException as exc:  # reported to the judge, who raises it there
        conn.send_bytes(FAIL + json.dumps({"type": type(exc).__name__, "message": str(exc),
                                           "user_error": isinstance(exc, StealBenchError),
                                           "traceback": traceback.format_exc()}).encode())
    finally:
        conn.close()


def run_attack(service: Service, attack: Attack, query: Split, budget: int, ctx: AttackContext,
               device: str) -> tuple[StolenModel, float]:
    """Run ``attack`` in a fresh process against ``service``; serve it until it returns. Returns the
    stolen model rebuilt here and the attack process's wall time (start-up included)."""
    mp = multiprocessing.get_context("spawn")
    here, there = mp.Pipe()
    accounts = int(getattr(attack, "accounts", 1))
    proc = mp.Process(target=_attack_main, name=f"attack-{attack.name}", daemon=True,
                      args=(there, attack, query, budget, dataclasses.replace(ctx, sybils=()), service.num_classes,
                            service.input_shape, accounts, torch.get_num_threads()))
    t0 = time.perf_counter()
    proc.start()
    there.close()
    try:
        msg = serve(service, here, proc)
    finally:
        here.close()
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
    seconds = time.perf_counter() - t0
    if msg.startswith(FAIL):
        err = json.loads(msg[4:])
        if err["user_error"]:
            raise StealBenchError(err["message"])
        raise RuntimeError(f"attack {attack.name!r} failed in its process: {err['type']}: {err['message']}\n"
                           f"{err['traceback']}")
    return decode_stolen(msg, ctx.substitute, service.num_classes, service.input_shape, device), seconds


def serve(service: Service, conn, proc=None) -> bytes:
    """Answer requests on ``conn`` until the client sends its result (returned, as bytes)."""
    empty_p, empty_l = torch.zeros(0, 0).numpy(), torch.zeros(0, dtype=torch.float64).numpy()
    while True:
        try:
            msg = conn.recv_bytes()
        except (EOFError, OSError):
            code = proc.exitcode if proc is not None else None
            raise RuntimeError(f"the attack process ended without a result (exit code {code})") from None
        if msg[:4] in (DONE, WEIGHTS, FAIL):
            return msg
        conn.send_bytes(handle(service, msg, empty_p, empty_l))


def handle(service: Service, msg: bytes, empty_p=None, empty_l=None) -> bytes:
    """One request's answer as bytes; every refusal becomes an error status, never an exception."""
    from benchmark.errors import AccountRefused, BudgetExceeded, InvalidQuery, InvalidQueryType

    try:
        op, account, x = protocol.decode_query(msg)
        if op == protocol.OP_COUNTERS:
            return protocol.encode_answer(service.used, empty_p if empty_p is not None else torch.zeros(0, 0).numpy(),
                                          empty_l if empty_l is not None else torch.zeros(0).double().numpy())
        if op != protocol.OP_QUERY or x is None:
            raise InvalidQuery(f"unknown request (op {op})")
        r = service.query(account, torch.from_numpy(x))
        return protocol.encode_answer(service.used, r.probs.numpy(), r.latency.numpy(), service.float64)
    except BudgetExceeded as exc:
        return protocol.encode_error(protocol.BUDGET, str(exc))
    except InvalidQueryType as exc:
        return protocol.encode_error(protocol.INVALID_TYPE, str(exc))
    except (InvalidQuery, protocol.ProtocolError) as exc:
        return protocol.encode_error(protocol.INVALID, str(exc))
    except AccountRefused as exc:
        return protocol.encode_error(protocol.REFUSED, str(exc))
