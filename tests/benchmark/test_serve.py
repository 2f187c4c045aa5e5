"""``python -m benchmark serve``: a real server process, an external-style client over loopback
(plain ``requests``, the example client of docs/service.md run as written), and the run scored."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from benchmark.cli import main

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "service.md"
BUDGET = 64
TINY = ["--victim", "sdn-tiny", "--victim-opt", "epochs=1", "--victim-opt", "train_subset=1000",
        "--timing-profile", "flops", "--quiet"]


def client_namespace() -> dict:
    """The python block of docs/service.md, run as written (line numbers kept for tracebacks)."""
    text = DOC.read_text()
    found = [(text.count("\n", 0, m.start(2)) + 1, m.group(2))
             for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M) if m.group(1) == "python"]
    assert len(found) == 1, "docs/service.md should hold one python block: the example client"
    line, code = found[0]
    namespace: dict = {"__name__": "service_client"}
    exec(compile("\n" * (line - 1) + code, str(DOC), "exec", dont_inherit=True), namespace)
    return namespace


def start_server(tmp_path: Path, *extra: str, defense: str = "jitter", budget: int = BUDGET,
                 accounts: int = 1) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "benchmark", "serve", *TINY, "--defense", defense,
                             "--budget", str(budget), "--accounts", str(accounts), "--port", "0",
                             "--out", str(tmp_path / "result.json"), *extra],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.match(r"serving sdn-tiny behind (\S+) on (http://127\.0\.0\.1:\d+) \(budget (\d+)(, (\d+) accounts)?\)$",
                     line.strip())
        if m:
            assert m.group(1) == defense and int(m.group(3)) == budget
            assert int(m.group(5) or 1) == accounts
            return proc, m.group(2)
    proc.kill()
    raise AssertionError(f"the server did not come up: {proc.stderr.read()[-2000:]}")


@contextlib.contextmanager
def served(tmp_path: Path, *extra: str, **kwargs) -> Iterator[tuple[subprocess.Popen, str]]:
    """``start_server`` for the block's duration; the process is killed at the end if still running."""
    proc, url = start_server(tmp_path, *extra, **kwargs)
    try:
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_answers_an_external_client_and_scores_its_substitute(tmp_path):
    client = client_namespace()
    with served(tmp_path, "--sleep") as (proc, url):
        info = requests.get(f"{url}/info", timeout=60).json()
        assert info == {"num_classes": 10, "input_shape": [3, 32, 32], "input_dtype": "float32",
                        "input_range": [0.0, 1.0], "budget": BUDGET, "used": 0, "accounts": 1,
                        "accounts_open": 1, "account": info["account"], "victim": "sdn-tiny", "defense": "jitter",
                        "substitute": {"name": "sdn-tiny", "options": info["substitute"]["options"]}}
        assert info["substitute"]["options"]["exits"] == 4
        assert re.fullmatch(r"[0-9a-f]{8}", info["account"])
        x = np.random.default_rng(1).random((4, 3, 32, 32), dtype=np.float32)
        r = requests.post(f"{url}/query", json={"x": x.tolist()}, timeout=60)  # JSON
        assert r.status_code == 200, r.text
        a = r.json()
        assert np.asarray(a["probs"]).shape == (4, 10) and len(a["latency"]) == 4 and a["used"] == 4
        assert a["account"] == info["account"]
        assert np.allclose(np.asarray(a["probs"]).sum(1), 1, atol=1e-4)
        t0 = time.perf_counter()
        probs, latency = client["query"](url, x)  # .npy, through the documented client
        elapsed = time.perf_counter() - t0
        assert probs.shape == (4, 10) and latency.shape == (4,) and (latency > 0).all()
        assert elapsed >= latency.sum()  # --sleep: the defended latency is seen end to end

        def refused(status, **kw):
            r = requests.post(f"{url}/query", timeout=60, **kw)
            assert r.status_code == status, r.text
            assert set(r.json()) == {"error"} and "\n" not in r.json()["error"]
            return r.json()["error"]

        assert "[0, 1]" in refused(400, json={"x": (x * 2).tolist()})
        assert "shape" in refused(400, json={"x": x[:, :, :8].tolist()})
        assert "float32" in refused(400, data=_npy(x.astype(np.float64)),
                                    headers={"Content-Type": "application/x-npy"})
        assert "JSON" in refused(400, data=b"{not json", headers={"Content-Type": "application/json"})
        nan = x[:1].copy()
        nan[0, 0, 0, 0] = np.nan
        assert "finite" in refused(400, data=json.dumps({"x": nan.tolist()}),
                                   headers={"Content-Type": "application/json"})
        assert "budget" in refused(402, json={"x": np.zeros((BUDGET, 3, 32, 32), np.float32).tolist()})
        assert "larger" in refused(413, data=b"0" * (BUDGET * 3 * 32 * 32 * 64),
                                   headers={"Content-Type": "application/json"})
        assert requests.get(f"{url}/info", timeout=60).json()["used"] == 8  # refusals cost nothing
        bad = io.BytesIO()
        import torch

        torch.save({"state_dict": {"w": torch.zeros(3)}, "exits": None}, bad)
        r = requests.post(f"{url}/submit", data=bad.getvalue(), timeout=60)
        assert r.status_code == 400 and "sdn-tiny.build" in r.json()["error"]

        answer = client["steal"](url, n=48, steps=3)  # spends 48 more, fits the last head, submits
        assert proc.wait(timeout=120) == 0
    out = proc.stdout.read()
    assert f"result written to {tmp_path / 'result.json'}" in out
    r = json.loads((tmp_path / "result.json").read_text())
    assert r["scores"] == answer["scores"] and r["defense"]["cost"] == answer["cost"]
    assert r["scores"]["queries"] == 56 and 0 <= r["scores"]["acc"] <= 1 and 0 <= r["scores"]["clo"] <= 1
    cost = r["defense"]["cost"]
    assert cost["honest_queries"] > 0 and cost["honest_refused"] == 0 and cost["accuracy_lost"] == 0
    assert cost["added_latency_mean_s"] > 0 and 0 < cost["honest_share"] < 1
    assert r["config"]["attack"] == "external" and r["config"]["defense"] == "jitter"
    assert r["attack"]["name"] == "my-attack" and r["attack"]["substitute_arch"] == "sdn-tiny"
    assert r["attack"]["details"]["service_accounts"] == {"limit": 1, "opened": 1, "refused": 0}


def test_serve_accounts_share_the_budget_and_prada_refuses_one_of_them(tmp_path):
    """Three accounts on one budget; PRADA (tuned to alarm on any account past 5 distances) refuses
    the account that asks many images, with a 403 naming it, while the others are still answered."""
    prada = ["--defense-opt", "delta=1.0", "--defense-opt", "min_distances=5", "--defense-opt", "test_every=1",
             "--defense-opt", "class_min=1"]
    with served(tmp_path, *prada, defense="prada", budget=200, accounts=3) as (proc, url):
        info = requests.get(f"{url}/info", timeout=60).json()
        assert info["accounts"] == 3 and info["accounts_open"] == 1
        first = info["account"]
        opened = [requests.post(f"{url}/account", timeout=60) for _ in range(3)]
        assert [r.status_code for r in opened] == [200, 200, 409], [r.text for r in opened]
        second, third = (r.json()["account"] for r in opened[:2])
        assert len({first, second, third}) == 3 and "3 accounts are open" in opened[2].json()["error"]
        assert requests.get(f"{url}/info", timeout=60).json()["accounts_open"] == 3
        rng = np.random.default_rng(2)

        def ask(n, account=None, how="header"):
            x = rng.random((n, 3, 32, 32), dtype=np.float32)
            if how == "body":
                return requests.post(f"{url}/query", json={"x": x.tolist(), "account": account}, timeout=60)
            headers = {"Content-Type": "application/x-npy", **({"X-Account": account} if account else {})}
            return requests.post(f"{url}/query", data=_npy(x), headers=headers, timeout=60)

        small = ask(3, second)
        assert small.status_code == 200 and small.json()["account"] == second and small.json()["used"] == 3
        big = ask(30)  # no account named: the first one's; PRADA tests it and raises the alarm
        assert big.status_code == 403, big.text
        assert big.json()["account"] == first and "PRADA" in big.json()["error"]
        again = ask(2, first, how="body")
        assert again.status_code == 403 and again.json()["account"] == first
        for account, how in ((second, "body"), (third, "header")):  # the other accounts still get answers
            r = ask(3, account, how)
            assert r.status_code == 200 and r.json()["account"] == account, r.text
            assert np.allclose(np.asarray(r.json()["probs"]).sum(1), 1, atol=1e-4)
        probs, _ = client_namespace()["query"](url, rng.random((2, 3, 32, 32), dtype=np.float32), third)
        assert probs.shape == (2, 10)  # the documented client, from the third account
        assert requests.get(f"{url}/info", timeout=60).json()["used"] == 3 + 30 + 2 + 3 + 3 + 2  # one budget
        assert "no open account" in ask(1, "deadbeef").json()["error"]
        r = requests.post(f"{url}/query", json={"x": np.zeros((1, 3, 32, 32)).tolist(), "account": second},
                          headers={"X-Account": third}, timeout=60)
        assert r.status_code == 400 and "differ" in r.json()["error"]
        assert ask(200 - 43 + 1, third).status_code == 402  # the shared budget is spent, not an account's own
        import torch

        from benchmark.plugins import VICTIMS

        buf = io.BytesIO()
        torch.save({"state_dict": VICTIMS["sdn-tiny"]().build(10, (3, 32, 32)).state_dict(), "exits": None}, buf)
        assert requests.post(f"{url}/submit", data=buf.getvalue(), timeout=120).status_code == 200
        assert proc.wait(timeout=120) == 0
    r = json.loads((tmp_path / "result.json").read_text())
    assert r["attack"]["details"]["service_accounts"] == {"limit": 3, "opened": 3, "refused": 1}
    assert r["scores"]["queries"] == 43
    cost = r["defense"]["cost"]  # the honest user asks from its own account, in the same deployment
    assert cost["honest_queries"] > 0 and cost["honest_refused"] > 0  # this PRADA alarms on any long stream


def _npy(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x)
    return buf.getvalue()


@pytest.mark.parametrize("argv, message", [
    (["--port", "70000"], "--port must be from 0 to 65535"),
    (["--port", "-1"], "--port must be from 0 to 65535"),
    (["--defense", "jiter"], "did you mean 'jitter'"),
    ([], "--budget is required"),
    (["--timing", "psychic"], "invalid choice"),
    (["--accounts", "0"], "--accounts must be from 1 to 10000"),
    (["--accounts", "two"], "invalid int value"),
])
def test_serve_bad_input_is_one_line(argv, message, capsys, tmp_path):
    budget = [] if "--budget is required" in message else ["--budget", "10"]
    assert main(["serve", *budget, *argv, "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "r.json").exists()


def test_serve_out_not_writable_is_one_line(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["serve", "--budget", "10", "--out", str(blocker / "r.json")]) == 2
    err = capsys.readouterr().err
    assert "not writable" in err and err.count("\n") == 1


def test_serve_port_taken_is_one_line(capsys, tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--budget", "10", "--port", str(port), "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and err.count("\n") == 1


def test_fifo_lock_serves_in_ticket_order():
    import threading

    from benchmark.service.http import _FifoLock

    lock, order = _FifoLock(), []
    tickets = [lock.ticket() for _ in range(5)]

    def worker(t):
        lock.acquire(t)
        order.append(t)
        lock.release()

    threads = [threading.Thread(target=worker, args=(t,)) for t in reversed(tickets)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=10)
    assert order == tickets
