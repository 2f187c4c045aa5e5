"""``python -m leaderboard validate``: every entry file against the schema, plus what only the whole
folder can tell: duplicate configurations, files not where their configuration puts them, and
leftovers of interrupted writes. One line per problem, each naming its file."""

from __future__ import annotations

from pathlib import Path

from leaderboard.schema import canonical_options, check_entry
from leaderboard.store import Entry, entry_files, entry_relpath, identity, read_entry, show, stray_files


def canonical_config(config: dict) -> dict:
    """The configuration with every plugin option typed as its plugin types it (so ``size=1`` and
    ``size=1.0`` are the same configuration). Assumes the entry passed ``check_entry``."""
    out = dict(config)
    for kind in ("attack", "defense", "victim"):
        out[f"{kind}_options"] = canonical_options(kind, config[kind], config[f"{kind}_options"])
    return out


def validate_entries(entries: list[Entry], entries_dir: Path | None = None) -> list[str]:
    """Problems, as ``<file>: <problem>`` lines."""
    problems: list[str] = []
    seen: dict[str, Path] = {}
    for entry in entries:
        name = show(entry.path)
        if entry.data is None:
            problems.append(f"{name}: {entry.error}")
            continue
        found = check_entry(entry.data)
        problems.extend(f"{name}: {p}" for p in found)
        if found:
            continue
        config = canonical_config(entry.data["config"])
        key = repr(sorted(identity(config).items()))
        if key in seen:
            problems.append(f"{name}: duplicate configuration: {show(seen[key])} already holds the same "
                            f"attack, defense, victim, options and seed")
        else:
            seen[key] = entry.path
        if entries_dir is not None:
            # as stated: stable when plugins grow
            want = Path(entries_dir) / entry_relpath(entry.data["config"], entry.data["environment"])
            if entry.path.resolve() != want.resolve():
                problems.append(f"{name}: misplaced: an entry with this configuration and numeric environment "
                                f"belongs at {show(want)} (the name hashes config, environment.torch_threads and "
                                f"environment.numeric; python -m leaderboard submit names files)")
    return problems


def validate_dir(entries_dir: Path, files: list[Path] | None = None) -> tuple[int, list[str]]:
    """(number of entries checked, problems) for the whole folder, or for ``files`` (duplicates are
    still checked against the whole folder)."""
    entries_dir = Path(entries_dir)
    everything = [read_entry(p) for p in entry_files(entries_dir)]
    if files:
        chosen = {Path(f).resolve() for f in files}
        rest = [e for e in everything if e.path.resolve() not in chosen]
        targets = [read_entry(Path(f)) for f in files]
        problems = validate_entries(rest + targets, entries_dir)
        names = {show(Path(f)) for f in files}
        return len(targets), [p for p in problems if p.split(": ", 1)[0] in names]
    problems = validate_entries(everything, entries_dir)
    for path in stray_files(entries_dir):
        hint = ("a temporary file left by an interrupted write; delete it" if path.name.startswith(".")
                and path.name.endswith(".tmp") else "not an entry (entries are *.json); move or delete it")
        problems.append(f"{show(path)}: {hint}")
    return len(everything), problems
