"""Atomic file writing: a reader never sees a half-written result, checkpoint or entry."""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from benchmark.errors import StealBenchError, one_line


def atomic_write(path: Path, write) -> None:
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


def non_finite(obj: Any, where: str = "") -> str | None:
    """The path (``scores.acc``) of the first NaN or infinite float in ``obj``, else None."""
    if isinstance(obj, float):
        return None if math.isfinite(obj) else (where or "the value")
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return None
    for key, value in items:
        found = non_finite(value, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None


def write_json(path: Path, obj: Any, overwrite: bool = True) -> None:
    """Write ``obj`` as pretty JSON atomically (refusing to replace an existing file if asked).
    JSON has no NaN or infinity: such a value is a StealBenchError naming where it is, and nothing
    is written."""
    try:
        data = (json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n").encode()
    except ValueError as exc:
        where = non_finite(obj)
        if where is None:
            raise
        raise StealBenchError(f"{path} not written: {where} is not a finite number (NaN or infinity), "
                              f"which JSON cannot hold") from exc
    if not overwrite and Path(path).exists():
        raise FileExistsError(str(path))
    atomic_write(Path(path), lambda fh: fh.write(data))


def save_torch(path: Path, obj: Any) -> None:
    atomic_write(Path(path), lambda fh: torch.save(obj, fh))


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


def check_writable(path: Path, what: str = "--out") -> None:
    """Fail now, not after the work, if a file cannot be written at ``path``: create its folder,
    create and remove a temporary file there, remove the folders it created. A one-line
    StealBenchError otherwise."""
    path = Path(path)
    if path.is_dir():
        raise StealBenchError(f"{what} {path} is a directory; give a file path")
    _try_folder(path.parent, path, what)


def check_writable_dir(path: Path, what: str = "--out") -> None:
    """Like ``check_writable`` for a folder of results."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise StealBenchError(f"{what} {path} is a file; give a folder")
    _try_folder(path, path, what)


def _try_folder(folder: Path, shown: Path, what: str) -> None:
    missing = [folder, *folder.parents]
    missing = missing[:next((i for i, p in enumerate(missing) if p.exists()), len(missing))]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".write-check.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise StealBenchError(f"{what} {shown} is not writable ({_reason(shown, exc)}); nothing was run") from None
    finally:
        for created in missing:  # deepest first; the real write creates them again
            with contextlib.suppress(OSError):
                created.rmdir()


def _reason(path: Path, exc: OSError) -> str:
    for parent in path.parents:  # the usual cause: a folder on the way is a regular file
        if parent.exists():
            if not parent.is_dir():
                return f"{parent} is a file, not a folder"
            break
    return exc.strerror or one_line(exc) or type(exc).__name__
