"""Small shared fixtures for tests: an untrained tiny victim behind an oracle."""

import torch

from benchmark.oracle import VictimOracle
from benchmark.plugins import VICTIMS
from benchmark.timing import LatencyProfile, SimulatedTiming

PROFILE = LatencyProfile((100e-6, 200e-6, 300e-6, 400e-6), (5e-6,) * 4, "test")


def tiny_victim(seed: int = 0):
    torch.manual_seed(seed)
    net = VICTIMS["sdn-tiny"]().build(10, (3, 32, 32)).eval()
    net.set_thresholds([0.11, 0.12, 0.13, 0.0])  # untrained softmax ~0.1: samples spread a little
    return net


def tiny_oracle(budget: int = 1000, seed: int = 0, profile: LatencyProfile = PROFILE) -> VictimOracle:
    return VictimOracle(tiny_victim(), SimulatedTiming(profile, seed), budget)
