"""``python -m benchmark serve``: a real server process, an external-style client over loopback
(plain ``requests``, the example client of docs/service.md run as written), and the run scored."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
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


def start_server(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "benchmark", "serve", *TINY, "--defense", "jitter",
                             "--budget", str(BUDGET), "--port", "0", "--out", str(tmp_path / "result.json"), *extra],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.match(r"serving sdn-tiny behind jitter on (http://127\.0\.0\.1:\d+) \(budget (\d+)\)$", line.strip())
        if m:
            assert int(m.group(2)) == BUDGET
            return proc, m.group(1)
    proc.kill()
    raise AssertionError(f"the server did not come up: {proc.stderr.read()[-2000:]}")


def test_serve_answers_an_external_client_and_scores_its_substitute(tmp_path):
    client = client_namespace()
    proc, url = start_server(tmp_path, "--sleep")
    try:
        info = requests.get(f"{url}/info", timeout=60).json()
        assert info == {"num_classes": 10, "input_shape": [3, 32, 32], "input_dtype": "float32",
                        "input_range": [0.0, 1.0], "budget": BUDGET, "used": 0, "accounts": 1,
                        "victim": "sdn-tiny", "defense": "jitter"}
        x = np.random.default_rng(1).random((4, 3, 32, 32), dtype=np.float32)
        r = requests.post(f"{url}/query", json={"x": x.tolist()}, timeout=60)  # JSON
        assert r.status_code == 200, r.text
        a = r.json()
        assert np.asarray(a["probs"]).shape == (4, 10) and len(a["latency"]) == 4 and a["used"] == 4
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
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
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
