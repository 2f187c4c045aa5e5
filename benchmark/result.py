"""Result: one run, one schema-versioned JSON file, written atomically."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmark.io import write_json

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Result:
    config: dict[str, Any]
    scores: dict[str, Any]
    victim: dict[str, Any]
    defense: dict[str, Any]
    attack: dict[str, Any]
    environment: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "config": self.config, "scores": self.scores,
                "victim": self.victim, "defense": self.defense, "attack": self.attack,
                "environment": self.environment}

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        write_json(path, self.to_json())
        return path


def software_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("stealbench")
    except PackageNotFoundError:
        return "0+unknown"


def git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: str) -> dict[str, Any]:
    """The software and machine that made a result; ``numeric`` is what decides its float results
    (kernels, library versions, thread counts: ``benchmark.environment``)."""
    from benchmark.environment import numeric_environment

    env = {"stealbench": software_version(), "git_commit": git_commit(),
           "python": platform.python_version(), "torch": torch.__version__,
           "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": device,
           "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    env["numeric"] = numeric_environment()
    return env
