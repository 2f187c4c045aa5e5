"""What to sweep: the grid's axes parsed from flags or a sweep file, every entry typed and
validated, and the size checked before any list is expanded."""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import dataclass, field
from typing import Any

from benchmark.config import MAX_SEED, RunConfig
from benchmark.errors import ConfigError, show
from benchmark.sweep.jobs import Job, job_id

AXES = ("attacks", "defenses", "victims", "datasets", "seeds")


KINDS = {"attacks": "attack", "defenses": "defense", "victims": "victim"}


# RunConfig fields that are the same for every cell of a sweep (the per-cell ones are the axes)
SHARED = tuple(f.name for f in dataclasses.fields(RunConfig)
               if f.name not in ("attack", "defense", "victim", "dataset", "seed"))


#: the most jobs (cells) one sweep may have, checked before any list is expanded; each job is a
#: whole run, so a grid beyond this is almost surely a typo (``--seeds 0-10000000``)
MAX_JOBS = 10_000


@dataclass(frozen=True)
class Entry:
    """One attack, defense or victim with the options it was given (typed, validated)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.name + "".join(f":{k}={_show(v)}" for k, v in self.options.items())


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(map(_show, value))
    return str(value)


@dataclass(frozen=True)
class SweepSpec:
    attacks: tuple[Entry, ...] = (Entry("ours"),)
    defenses: tuple[Entry, ...] = (Entry("none"),)
    victims: tuple[Entry, ...] = (Entry("sdn-tiny"),)
    datasets: tuple[str, ...] = ("synthetic",)
    seeds: tuple[int, ...] = (0,)
    shared: dict[str, Any] = field(default_factory=dict)  # RunConfig fields common to every cell

    def jobs(self) -> list[Job]:
        """Every cell, ordered so that consecutive jobs use different victims: with N workers the
        first N jobs train N different victims at once instead of queueing on one victim's lock."""
        by_victim: dict[tuple, list[Job]] = {}
        for victim in self.victims:
            for dataset in self.datasets:
                for seed in self.seeds:
                    for attack in self.attacks:
                        for defense in self.defenses:
                            cfg = RunConfig(**self.shared, attack=attack.name, defense=defense.name,
                                            victim=victim.name, dataset=dataset, seed=seed,
                                            attack_options=dict(attack.options),
                                            defense_options=dict(defense.options),
                                            victim_options=dict(victim.options))
                            by_victim.setdefault((victim.label, dataset, seed), []).append(
                                Job(job_id(cfg), cfg))
        groups = list(by_victim.values())
        ordered = [g[i] for i in range(max(map(len, groups), default=0)) for g in groups if i < len(g)]
        ids = [j.id for j in ordered]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise ConfigError(f"the sweep lists the same cell twice ({dup}); remove the duplicate entry")
        return ordered


def parse_entry(item: Any, kind: str) -> tuple[str, dict[str, Any]]:
    """``"jitter:size=2:keyed=true"`` or ``{"name": "jitter", "size": 2}`` -> (name, raw options)."""
    if isinstance(item, dict):
        opts = dict(item)
        name = opts.pop("name", None)
        if not isinstance(name, str) or not name:
            raise ConfigError(f"a {kind} entry given as a table needs name = \"...\" (got {show(item)})")
        return name, opts
    if not isinstance(item, str) or not item.strip():
        raise ConfigError(f"bad {kind} entry {show(item)}: expected NAME[:KEY=VALUE...]")
    name, *pairs = [p.strip() for p in item.strip().split(":")]
    opts: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{kind} entry {show(item)}: option {show(pair)} is not of the form key=value "
                              f"(syntax: NAME[:KEY=VALUE[:KEY=VALUE...]])")
        opts[key.strip()] = value.strip()
    if not name:
        raise ConfigError(f"{kind} entry {show(item)} has no name")
    return name, opts


def split_list(value: Any, what: str) -> list[Any]:
    """A comma-separated string or a list from a sweep file -> list of items (``MAX_JOBS`` at most)."""
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",", MAX_JOBS)]
        if len(items) > MAX_JOBS:
            raise ConfigError(f"--{what} lists more than {MAX_JOBS} entries, the most jobs a sweep may have")
        if not all(items):
            raise ConfigError(f"--{what} {show(value)} has an empty entry")
        return items
    if isinstance(value, (list, tuple)) and value:
        if len(value) > MAX_JOBS:
            raise ConfigError(f"{what} lists {len(value)} entries, more than the {MAX_JOBS} jobs a sweep may have")
        return list(value)
    raise ConfigError(f"{what} must be a non-empty list or comma-separated string, got {show(value)}")


def parse_seeds(value: Any) -> tuple[int, ...]:
    """``"0,1,5-7"`` or ``[0, 1]`` -> (0, 1, 5, 6, 7); at most ``MAX_JOBS`` seeds, each from 0 to
    ``MAX_SEED`` (ranges are measured before they are expanded)."""
    seeds: list[int] = []
    items = split_list(value if not isinstance(value, int) else [value], "seeds")
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, str)):
            raise ConfigError(f"seeds: {show(item)} is not a seed or a range like 0-4")
        text = str(item).strip()
        try:
            if isinstance(item, int):
                lo = hi = item
            elif re.fullmatch(r"\d{1,20}-\d{1,20}", text):
                lo, hi = map(int, text.split("-"))
                if hi < lo:
                    raise ValueError
            else:
                lo = hi = int(text)
        except ValueError:
            raise ConfigError(f"seeds: {show(item)} is not a seed or a range like 0-4") from None
        if lo < 0 or hi > MAX_SEED:
            raise ConfigError(f"seeds must be integers from 0 to {MAX_SEED}, got {show(item)}")
        if len(seeds) + (hi - lo + 1) > MAX_JOBS:
            raise ConfigError(f"seeds: {show(value)} is more than {MAX_JOBS} seeds, the most jobs a sweep "
                              f"may have; split the sweep")
        seeds.extend(range(lo, hi + 1))
    seen: set[int] = set()
    for seed in seeds:
        if seed in seen:
            raise ConfigError(f"seeds: {show(value)} lists seed {seed} twice")
        seen.add(seed)
    return tuple(seeds)


def typed_entry(kind: str, name: str, raw: dict[str, Any]) -> Entry:
    """Validate ``raw`` against the plugin's options and keep the given keys with typed values, so
    ``repeats="2"`` (flags) and ``repeats=2`` (TOML) are the same cell with the same job id."""
    from benchmark.options import build_plugin, plugin_options
    from benchmark.plugins import ATTACKS, DEFENSES, VICTIMS

    registry = {"attack": ATTACKS, "defense": DEFENSES, "victim": VICTIMS}[kind]
    full = plugin_options(build_plugin(registry[name], raw, kind))
    return Entry(name, {k: full[k] for k in raw})


def build_spec(settings: dict[str, Any], source: str = "sweep") -> SweepSpec:
    """A validated SweepSpec from a dict of settings (sweep file merged with flags). Keys: the
    axes (attacks, defenses, victims, datasets, seeds), ``attack_options`` / ``defense_options`` /
    ``victim_options`` (applied to every entry of that kind; an entry's own options win) and any
    other RunConfig setting (budget, timing, device, ...), shared by every cell."""
    allowed = set(AXES) | set(SHARED)
    for key in settings:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; settings: {', '.join(sorted(allowed))}"
            raise ConfigError(f"{source}: unknown sweep setting {key!r}{hint}")
    shared = {k: v for k, v in settings.items() if k in SHARED and v is not None}
    base_opts = {kind: shared.pop(f"{kind}_options", None) or {} for kind in KINDS.values()}
    for kind, opts in base_opts.items():
        if not isinstance(opts, dict):
            raise ConfigError(f"{source}: {kind}_options must be a table of key = value")
    RunConfig.from_dict(shared, source)  # types and values of the shared settings
    axes: dict[str, Any] = {}
    for axis, kind in KINDS.items():
        if settings.get(axis) is None:
            continue
        entries = []
        for item in split_list(settings[axis], axis):
            name, raw = parse_entry(item, kind)
            entries.append(typed_entry(kind, name, {**base_opts[kind], **raw}))
        axes[axis] = tuple(entries)
    for kind in KINDS.values():  # global options with the default entry
        axis = kind + "s"
        if axis not in axes and base_opts[kind]:
            default = getattr(SweepSpec, axis)[0]
            axes[axis] = (typed_entry(kind, default.name, base_opts[kind]),)
    if settings.get("datasets") is not None:
        axes["datasets"] = tuple(str(d) for d in split_list(settings["datasets"], "datasets"))
    if settings.get("seeds") is not None:
        axes["seeds"] = parse_seeds(settings["seeds"])
    spec = SweepSpec(**axes, shared=shared)
    check_size(spec)
    check_spec(spec)
    return spec


def check_size(spec: SweepSpec) -> None:
    """Refuse a grid of more than ``MAX_JOBS`` cells before a single job is built."""
    sizes = {axis: len(getattr(spec, axis)) for axis in AXES}
    total = math.prod(sizes.values())
    if total > MAX_JOBS:
        grid = " x ".join(f"{n} {axis}" for axis, n in sizes.items())
        raise ConfigError(f"the sweep has {total} jobs ({grid}), more than the {MAX_JOBS} a sweep may have; "
                          f"split it into smaller sweeps")


def check_spec(spec: SweepSpec) -> None:
    """Everything that can be checked before any job starts: names, budgets, data."""
    from benchmark.data import QUERY_SETS, TASKS
    from benchmark.options import build_plugin
    from benchmark.plugins import ATTACKS

    for dataset in spec.datasets:
        TASKS[dataset]  # unknown names: one-line error with "did you mean"
    QUERY_SETS[spec.shared.get("query_data", RunConfig.query_data)]
    budget = spec.shared.get("budget")
    for attack in spec.attacks:
        plugin = build_plugin(ATTACKS[attack.name], attack.options, "attack")
        if budget is not None:
            plugin.check_budget(budget)
