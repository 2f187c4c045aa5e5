"""The attacker's side of the service: a ``BlackBox`` that holds only a connection.

Queries leave as raw float arrays (``protocol.encode_query``); answers come back as fresh
tensors; the budget counters are read from the server on every access."""

from __future__ import annotations

import threading
from multiprocessing.connection import Connection

import numpy as np
import torch
from torch import Tensor

from benchmark.errors import InvalidQueryType
from benchmark.oracle import BlackBox, Response
from benchmark.service import protocol


class _Channel:
    """One connection shared by the handles of one client's accounts (one request at a time)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    def ask(self, message: bytes) -> tuple[int, np.ndarray, np.ndarray]:
        with self._lock:
            self._conn.send_bytes(message)
            return protocol.decode_answer(self._conn.recv_bytes())


def _array(x: Tensor) -> np.ndarray:
    if not isinstance(x, Tensor):
        raise InvalidQueryType(f"queries must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in (torch.float16, torch.float32, torch.float64):
        raise InvalidQueryType(f"queries must have a floating-point dtype the service takes, got {x.dtype}")
    return np.array(torch.Tensor.numpy(torch.Tensor.cpu(torch.Tensor.detach(x)).as_subclass(Tensor)), copy=True)


def remote_black_box(channel: _Channel, account: int, budget: int, num_classes: int,
                     input_shape: tuple[int, ...]) -> BlackBox:
    """A BlackBox whose queries and counters go to the service as account number ``account``."""

    def query(x: Tensor) -> Response:
        _, probs, latency = channel.ask(protocol.encode_query(protocol.OP_QUERY, account, _array(x)))
        return Response(torch.from_numpy(probs), torch.from_numpy(latency))

    def used() -> int:
        return channel.ask(protocol.encode_query(protocol.OP_COUNTERS, account))[0]

    box = object.__new__(BlackBox)
    for slot, value in (("_query", query), ("_used", used), ("_budget", int(budget)),
                        ("_num_classes", int(num_classes)), ("_input_shape", tuple(input_shape))):
        object.__setattr__(box, slot, value)
    return box
