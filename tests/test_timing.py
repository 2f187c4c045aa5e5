import torch
from helpers import PROFILE, tiny_victim

from benchmark.oracle import VictimOracle
from benchmark.timing import MeasuredTiming, SimulatedTiming, calibrate


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
