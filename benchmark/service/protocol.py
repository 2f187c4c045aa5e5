"""The wire format between an attack client and the victim service: plain bytes, never pickles.

The server never unpickles what a client sends (a pickle is code): a query is a fixed header and
the raw bytes of a C-contiguous float array, decoded with ``numpy.frombuffer`` into a fresh array,
so nothing of the client's objects (tensor subclasses, ``__torch_function__``) crosses. Answers
are a header and raw float32 probabilities (float64 raw outputs for a service that answers in
float64: the exact-extraction family) and float64 latencies.

request  = b"SBQ1" op:u8 account:u8 dtype:u8 ndim:u8 dims:u32[ndim] payload
response = b"SBR1" status:u8 used:u64 B:u32 C:u32 probs:f32[B*C] latency:f64[B]   (status 0)
         | b"SBR1" status:u8 used:u64 B:u32 C:u32 probs:f64[B*C] latency:f64[B]   (status 5)
         | b"SBR1" status:u8 message:utf-8                                         (status 1-4)
"""

from __future__ import annotations

import struct

import numpy as np

from benchmark.errors import AccountRefused, BudgetExceeded, InvalidQuery, InvalidQueryType

REQUEST, RESPONSE = b"SBQ1", b"SBR1"
OP_QUERY, OP_COUNTERS = 1, 2
OK, BUDGET, INVALID, INVALID_TYPE, REFUSED, OK64 = 0, 1, 2, 3, 4, 5
DTYPES = {1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<f2")}
CODES = {v: k for k, v in DTYPES.items()}
_HEAD = struct.Struct("<4sBBBB")
_OK = struct.Struct("<4sBQII")
MAX_DIMS = 8


class ProtocolError(ValueError):
    """A message that is not in the format above (a broken or hostile client)."""


def encode_query(op: int, account: int, x: np.ndarray | None = None) -> bytes:
    if x is None:
        return _HEAD.pack(REQUEST, op, account, 0, 0)
    x = np.ascontiguousarray(x)
    dt = x.dtype.newbyteorder("<")
    if dt not in CODES:
        raise InvalidQueryType(f"queries must have a floating-point dtype, got {x.dtype}")
    return (_HEAD.pack(REQUEST, op, account, CODES[dt], x.ndim) + struct.pack(f"<{x.ndim}I", *x.shape)
            + x.astype(dt, copy=False).tobytes())


def decode_query(msg: bytes) -> tuple[int, int, np.ndarray | None]:
    """(op, account index, array or None); raises ProtocolError / InvalidQuery(Type) on bad bytes."""
    if len(msg) < _HEAD.size:
        raise ProtocolError("message too short")
    magic, op, account, code, ndim = _HEAD.unpack_from(msg)
    if magic != REQUEST:
        raise ProtocolError("not a StealBench request")
    if code == 0:
        return op, account, None
    if code not in DTYPES:
        raise InvalidQueryType(f"queries must have a floating-point dtype (code {code} is none)")
    if ndim < 1 or ndim > MAX_DIMS:
        raise InvalidQuery(f"queries must have 1 to {MAX_DIMS} dimensions, got {ndim}")
    start = _HEAD.size + 4 * ndim
    if len(msg) < start:
        raise ProtocolError("header cut short")
    shape = struct.unpack_from(f"<{ndim}I", msg, _HEAD.size)
    dt = DTYPES[code]
    if len(msg) - start != int(np.prod(shape, dtype=np.int64)) * dt.itemsize:
        raise InvalidQuery(f"payload of {len(msg) - start} bytes does not match shape {shape} of {dt}")
    return op, account, np.frombuffer(msg, dt, offset=start).reshape(shape).astype(dt.newbyteorder("="))


def encode_answer(used: int, probs: np.ndarray, latency: np.ndarray, float64: bool = False) -> bytes:
    """An answer; ``float64`` sends the outputs in full (status ``OK64``), else as float32."""
    probs = np.ascontiguousarray(probs, "<f8" if float64 else "<f4")
    return (_OK.pack(RESPONSE, OK64 if float64 else OK, used, probs.shape[0], probs.shape[1]) + probs.tobytes()
            + np.ascontiguousarray(latency, "<f8").tobytes())


def encode_error(status: int, message: str) -> bytes:
    return struct.pack("<4sB", RESPONSE, status) + message.encode()


def decode_answer(msg: bytes) -> tuple[int, np.ndarray, np.ndarray]:
    """(used, probs, latency); raises the error the server reported."""
    magic, status = struct.unpack_from("<4sB", msg)
    if magic != RESPONSE:
        raise ProtocolError("not a StealBench response")
    if status not in (OK, OK64):
        text = msg[5:].decode(errors="replace")
        raise _ERRORS.get(status, RuntimeError)(text)
    _, _, used, b, c = _OK.unpack_from(msg)
    width = 8 if status == OK64 else 4
    probs = np.frombuffer(msg, f"<f{width}", b * c, _OK.size).reshape(b, c).copy()
    latency = np.frombuffer(msg, "<f8", b, _OK.size + width * b * c).copy()
    return used, probs, latency


_ERRORS = {BUDGET: BudgetExceeded, INVALID: InvalidQuery, INVALID_TYPE: InvalidQueryType, REFUSED: AccountRefused}
