"""``python -m leaderboard submit``: run one configuration and file it as a new entry.

The configuration is completed before the run (explicit budget, every plugin option), so the entry
states everything ``verify`` needs to re-run it even after a plugin's defaults change. The new
entry must pass the same checks as ``validate`` and must not exist yet; it is written atomically
(``benchmark.io.write_json``: a temporary file in the same folder, then a rename), so an
interrupted submit leaves no partial file. ``--from-result`` files a result that ``python -m
benchmark run`` or ``sweep`` already produced instead of running it again.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from benchmark.config import RunConfig
from benchmark.errors import StealBenchError
from leaderboard.schema import KINDS, canonical_options, check_entry, lookup, plugin_origin
from leaderboard.store import entry_relpath, show
from leaderboard.validate import validate_entries

POLICY = {"timing": "simulated", "timing_profile": "flops", "data_root": None}
#: torch threads of a submitted run (the leaderboard's numeric environment runs one thread everywhere)
STANDARD_THREADS = 1


def complete_config(cfg: RunConfig) -> RunConfig:
    """``cfg`` with an explicit budget and every plugin option stated; refuses settings that the
    leaderboard does not take (they could not be re-run exactly)."""
    for key, want in POLICY.items():
        if getattr(cfg, key) != want:
            raise StealBenchError(f"leaderboard entries need {key} = {want!r} (got {getattr(cfg, key)!r}) so "
                                  f"that anyone can re-run them exactly; see the README, section Leaderboard")
    for kind in ("attack", "defense", "victim", "dataset", "query_data"):
        _, problem = lookup(kind, getattr(cfg, kind))
        if problem:
            raise StealBenchError(problem)
    opts = {f"{kind}_options": canonical_options(kind, getattr(cfg, kind), getattr(cfg, f"{kind}_options"))
            for kind in KINDS}
    budget = cfg.budget
    if budget is None:
        attack, _ = lookup("attack", cfg.attack)
        budget = int(attack.default_budget)
    return dataclasses.replace(cfg, budget=budget, **opts)


def plugin_versions(config: dict[str, Any]) -> dict[str, str]:
    """``{kind: "distribution==version"}`` for the plugins that come from outside StealBench."""
    out = {}
    for kind in KINDS:
        if not isinstance(config.get(kind), str):
            continue
        obj, _ = lookup(kind, config[kind])
        origin = plugin_origin(obj) if obj is not None else None
        if origin is not None:
            out[kind] = origin
    return out


def prepare(data: dict[str, Any]) -> dict[str, Any]:
    """A result made into an entry: plugin distributions recorded in its environment."""
    data = dict(data)
    env = dict(data.get("environment") or {})
    versions = plugin_versions(data["config"])
    if versions:
        env["plugins"] = versions
    data["environment"] = env
    return data


def check_new(data: dict[str, Any], entries_dir: Path) -> Path:
    """Where the new entry goes; raises with every problem if it may not go there."""
    problems = check_entry(data)
    if problems:
        raise StealBenchError("the result is not a valid entry: " + "; ".join(problems))
    if not isinstance(data["environment"].get("numeric"), dict):
        raise StealBenchError("the result does not record its numeric environment (environment.numeric: made by "
                              "an older StealBench); run it again with this one")
    path = Path(entries_dir) / entry_relpath(data["config"], data["environment"])  # config complete and typed
    if path.exists():
        raise StealBenchError(f"{show(path)} already exists (the same configuration); entries are never "
                              f"overwritten; delete it in a separate change if it must be redone")
    from leaderboard.store import Entry, load_entries

    dup = [p for p in validate_entries([*load_entries(entries_dir), Entry(path, data)])
           if p.startswith(f"{show(path)}: duplicate")]
    if dup:
        raise StealBenchError(dup[0])
    return path


def _canonical(config: dict[str, Any]) -> dict[str, Any]:
    from leaderboard.validate import canonical_config

    return canonical_config(config)


def write_entry(data: dict[str, Any], entries_dir: Path) -> Path:
    from benchmark.io import write_json

    path = check_new(data, entries_dir)
    try:
        write_json(path, data, overwrite=False)
    except FileExistsError:
        raise StealBenchError(f"{show(path)} already exists; entries are never overwritten") from None
    return path


def uncommitted_code() -> list[str]:
    """Files of StealBench's code with uncommitted changes (the entry's ``git_commit`` lacks them)."""
    import subprocess

    here = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--", "benchmark", "attacks", "defenses", "victims"],
                             cwd=here, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line[3:] for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def existing_entry(config: dict[str, Any], entries_dir: Path) -> Path | None:
    """The entry that already holds this configuration (compared with every option typed), if any."""
    from leaderboard.store import identity, load_entries
    from leaderboard.validate import canonical_config

    want = identity(_canonical(config))
    for entry in load_entries(entries_dir):
        try:
            if entry.data is not None and identity(canonical_config(entry.data["config"])) == want:
                return entry.path
        except (KeyError, TypeError, StealBenchError):
            continue  # not a valid entry: validate reports it
    return None


def submit(cfg: RunConfig, entries_dir: Path, progress: bool = False) -> Path:
    """Run ``cfg`` (completed) under the leaderboard's numeric environment
    (``benchmark.environment.STANDARD``: portable kernels, one thread) in a process of its own, and
    write it as a new entry; returns its path."""
    from benchmark.environment import STANDARD
    from leaderboard.child import run_child

    cfg = complete_config(cfg)
    held = existing_entry(cfg.to_json(), entries_dir)
    if held is not None:  # fail before the minutes of running, not after
        raise StealBenchError(f"{show(held)} already exists (the same configuration); entries are never "
                              f"overwritten")
    result = run_child(cfg.to_json(), STANDARD_THREADS, STANDARD, progress=progress)
    data = prepare(result)
    data["config"] = stated_options(data)  # what the run really used (e.g. options derived from the victim)
    try:
        return write_entry(data, entries_dir)
    except StealBenchError as exc:
        kept = keep_rejected(data)
        raise StealBenchError(f"{exc} (the run's result is kept at {show(kept)})") from None


def stated_options(data: dict[str, Any]) -> dict[str, Any]:
    """The configuration with each plugin's options as the run recorded them (resolved, complete)."""
    config = dict(data["config"])
    for kind in KINDS:
        block = data.get(kind)
        if isinstance(block, dict) and isinstance(block.get("options"), dict):
            config[f"{kind}_options"] = {**(config.get(f"{kind}_options") or {}), **block["options"]}
    return config


def keep_rejected(data: dict[str, Any]) -> Path:
    """A result that could not become an entry, kept under results/ so minutes of work are not lost."""
    import time

    from benchmark.io import write_json

    cfg = data["config"]
    path = Path("results") / f"leaderboard-rejected-{time.strftime('%Y%m%d-%H%M%S')}-{cfg['attack']}-" \
                             f"{cfg['defense']}-{cfg['victim']}-s{cfg['seed']}.json"
    write_json(path, data)
    return path


def import_result(path: Path, entries_dir: Path) -> Path:
    """File an existing result JSON (from ``benchmark run`` / ``sweep``) as a new entry: its
    configuration is completed from the options the run recorded."""
    from leaderboard.store import read_entry

    entry = read_entry(path)
    if entry.data is None:
        raise StealBenchError(f"{show(path)}: {entry.error}")
    data = dict(entry.data)
    config = data.get("config")
    if not isinstance(config, dict):
        raise StealBenchError(f"{show(path)}: not a result (no config)")
    data["config"] = config = stated_options(data)
    data = prepare(data)  # the installed version of an out-of-tree plugin (a run result does not say)
    problems = check_entry(data)
    if problems:
        raise StealBenchError(f"{show(path)} is not a valid entry: " + "; ".join(problems))
    config.update(_canonical(config))
    return write_entry(data, entries_dir)


def resubmit(path: Path, entries_dir: Path) -> Path:
    """Run an entry's configuration again under the leaderboard's numeric environment and replace
    the entry with the new result (e.g. a legacy entry, recorded without a numeric environment).
    The old file is removed only once the new run has succeeded; it is put back if the new entry
    cannot be written."""
    from benchmark.environment import STANDARD
    from leaderboard.child import run_child
    from leaderboard.store import read_entry

    old = read_entry(path)
    if old.data is None:
        raise StealBenchError(f"{show(path)}: {old.error}")
    problems = check_entry(old.data)
    if problems:
        raise StealBenchError(f"{show(path)} is not a valid entry: " + "; ".join(problems))
    result = run_child(old.data["config"], STANDARD_THREADS, STANDARD)
    data = prepare(result)
    data["config"] = stated_options(data)
    text = Path(path).read_bytes()
    Path(path).unlink()
    try:
        return write_entry(data, entries_dir)
    except BaseException:
        Path(path).write_bytes(text)
        raise
