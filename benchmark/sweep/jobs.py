"""A sweep job: one cell of the grid with a deterministic id, where its files go, its state
(done / failed / todo), and the record of a failure."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.config import RunConfig

STATE_DONE, STATE_FAILED, STATE_TODO = "done", "failed", "todo"


@dataclass(frozen=True)
class Job:
    """One cell of the grid: its deterministic id and its full configuration."""

    id: str
    config: RunConfig

    def result_path(self, out_dir: Path) -> Path:
        return Path(out_dir) / f"{self.id}.json"

    def error_path(self, out_dir: Path) -> Path:
        return Path(out_dir) / f"{self.id}.error.json"


def canonical(cfg: RunConfig) -> str:
    return json.dumps(cfg.to_json(), sort_keys=True, default=list)


def job_id(cfg: RunConfig) -> str:
    """``<attack>__<defense>__<victim>__<dataset>__s<seed>__<hash>``: readable, and unique because the
    hash covers the whole configuration (options, budget, timing, ...)."""
    digest = hashlib.sha256(canonical(cfg).encode()).hexdigest()[:10]
    parts = [cfg.attack, cfg.defense, cfg.victim, cfg.dataset, f"s{cfg.seed}", digest]
    return "__".join(re.sub(r"[^A-Za-z0-9_.-]+", "-", p) for p in parts)


def job_state(job: Job, out_dir: Path) -> str:
    """``done`` when its result file holds this job's configuration, ``failed`` when only an error
    record exists, else ``todo``. A result file that does not parse (never written by us: writes are
    atomic) counts as ``todo`` and is replaced."""
    path = job.result_path(out_dir)
    if path.exists():
        try:
            data = json.loads(path.read_text())
            if json.dumps(data.get("config"), sort_keys=True) == canonical(job.config):
                return STATE_DONE
        except (OSError, ValueError, AttributeError):
            pass
    return STATE_FAILED if job.error_path(out_dir).exists() else STATE_TODO


def failure_record(job: Job, error: dict[str, Any], executor: str) -> dict[str, Any]:
    return {"job": job.id, "config": job.config.to_json(), "error": error, "executor": executor,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def error_info(exc: BaseException) -> dict[str, Any]:
    text = str(exc).strip()
    return {"type": type(exc).__name__, "message": text.splitlines()[0] if text else type(exc).__name__,
            "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))}


def default_workers(n_jobs: int) -> int:
    return max(1, min(os.cpu_count() or 1, n_jobs))
