"""Where entries live and what they are called.

An entry is one run's result JSON (``benchmark.result.Result.to_json()``) stored at a path derived
from its configuration alone::

    entries/<victim>-<dataset>/<defense>/<attack>-s<seed>-<hash8>.json

``hash8`` is the first 8 hex digits of the SHA-256 of what decides how the entry is verified and
ranked: its configuration (``device`` included; not ``data_root`` and ``download``, which only say
where data was found), its torch thread count and the key of its numeric environment
(``benchmark.environment.key``: library versions, kernels, thread counts). An entry recorded without
a numeric environment (a *legacy* entry, made before StealBench recorded one) keeps its old name,
which hashes the configuration without ``device``; ``verify`` never counts it as verified.

Two entries with the same *identity* (the configuration without ``device``, ``data_root``,
``download``) are the same configuration, which the leaderboard holds at most once.

The name hashes the configuration as the entry states it (complete and typed when it was
submitted), so it does not change when a plugin later gains an option; the duplicate check
(``leaderboard.validate``) compares configurations with every option filled in and typed as the
plugins do now.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: configuration fields that say where a run happened, not what it was
WHERE = ("device", "data_root", "download")
#: configuration fields outside the file name's hash (``device`` is inside: it decides how an entry is verified)
UNHASHED = ("data_root", "download")
#: an entry file larger than this, or nested deeper, is refused before it is parsed
MAX_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 64


@dataclass(frozen=True)
class Entry:
    """One entry file: its path and parsed content (``data`` is None if it did not parse)."""

    path: Path
    data: dict[str, Any] | None
    error: str | None = None


def show(path: Path) -> str:
    """A path as printed in messages: relative to the working directory when it is below it."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+=-]", "_", str(name)) or "_"


def identity(config: dict[str, Any]) -> dict[str, Any]:
    """The configuration minus where it ran: equal identities mean the same configuration."""
    return {k: v for k, v in config.items() if k not in WHERE}


def _sha8(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def identity_hash(config: dict[str, Any], environment: dict[str, Any] | None = None) -> str:
    """The file name's hash: see the module docstring (``environment``: the entry's ``environment``;
    without a numeric environment, the legacy hash of the configuration without ``device``)."""
    numeric = (environment or {}).get("numeric") if isinstance(environment, dict) else None
    if not isinstance(numeric, dict):
        return _sha8(identity(config))
    from benchmark.environment import key

    return _sha8({"config": {k: v for k, v in config.items() if k not in UNHASHED},
                  "torch_threads": environment.get("torch_threads"), "numeric": key(numeric)})


def entry_relpath(config: dict[str, Any], environment: dict[str, Any] | None = None) -> Path:
    """The path (relative to the entries folder) an entry with this configuration and environment must have."""
    return (Path(f"{_safe(config['victim'])}-{_safe(config['dataset'])}") / _safe(config["defense"])
            / f"{_safe(config['attack'])}-s{int(config['seed'])}-{identity_hash(config, environment)}.json")


def nesting_depth(text: str) -> int:
    """How deep JSON ``text`` nests objects and arrays (strings skipped), without parsing it."""
    depth = deepest = 0
    for match in re.finditer(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', text):
        token = match.group()
        if token in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif token in "]}":
            depth -= 1
    return deepest


def _reject_constant(name: str) -> float:
    # NaN / Infinity parse (so the validator can name the field), marked by a float NaN or inf
    return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[name]


def read_entry(path: Path) -> Entry:
    try:
        size = Path(path).stat().st_size
        if size > MAX_BYTES:
            return Entry(Path(path), None, f"the file has {size} bytes; an entry has at most {MAX_BYTES}")
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        return Entry(Path(path), None, f"cannot read the file ({getattr(exc, 'strerror', None) or exc})")
    depth = nesting_depth(text)
    if depth > MAX_DEPTH:
        return Entry(Path(path), None, f"JSON nested {depth} levels deep; an entry nests at most {MAX_DEPTH}")
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        return Entry(Path(path), None, f"not valid JSON ({exc})")
    if not isinstance(data, dict):
        return Entry(Path(path), None, f"must hold a JSON object, not {type(data).__name__}")
    return Entry(Path(path), data)


def entry_files(entries_dir: Path) -> list[Path]:
    """Every entry file (``*.json``, not hidden), sorted."""
    root = Path(entries_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*.json")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))


def stray_files(entries_dir: Path) -> list[Path]:
    """Files under the entries folder that are not entries (e.g. a temporary file left by a killed writer)."""
    root = Path(entries_dir)
    if not root.is_dir():
        return []
    keep = set(entry_files(root))
    return sorted(p for p in root.rglob("*") if p.is_file() and p not in keep)


def load_entries(entries_dir: Path) -> list[Entry]:
    return [read_entry(p) for p in entry_files(entries_dir)]
