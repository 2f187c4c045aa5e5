"""Where StealBench keeps caches and results (overridable by environment variables)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$STEALBENCH_CACHE``, else ``$XDG_CACHE_HOME/stealbench``, else ``~/.cache/stealbench``."""
    env = os.environ.get("STEALBENCH_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "stealbench"


def data_dir() -> Path:
    """Default root for real datasets: ``$STEALBENCH_DATA`` or ``<cache>/data``."""
    env = os.environ.get("STEALBENCH_DATA")
    return Path(env) if env else cache_dir() / "data"
