"""Energy per sample from hardware counters: NVML's total-energy counter on NVIDIA GPUs
(``nvidia-ml-py``, imported as ``pynvml``), Intel RAPL (``/sys/class/powercap``) on CPU where
readable; otherwise ``None`` with the reason. Never estimated from a model."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

RAPL = Path("/sys/class/powercap/intel-rapl:0/energy_uj")


@dataclass(frozen=True)
class EnergyReading:
    joules_per_sample: float | None
    source: str  # "nvml" | "rapl" | "unavailable"
    reason: str | None = None

    def to_json(self) -> dict:
        return {"joules_per_sample": self.joules_per_sample, "source": self.source, "reason": self.reason}


def _nvml_counter(device: torch.device) -> Callable[[], float] | str:
    try:
        import pynvml
    except ImportError:
        return "nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
        index = device.index if device.index is not None else torch.cuda.current_device()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)  # raises if unsupported
    except Exception as exc:  # pynvml raises NVMLError subclasses
        return f"NVML energy counter unavailable: {exc}"
    return lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1000.0  # mJ -> J


def _rapl_counter() -> Callable[[], float] | str:
    try:
        RAPL.read_text()
    except OSError as exc:
        return f"no readable RAPL counter ({exc.strerror or type(exc).__name__})"
    return lambda: int(RAPL.read_text()) / 1e6


def measure(fn: Callable[[], None], n_samples: int, device: str, min_seconds: float = 1.0,
            max_reps: int = 50) -> EnergyReading:
    """Joules per sample of ``fn`` (which processes ``n_samples``), repeated until the counter has
    run for ``min_seconds`` (the counters update every few ms)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        counter, source = _nvml_counter(dev), "nvml"
    else:
        counter, source = _rapl_counter(), "rapl"
    if isinstance(counter, str):
        return EnergyReading(None, "unavailable", counter)
    fn()  # warm-up
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    reps, e0, t0 = 0, counter(), time.perf_counter()
    while reps < max_reps and (reps == 0 or time.perf_counter() - t0 < min_seconds):
        fn()
        reps += 1
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    joules = counter() - e0
    if joules <= 0:
        return EnergyReading(None, "unavailable", f"{source} counter did not advance")
    return EnergyReading(joules / (reps * n_samples), source)
