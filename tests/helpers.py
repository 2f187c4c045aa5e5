"""Small shared fixtures for tests: an untrained tiny victim behind an oracle."""

import torch

from benchmark.data import TaskData
from benchmark.datasets.synthetic import make_task_split
from benchmark.oracle import OwnerResources, VictimOracle
from benchmark.plugins import VICTIMS
from benchmark.timing import LatencyProfile, SimulatedTiming

PROFILE = LatencyProfile((100e-6, 200e-6, 300e-6, 400e-6), (5e-6,) * 4, "test")


def tiny_victim(seed: int = 0):
    torch.manual_seed(seed)
    net = VICTIMS["sdn-tiny"]().build(10, (3, 32, 32)).eval()
    net.set_thresholds([0.11, 0.12, 0.13, 0.0])  # untrained softmax ~0.1: samples spread a little
    return net


def tiny_task(n: int = 256, seed: int = 0) -> TaskData:
    """A small slice of the embedded synthetic task (the owner's data in defense tests)."""
    gen = torch.Generator().manual_seed(seed)
    train, val, test = (make_task_split(n, gen) for _ in range(3))
    return TaskData("synthetic", train, val, test, 10)


def tiny_oracle(budget: int = 1000, seed: int = 0, profile: LatencyProfile = PROFILE,
                owner: bool = False) -> VictimOracle:
    """The tiny victim served with simulated timing; ``owner=True`` also gives the server-side
    owner resources (the model, a tiny task, cpu, a fixed cache key) that some defenses need."""
    model = tiny_victim()
    resources = OwnerResources(model, tiny_task(), "cpu", "test-sdn-tiny") if owner else None
    return VictimOracle(model, SimulatedTiming(profile, seed), budget, owner=resources)


def briefly_trained_oracle(profile: LatencyProfile = PROFILE):
    """``tiny_oracle`` with owner resources whose victim is trained for a few seconds (4 epochs of
    Adam on the owner's tiny task), so that it predicts several classes."""
    oracle = tiny_oracle(budget=100_000, profile=profile, owner=True)
    model, task = oracle.owner.model, oracle.owner.task
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(4):
        for start in range(0, len(task.train), 64):
            rows = torch.arange(start, min(start + 64, len(task.train)))
            x, y = task.train.images(rows), task.train.y[rows]
            loss = sum(torch.nn.functional.cross_entropy(lg, y) for lg in model(x))
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return oracle
