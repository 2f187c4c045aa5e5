"""``serve --timing measured`` end to end: a client over loopback times its requests with its own
clock and sees the defended latency. Reliable on a busy machine: the answer is held at least the
latency the service reports (padding: at least its deadline per image, every answer the same).
Fragile on a busy machine, hence ``slow``: without a defense, batches that leave at the first exit
come back sooner than batches that run the whole network; padding makes the two the same."""

from __future__ import annotations

import io
import statistics
import time

import numpy as np
import pytest
import requests
import torch
from test_serve import start_server

from benchmark.plugins import DEFENSES, VICTIMS
from benchmark.timing import flops_profile

MEASURED = ["--timing", "measured"]
BALANCED = ["--victim-opt", "exit_rule=balanced"]  # an equal share of images leaves at each exit
BIG_BUDGET = 100_000  # honest images come at random points of the budget: few of them in these short streams


def _padding_deadline() -> float:
    """Padding's hold per image under the flops profile (the slowest exit's mean + margin stds)."""
    profile = flops_profile(VICTIMS["sdn-tiny"]().build(10, (3, 32, 32)).exit_flops())
    k = int(np.argmax(profile.mean))
    return profile.mean[k] + DEFENSES["padding"]().margin * profile.std[k]


def _timed_query(url: str, x: np.ndarray) -> tuple[float, np.ndarray]:
    """(seconds by the client's clock, reported latencies) of one .npy query."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(x, dtype=np.float32))
    body = buf.getvalue()
    t0 = time.perf_counter()
    r = requests.post(f"{url}/query", data=body, headers={"Content-Type": "application/x-npy"}, timeout=120)
    seconds = time.perf_counter() - t0
    assert r.status_code == 200, r.text
    return seconds, np.asarray(r.json()["latency"])


def test_measured_padding_holds_every_answer_at_least_its_deadline(tmp_path):
    deadline = _padding_deadline()
    proc, url = start_server(tmp_path, *MEASURED, defense="padding", budget=BIG_BUDGET)
    try:
        rng = np.random.default_rng(0)
        walls, reported = [], []
        for batch in (1, 1, 1, 4, 4, 4, 8, 8):
            seconds, latency = _timed_query(url, rng.random((batch, 3, 32, 32), dtype=np.float32))
            walls.append(seconds)
            reported.append(latency)
    finally:
        proc.kill()
        proc.wait()
    for seconds, latency in zip(walls, reported):
        assert (latency >= deadline).all()  # padding's floor, per image
        assert seconds >= latency.sum() >= len(latency) * deadline  # held end to end: at least the floor
    flat = np.concatenate(reported)  # the deadline exactly, wherever computing took less (most answers;
    assert np.isclose(flat, deadline, rtol=1e-9, atol=0).mean() >= 0.25  # a loaded machine may take longer)


def _exit_batches(n: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """``n`` scoring images that leave the (cached) victim at its first exit, and ``n`` that run to
    its last: the same victim the server deploys, loaded here to know which exit each image takes."""
    from benchmark.config import RunConfig
    from benchmark.runner import deploy

    cfg = RunConfig(victim="sdn-tiny", victim_options={"epochs": 1, "train_subset": 1000, "exit_rule": "balanced"},
                    timing_profile="flops", budget=10)
    d = deploy(cfg, progress=False)
    x = d.test.images(slice(0, 2000))
    with torch.no_grad():
        exits = d.victim.eval().early_exit(x).exits
    first, last = x[exits == 0][:n], x[exits == d.victim.num_exits - 1][:n]
    assert len(first) == len(last) == n, "the victim's first and last exits should each take some images"
    return first.numpy(), last.numpy()


def _medians(url: str, first: np.ndarray, last: np.ndarray, rounds: int) -> dict:
    times: dict = {"first": [], "last": [], "first_reported": [], "last_reported": []}
    for r in range(rounds):
        for name in (("first", "last") if r % 2 == 0 else ("last", "first")):
            seconds, latency = _timed_query(url, first if name == "first" else last)
            times[name].append(seconds)
            times[f"{name}_reported"].append(float(latency.sum()))
    return {k: statistics.median(v) for k, v in times.items()}


@pytest.mark.slow
def test_measured_times_follow_the_exits_without_defense_and_padding_flattens_them(tmp_path):
    """Without a defense, a batch of first-exit images comes back sooner than one of last-exit
    images (medians over rounds, alternating order); behind padding both take its deadline."""
    runs = {}
    for defense in ("none", "padding"):
        proc, url = start_server(tmp_path, *MEASURED, *BALANCED, defense=defense, budget=BIG_BUDGET)
        try:
            if not runs:
                first, last = _exit_batches()  # the server has trained and cached the victim by now
            runs[defense] = _medians(url, first, last, rounds=12)
        finally:
            proc.kill()
            proc.wait()
    none, pad = runs["none"], runs["padding"]
    print({k: {n: round(v * 1e3, 2) for n, v in m.items()} for k, m in runs.items()})  # milliseconds
    assert none["last_reported"] > none["first_reported"]  # the server's own clock: late exits cost more
    assert none["last"] > none["first"]  # and the client's clock sees it
    hold = len(first) * _padding_deadline()
    assert min(pad["first_reported"], pad["last_reported"]) >= hold > none["first_reported"]
    assert min(pad["first"], pad["last"]) >= hold > none["first"]
    for what in ("", "_reported"):  # the exit no longer shows (a generous margin: compute may overrun the deadline)
        assert abs(pad["last" + what] - pad["first" + what]) < 0.25 * hold
