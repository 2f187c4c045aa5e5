import time

import numpy as np
import pytest
import torch
from helpers import PROFILE, tiny_victim

from benchmark.oracle import VictimOracle
from benchmark.timing import MeasuredTiming, SimulatedTiming, calibrate, flops_profile


def test_measured_timing_times_each_sample():
    victim = tiny_victim()
    x = torch.rand(12, 3, 32, 32)
    measured = VictimOracle(victim, MeasuredTiming(PROFILE), 100).query(x)
    simulated = VictimOracle(victim, SimulatedTiming(PROFILE, 0), 100).query(x)
    torch.testing.assert_close(measured.probs, simulated.probs, rtol=1e-4, atol=1e-6)  # same answers
    assert torch.isfinite(measured.latency).all() and (measured.latency > 0).all()
    assert (measured.latency < 1.0).all()  # a tiny CNN at batch 1 answers in well under a second


def test_calibration_is_monotone_and_restores_thresholds():
    victim = tiny_victim()
    before = victim.thresholds.clone()
    profile = calibrate(victim, reps=5, warmup=1)
    assert torch.equal(victim.thresholds, before)
    assert list(profile.mean) == sorted(profile.mean) and all(m > 0 for m in profile.mean)
    assert all(s >= 0.01 * m for s, m in zip(profile.std, profile.mean))
    assert profile.source == "calibrated:cpu"


class _SleepyNet:
    """Duck-typed multi-exit model whose forced exit k takes (k + 1) ms, and whose calls
    ``burst`` (a range of call numbers) take 6 ms more: a busy spell on a shared machine."""

    num_exits, input_shape = 3, (3, 4, 4)

    def __init__(self, burst: range) -> None:
        self.thresholds = torch.zeros(3)
        self.burst, self.calls = burst, 0

    def forced_exit_thresholds(self, k: int):
        return torch.tensor([0.0 if j == k else 2.0 for j in range(3)])

    def set_thresholds(self, t) -> None:
        self.thresholds = torch.as_tensor(t).clone()

    def early_exit(self, x):
        k = int((self.thresholds <= 1.0).nonzero()[0]) if (self.thresholds <= 1.0).any() else 2
        time.sleep((k + 1) * 1e-3 + (6e-3 if self.calls in self.burst else 0.0))
        self.calls += 1


def test_calibration_survives_a_burst_of_load():
    # timed one exit after the other, a burst as long as one exit's repetitions covers all of exit
    # 2's calls (here: calls 12-20), making it slower than exit 3; timed round-robin, the
    # same burst costs each exit only 3 of its 9 calls and the medians keep the true order
    net = _SleepyNet(burst=range(3 + 9, 3 + 18))
    profile = calibrate(net, reps=9, warmup=1, attempts=1)  # round-robin alone, no second measurement
    m = profile.mean
    assert 0.8e-3 < m[0] < m[1] < m[2] and m[1] < 2.8e-3 and m[2] < 3.8e-3, m
    with pytest.raises(ValueError, match="keep"):
        calibrate(net, keep=0.0)


class _ClockNet:
    """Duck-typed multi-exit model on a fake clock: forced exit k takes exactly ``cost[k]`` seconds."""

    input_shape = (3, 4, 4)

    def __init__(self, cost) -> None:
        self.cost, self.num_exits, self.now = cost, len(cost), 0
        self.thresholds = torch.zeros(len(cost))

    def forced_exit_thresholds(self, k: int):
        return torch.tensor([0.0 if j == k else 2.0 for j in range(self.num_exits)])

    def set_thresholds(self, t) -> None:
        self.thresholds = torch.as_tensor(t).clone()

    def early_exit(self, x):
        self.now += round(self.cost[int((self.thresholds <= 1.0).nonzero()[0])] * 1e9)


def test_spread_floor_applies_to_the_monotone_centre(monkeypatch):
    # exit 2 measures faster than exit 1 (noise), so its centre is raised to exit 1's; its spread
    # must then be at least 1% of the raised centre (floored before the raise it was 1% of 1 ms)
    net = _ClockNet([2e-3, 1e-3, 3e-3])
    monkeypatch.setattr("benchmark.timing.time.perf_counter_ns", lambda: net.now)
    profile = calibrate(net, reps=8, warmup=1)
    assert profile.mean == pytest.approx((2e-3, 2e-3, 3e-3))
    assert all(s >= 0.01 * m - 1e-15 for s, m in zip(profile.std, profile.mean)), profile.std


@pytest.mark.parametrize("bad", [
    {"mean": [float("nan"), 2e-4, 3e-4, 4e-4], "std": [1e-5] * 4},
    {"mean": [1e-4, 2e-4, 3e-4], "std": [1e-5] * 3},
    {"mean": [1e-4, 2e-4, 3e-4, 4e-4], "std": [1e-5, 0.0, 1e-5, float("inf")]},
])
def test_a_broken_cached_profile_is_measured_again(bad, tmp_path, monkeypatch, capsys):
    """A cached latency profile that is not finite, positive and one per exit is re-calibrated
    (one warning line), never handed to the timing channel."""
    import json

    import benchmark.zoo as zoo
    from benchmark.plugins import VICTIMS
    from benchmark.timing import LatencyProfile

    model = VICTIMS["sdn-tiny"]().build(10, (3, 32, 32))
    entry = zoo.ZooEntry(model, tmp_path / "v.pt", True, 0.0)
    fresh = LatencyProfile((1e-4, 2e-4, 3e-4, 4e-4), (1e-5,) * 4, "calibrated:cpu")
    calls = []
    monkeypatch.setattr(zoo, "calibrate", lambda m: calls.append(m) or fresh)
    cache = tmp_path / "v.latency-cpu.json"
    cache.write_text(json.dumps({**bad, "source": "calibrated:cpu"}))
    assert zoo.latency_profile(entry, "cpu") == fresh and len(calls) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: cached latency profile") and "calibrating again" in err[0]
    assert LatencyProfile.from_json(json.loads(cache.read_text())) == fresh  # the cache is mended
    assert zoo.latency_profile(entry, "cpu") == fresh and len(calls) == 1  # and then used as it is


class _BusyClockNet(_ClockNet):
    """``_ClockNet`` whose call number ``n`` to exit k takes ``cost(k, n)`` seconds (load, noise)."""

    def __init__(self, num_exits: int, cost) -> None:
        super().__init__([0.0] * num_exits)
        self.cost_of, self.calls = cost, 0

    def early_exit(self, x):
        k = int((self.thresholds <= 1.0).nonzero()[0])
        self.now += round(self.cost_of(k, self.calls) * 1e9)
        self.calls += 1


def _fake_clock(monkeypatch, net):
    monkeypatch.setattr("benchmark.timing.time.perf_counter_ns", lambda: net.now)


REPS, WARMUP = 200, 1
ATTEMPT = 3 * REPS  # calls of one measurement of a 3-exit net


def test_separated_steady_exits_are_measured_once_and_reliable(monkeypatch, capsys):
    net = _BusyClockNet(3, lambda k, n: (1e-3, 2e-3, 3e-3)[k])
    _fake_clock(monkeypatch, net)
    profile = calibrate(net, reps=REPS, warmup=WARMUP)
    assert profile.reliable is True and profile.mean == pytest.approx((1e-3, 2e-3, 3e-3))
    assert net.calls == 3 * WARMUP + ATTEMPT  # one measurement
    assert capsys.readouterr().err == ""
    assert profile.to_json()["reliable"] is True


def test_exits_overlapping_across_blocks_are_unreliable(monkeypatch, capsys):
    # exits 2 and 3 are 50 us apart with 40 us of timing noise: a block's centre of exit 3 falls
    # within another block's spread of exit 2, on every one of the three measurements
    noise = np.random.default_rng(0).standard_normal(10_000)
    net = _BusyClockNet(3, lambda k, n: (1e-3, 2e-3, 2.05e-3)[k] + 40e-6 * noise[n])
    _fake_clock(monkeypatch, net)
    profile = calibrate(net, reps=REPS, warmup=WARMUP)
    assert profile.reliable is False
    assert net.calls == 3 * WARMUP + 3 * ATTEMPT  # measured three times in all
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: latency calibration unreliable after 3")
    assert "exits 2 and 3 are not separated" in err[0] and "reliable: false" in err[0]
    assert list(profile.mean) == sorted(profile.mean)  # still a usable profile
    assert profile.to_json()["reliable"] is False


def test_a_busy_spell_is_measured_again(monkeypatch, capsys):
    # load (+50% on every exit) arrives halfway through the first measurement and is gone before
    # the second: the first is refused (its blocks disagree), the second is kept
    start = 3 * WARMUP
    net = _BusyClockNet(3, lambda k, n: (1e-3, 2e-3, 3e-3)[k] * (1.5 if start + ATTEMPT // 2 <= n < start + ATTEMPT
                                                                   else 1.0))
    _fake_clock(monkeypatch, net)
    profile = calibrate(net, reps=REPS, warmup=WARMUP)
    assert profile.reliable is True and profile.mean == pytest.approx((1e-3, 2e-3, 3e-3))
    assert net.calls == 3 * WARMUP + 2 * ATTEMPT
    assert capsys.readouterr().err == ""


def test_a_machine_busy_throughout_is_kept_and_flagged(monkeypatch, capsys):
    # the load arrives halfway through every measurement: three attempts, then kept as unreliable
    net = _BusyClockNet(3, lambda k, n: (1e-3, 2e-3, 3e-3)[k] * (1.5 if (n - 3 * WARMUP) % ATTEMPT >= ATTEMPT // 2
                                                                   else 1.0))
    _fake_clock(monkeypatch, net)
    profile = calibrate(net, reps=REPS, warmup=WARMUP)
    assert profile.reliable is False and net.calls == 3 * WARMUP + 3 * ATTEMPT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "load changed" in err[0]
    # without the check (one block, one attempt) the same timings pass silently: the check is what sees it
    net.calls = 0
    assert calibrate(net, reps=REPS, warmup=WARMUP, blocks=1, attempts=1).reliable is True


def test_latency_profile_json_is_backward_compatible():
    from benchmark.timing import LatencyProfile

    old = {"mean": [1e-4, 2e-4], "std": [1e-5, 1e-5], "source": "calibrated:cpu"}  # cached before the check
    profile = LatencyProfile.from_json(old)
    assert profile.reliable is None and profile.to_json() == old  # unknown: loads, and writes back unchanged
    for flag in (True, False):
        assert LatencyProfile.from_json({**old, "reliable": flag}).reliable is flag
        flagged = LatencyProfile(profile.mean, profile.std, profile.source, flag)
        assert LatencyProfile.from_json(flagged.to_json()) == flagged
    with pytest.raises(TypeError):
        LatencyProfile.from_json({**old, "reliable": "yes"})
    assert "reliable" not in flops_profile([10, 20]).to_json()  # FLOPs profiles: JSON unchanged


def test_an_unreliable_profile_is_cached_as_such_and_reported(tmp_path, monkeypatch, capsys):
    import json

    import benchmark.zoo as zoo
    from benchmark.plugins import VICTIMS
    from benchmark.timing import LatencyProfile

    model = VICTIMS["sdn-tiny"]().build(10, (3, 32, 32))
    entry = zoo.ZooEntry(model, tmp_path / "v.pt", True, 0.0)
    shaky = LatencyProfile((1e-4, 2e-4, 3e-4, 4e-4), (1e-5,) * 4, "calibrated:cpu", False)
    monkeypatch.setattr(zoo, "calibrate", lambda m: shaky)
    assert zoo.latency_profile(entry, "cpu") == shaky
    cache = tmp_path / "v.latency-cpu.json"
    assert json.loads(cache.read_text())["reliable"] is False  # recorded with the profile
    capsys.readouterr()
    assert zoo.latency_profile(entry, "cpu") == shaky  # kept, not measured again on every run
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "marked unreliable" in err[0] and str(cache) in err[0]
    cache.write_text(json.dumps({"mean": [1e-4, 2e-4, 3e-4, 4e-4], "std": [1e-5] * 4, "source": "calibrated:cpu"}))
    assert zoo.latency_profile(entry, "cpu").reliable is None  # an old cache entry loads as it is
    assert capsys.readouterr().err == ""
