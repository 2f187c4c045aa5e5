"""The same deployment as ``run``'s, served over HTTP on a local port, for attack code written
elsewhere (``python -m benchmark serve``; docs/service.md).

Transport: the standard library's ``http.server.ThreadingHTTPServer``: no extra dependency, and the
server is meant for loopback only (it binds 127.0.0.1 by default; it has no TLS and no
authentication). Each connection gets a thread, so a slow client's upload blocks nobody, but every
request, once wholly received, waits its turn on a first-come-first-served ticket lock: the
service answers one request at a time, in arrival order, exactly as the in-process path does.

One attacker account (account 0) per server; the budget, the honest user and every counter are
the ``Service``'s. Queries arrive as JSON nested lists or ``.npy`` bytes (``np.load`` with
``allow_pickle=False``: never code); the substitute arrives as a ``torch.save``d dict loaded with
``weights_only=True`` and rebuilt from the substitute family's spec.
"""

from __future__ import annotations

import io
import json
import math
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark.api.attack import StolenModel
from benchmark.errors import AccountRefused, BudgetExceeded, InvalidQuery, InvalidQueryType, StealBenchError
from benchmark.service.attacker import rebuild_substitute

NPY = "application/x-npy"
#: bytes a body may hold per image value: a JSON float written in full ("0.123456789012345678, ")
JSON_BYTES_PER_VALUE = 32
NPY_BYTES_PER_VALUE = 8  # float64, so that a float64 upload gets its 400 (dtype), not a 413
BODY_SLACK = 64 * 1024


class BadRequest(ValueError):
    """A request the server cannot read (400)."""


class Closed(RuntimeError):
    """A request after the submission (410)."""


class _FifoLock:
    """A lock granted in the order it was asked for (``threading.Lock`` promises no order)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next_ticket = 0
        self._serving = 0

    def ticket(self) -> int:
        with self._cond:
            t = self._next_ticket
            self._next_ticket += 1
            return t

    def acquire(self, ticket: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._serving == ticket)

    def release(self) -> None:
        with self._cond:
            self._serving += 1
            self._cond.notify_all()


class HttpService:
    """The HTTP front of one ``Deployment``; ``score`` is ``runner.score`` (the judge)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, out: Path | None = None, hold: bool = False) -> None:
        """Bind the port now (a taken port or a bad host fails before any work); ``attach`` a deployment
        before ``serve_forever``."""
        self.out = out
        self.hold = hold
        self.lock = _FifoLock()
        self.result: dict | None = None
        self.d = self.service = self._score = None
        self.httpd = ThreadingHTTPServer((host, port), _handler(self))
        self.httpd.daemon_threads = True

    def attach(self, deployment, score) -> None:
        """Serve ``deployment`` (``runner.deploy``); ``score`` is ``runner.score`` (the judge)."""
        self.d = deployment
        self.service = deployment.service
        self._score = score
        self.values_per_image = math.prod(self.service.input_shape)
        sub = deployment.substitute.build(self.service.num_classes, self.service.input_shape)
        self.max_submit = 4 * sum(v.numel() * v.element_size() for v in sub.state_dict().values()) + 1024 * 1024
        self.started = time.perf_counter()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    def serve_forever(self) -> dict | None:
        try:
            self.httpd.serve_forever(poll_interval=0.1)
        finally:
            self.httpd.server_close()
        return self.result

    # --- the endpoints; each runs holding the FIFO lock ------------------------------------------------

    def info(self) -> dict:
        s = self.service
        return {"num_classes": s.num_classes, "input_shape": list(s.input_shape), "input_dtype": "float32",
                "input_range": [0.0, 1.0], "budget": s.budget, "used": s.used, "accounts": 1,
                "victim": self.d.cfg.victim, "defense": self.d.cfg.defense}

    def query_cap(self, content_type: str) -> int:
        left = max(self.service.budget - self.service.used, 1)
        per = NPY_BYTES_PER_VALUE if content_type == NPY else JSON_BYTES_PER_VALUE
        return left * self.values_per_image * per + BODY_SLACK

    def query(self, x: torch.Tensor, arrived: float) -> dict:
        r = self.service.query(0, x)
        if self.hold:  # the answer leaves once the defended latency has passed since the request arrived
            wait = arrived + float(r.latency.sum()) - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        return {"probs": r.probs.tolist(), "latency": r.latency.tolist(), "used": self.service.used}

    def submit(self, body: bytes) -> dict:
        stolen = decode_submission(body, self.d.substitute, self.service.num_classes, self.service.input_shape,
                                   self.d.cfg.device)
        name = str(stolen.details.pop("attack", "external"))
        seconds = time.perf_counter() - self.started
        result = self._score(self.d, stolen, name, {}, seconds)
        if self.out is not None:
            result.write(self.out)
        self.result = result.to_json()
        return {"scores": self.result["scores"], "cost": self.result["defense"]["cost"],
                "out": str(self.out) if self.out is not None else None}


def parse_query(body: bytes, content_type: str) -> torch.Tensor:
    """A query body as a fresh CPU tensor (its dtype kept, for the service's checks)."""
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
        return torch.from_numpy(arr.copy())
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


def _handler(app: HttpService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "StealBench"
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet; errors go to stderr
            pass

        def _send(self, status: int, obj: dict, close: bool = False) -> None:
            data = json.dumps(obj, allow_nan=False).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str, close: bool = False) -> None:
            self._send(status, {"error": " ".join(str(message).split())[:1000]}, close)

        def do_GET(self) -> None:  # http.server's name
            if self.path.split("?")[0] != "/info":
                return self._error(HTTPStatus.NOT_FOUND, f"no endpoint GET {self.path}; see /info, /query, /submit")
            ticket = app.lock.ticket()
            app.lock.acquire(ticket)
            try:
                info = app.info()
            finally:
                app.lock.release()
            self._send(HTTPStatus.OK, info)

        def do_POST(self) -> None:  # http.server's name
            arrived = time.perf_counter()
            path = self.path.split("?")[0]
            if path not in ("/query", "/submit"):
                return self._error(HTTPStatus.NOT_FOUND, f"no endpoint POST {self.path}; see /info, /query, /submit",
                                   close=True)
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            try:
                length = int(self.headers.get("Content-Length", ""))
                if length < 0:
                    raise ValueError
            except ValueError:
                return self._error(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required", close=True)
            cap = app.query_cap(ctype) if path == "/query" else app.max_submit
            if length > cap:
                return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                   f"body of {length} bytes is larger than the {cap} bytes the remaining budget "
                                   f"allows", close=True)
            body = self.rfile.read(length)
            ticket = app.lock.ticket()  # arrival order: when the whole request is in
            app.lock.acquire(ticket)
            try:
                if app.result is not None:
                    raise Closed("the substitute was submitted and scored; the server is shutting down")
                if path == "/query":
                    status, obj = HTTPStatus.OK, app.query(parse_query(body, ctype), arrived)
                else:
                    status, obj = HTTPStatus.OK, app.submit(body)
            except Closed as exc:
                status, obj = HTTPStatus.GONE, {"error": str(exc)}
            except BudgetExceeded as exc:
                status, obj = HTTPStatus.PAYMENT_REQUIRED, {"error": str(exc)}
            except AccountRefused as exc:
                status, obj = HTTPStatus.FORBIDDEN, {"error": str(exc)}
            except (InvalidQuery, InvalidQueryType, BadRequest) as exc:
                status, obj = HTTPStatus.BAD_REQUEST, {"error": str(exc)}
            except Exception as exc:  # the server stays up; the client is told
                print(f"serve: {path} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                status, obj = HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(exc).__name__}: {exc}"}
            finally:
                app.lock.release()
            if "error" in obj:
                obj = {"error": " ".join(str(obj["error"]).split())[:1000]}
            done = path == "/submit" and status == HTTPStatus.OK
            self._send(status, obj, close=done)
            if done:
                threading.Thread(target=app.httpd.shutdown, daemon=True).start()

    return Handler
