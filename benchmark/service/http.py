"""The same deployment as ``run``'s, served over HTTP on a local port, for attack code written
elsewhere (``python -m benchmark serve``; docs/service.md).

Transport: the standard library's ``http.server.ThreadingHTTPServer``: no extra dependency, and the
server is meant for loopback only (it binds 127.0.0.1 by default; it has no TLS and no
authentication). Each connection gets a thread, so a slow client's upload blocks nobody, but every
request, once wholly received, waits its turn on a first-come-first-served ticket lock: the
service answers one request at a time, in arrival order, exactly as the in-process path does.

Up to ``accounts`` attacker accounts share one budget, as an attack's Sybil accounts do in ``run``:
the first is open from the start (queries that name no account are its), ``POST /account`` opens
the next; ids are the service's opaque account ids. The budget, the honest user, the defense's
per-account state and every counter are the ``Service``'s. Bodies are read by ``_body``: never a
pickle.
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import torch

from benchmark.errors import AccountRefused, BudgetExceeded, InvalidQuery, InvalidQueryType
from benchmark.options import plugin_options
from benchmark.service._body import NPY, BadRequest, decode_submission, parse_query

#: bytes a body may hold per image value: a JSON float written in full ("0.123456789012345678, ")
JSON_BYTES_PER_VALUE = 32
NPY_BYTES_PER_VALUE = 8  # float64, so that a float64 upload gets its 400 (dtype), not a 413
BODY_SLACK = 64 * 1024
ACCOUNT_HEADER = "X-Account"
ENDPOINTS = "see GET /info, POST /query, /account, /submit"


class Closed(RuntimeError):
    """A request after the submission (410)."""


class NoMoreAccounts(RuntimeError):
    """``POST /account`` with every account already open (409)."""


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

    def __init__(self, host: str = "127.0.0.1", port: int = 0, out: Path | None = None, hold: bool = False,
                 accounts: int = 1) -> None:
        """Bind the port now (a taken port or a bad host fails before any work); ``attach`` a deployment
        (made with ``accounts`` attacker accounts) before ``serve_forever``."""
        self.out = out
        self.hold = hold
        self.accounts = int(accounts)
        self.opened = 1  # account 0 is open from the start
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
        if len(self.service.attacker_ids) != self.accounts:
            raise ValueError(f"the deployment holds {len(self.service.attacker_ids)} attacker accounts, "
                             f"the server {self.accounts}")
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
                "input_range": [0.0, 1.0], "budget": s.budget, "used": s.used, "accounts": self.accounts,
                "accounts_open": self.opened, "account": s.attacker_ids[0],
                "victim": self.d.cfg.victim, "defense": self.d.cfg.defense,
                "substitute": {"name": self.d.substitute.name, "options": plugin_options(self.d.substitute)}}

    def open_account(self) -> dict:
        if self.opened >= self.accounts:
            raise NoMoreAccounts(f"all {self.accounts} accounts are open (the server was started with "
                                 f"--accounts {self.accounts})")
        self.opened += 1
        return {"account": self.service.attacker_ids[self.opened - 1], "accounts_open": self.opened,
                "accounts": self.accounts}

    def account_number(self, account: str | None) -> int:
        """The service's number of an open account id (None: the first account)."""
        if account is None:
            return 0
        ids = self.service.attacker_ids[:self.opened]
        if account not in ids:
            raise BadRequest(f"no open account {account[:40]!r}: use an id that /info or POST /account gave")
        return ids.index(account)

    def query_cap(self, content_type: str) -> int:
        left = max(self.service.budget - self.service.used, 1)
        per = NPY_BYTES_PER_VALUE if content_type == NPY else JSON_BYTES_PER_VALUE
        return left * self.values_per_image * per + BODY_SLACK

    def query(self, x: torch.Tensor, account: int, arrived: float) -> dict:
        r = self.service.query(account, x)
        if self.hold:  # the answer leaves once the defended latency has passed since the request arrived
            wait = arrived + float(r.latency.sum()) - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        return {"probs": r.probs.tolist(), "latency": r.latency.tolist(), "used": self.service.used,
                "account": self.service.attacker_ids[account]}

    def submit(self, body: bytes) -> dict:
        stolen = decode_submission(body, self.d.substitute, self.service.num_classes, self.service.input_shape,
                                   self.d.cfg.device)
        name = str(stolen.details.pop("attack", "external"))
        refused = sum(a in self.service.refused for a in self.service.attacker_ids)
        stolen.details["service_accounts"] = {"limit": self.accounts, "opened": self.opened, "refused": refused}
        seconds = time.perf_counter() - self.started
        result = self._score(self.d, stolen, name, {}, seconds)
        if self.out is not None:
            result.write(self.out)
        self.result = result.to_json()
        return {"scores": self.result["scores"], "cost": self.result["defense"]["cost"],
                "out": str(self.out) if self.out is not None else None}


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
                return self._error(HTTPStatus.NOT_FOUND, f"no endpoint GET {self.path}; {ENDPOINTS}")
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
            if path not in ("/query", "/submit", "/account"):
                return self._error(HTTPStatus.NOT_FOUND, f"no endpoint POST {self.path}; {ENDPOINTS}", close=True)
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            try:
                length = int(self.headers.get("Content-Length", ""))
                if length < 0:
                    raise ValueError
            except ValueError:
                return self._error(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required", close=True)
            cap = {"/query": app.query_cap(ctype), "/submit": app.max_submit}.get(path, BODY_SLACK)
            if length > cap:
                return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                   f"body of {length} bytes is larger than the {cap} bytes the remaining budget "
                                   f"allows", close=True)
            body = self.rfile.read(length)
            ticket = app.lock.ticket()  # arrival order: when the whole request is in
            app.lock.acquire(ticket)
            account = None
            try:
                if app.result is not None:
                    raise Closed("the substitute was submitted and scored; the server is shutting down")
                if path == "/query":
                    x, named = parse_query(body, ctype)
                    header = self.headers.get(ACCOUNT_HEADER)
                    if named is not None and header is not None and named != header:
                        raise BadRequest(f'the {ACCOUNT_HEADER} header and the body\'s "account" differ')
                    account = app.account_number(named if named is not None else header)
                    status, obj = HTTPStatus.OK, app.query(x, account, arrived)
                elif path == "/account":
                    status, obj = HTTPStatus.OK, app.open_account()
                else:
                    status, obj = HTTPStatus.OK, app.submit(body)
            except Closed as exc:
                status, obj = HTTPStatus.GONE, {"error": str(exc)}
            except BudgetExceeded as exc:
                status, obj = HTTPStatus.PAYMENT_REQUIRED, {"error": str(exc)}
            except AccountRefused as exc:
                status, obj = HTTPStatus.FORBIDDEN, {"error": str(exc)}
            except NoMoreAccounts as exc:
                status, obj = HTTPStatus.CONFLICT, {"error": str(exc)}
            except (InvalidQuery, InvalidQueryType, BadRequest) as exc:
                status, obj = HTTPStatus.BAD_REQUEST, {"error": str(exc)}
            except Exception as exc:  # the server stays up; the client is told
                print(f"serve: {path} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                status, obj = HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(exc).__name__}: {exc}"}
            finally:
                app.lock.release()
            if "error" in obj:
                obj = {"error": " ".join(str(obj["error"]).split())[:1000]}
                if status == HTTPStatus.FORBIDDEN:  # which account is refused; the others still ask
                    obj["account"] = app.service.attacker_ids[account]
            done = path == "/submit" and status == HTTPStatus.OK
            self._send(status, obj, close=done)
            if done:
                threading.Thread(target=app.httpd.shutdown, daemon=True).start()

    return Handler
