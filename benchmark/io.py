"""Atomic file writing: a reader never sees a half-written result, checkpoint or entry."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: Path, obj: Any, overwrite: bool = True) -> None:
    """Write ``obj`` as pretty JSON atomically (refusing to replace an existing file if asked)."""
    data = (json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n").encode()
    if not overwrite and Path(path).exists():
        raise FileExistsError(str(path))
    _atomic(Path(path), lambda fh: fh.write(data))


def save_torch(path: Path, obj: Any) -> None:
    _atomic(Path(path), lambda fh: torch.save(obj, fh))


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive inter-process lock (``flock``) held while the block runs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
