"""Sweeps: the attack x defense x victim x dataset x seed grid, one job per cell, resumable.

A sweep is a list of jobs; each job is one ``RunConfig`` and writes the same JSON as ``run --out``
to ``DIR/<job id>.json``. The job id is deterministic (the cell's names plus a hash of its whole
configuration), so re-running the same sweep finds the files it already wrote and skips them. A
failed job writes ``DIR/<job id>.error.json`` instead (its error and traceback) and the others go on;
re-running retries it (unless ``retry_failed`` is off) and removes the error file once it succeeds.

Only the driver (this process) writes result files, each atomically (``benchmark.io.write_json``),
so workers on other machines need no shared folder and an interrupted sweep leaves only complete
files. Entry syntax (``--attacks``, ``--defenses``, ``--victims``): comma-separated entries, each
``NAME[:KEY=VALUE[:KEY=VALUE...]]``, e.g. ``none,jitter:size=2:keyed=true,padding``; sweep files
(TOML/YAML) may also give an entry as a table ``{name = "jitter", size = 2}``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import fcntl
import hashlib
import json
import math
import os
import re
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.config import MAX_SEED, RunConfig
from benchmark.errors import ConfigError, StealBenchError, show
from benchmark.io import write_json

AXES = ("attacks", "defenses", "victims", "datasets", "seeds")
KINDS = {"attacks": "attack", "defenses": "defense", "victims": "victim"}
# RunConfig fields that are the same for every cell of a sweep (the per-cell ones are the axes)
SHARED = tuple(f.name for f in dataclasses.fields(RunConfig)
               if f.name not in ("attack", "defense", "victim", "dataset", "seed"))
STATE_DONE, STATE_FAILED, STATE_TODO = "done", "failed", "todo"
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
class Job:
    """One cell of the grid: its deterministic id and its full configuration."""

    id: str
    config: RunConfig

    def result_path(self, out_dir: Path) -> Path:
        return Path(out_dir) / f"{self.id}.json"

    def error_path(self, out_dir: Path) -> Path:
        return Path(out_dir) / f"{self.id}.error.json"


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


def canonical(cfg: RunConfig) -> str:
    return json.dumps(cfg.to_json(), sort_keys=True, default=list)


def job_id(cfg: RunConfig) -> str:
    """``<attack>__<defense>__<victim>__<dataset>__s<seed>__<hash>``: readable, and unique because the
    hash covers the whole configuration (options, budget, timing, ...)."""
    digest = hashlib.sha256(canonical(cfg).encode()).hexdigest()[:10]
    parts = [cfg.attack, cfg.defense, cfg.victim, cfg.dataset, f"s{cfg.seed}", digest]
    return "__".join(re.sub(r"[^A-Za-z0-9_.-]+", "-", p) for p in parts)


# ---- parsing the grid -------------------------------------------------------------------------------


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


# ---- state on disk ---------------------------------------------------------------------------------


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


@contextlib.contextmanager
def sweep_lock(out_dir: Path) -> Iterator[None]:
    """Only one sweep writes into a folder at a time (a second one is refused, not queued)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".sweep.lock", "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StealBenchError(f"another sweep is writing to {out_dir}; wait for it or use another --out") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ---- running ---------------------------------------------------------------------------------------


@dataclass
class SweepSummary:
    total: int
    skipped: int = 0  # already done before this invocation
    done: int = 0  # finished now
    failed: int = 0  # failed now
    skipped_failed: int = 0  # failed before, not retried
    seconds: float = 0.0
    ran: list[str] = field(default_factory=list)  # ids of the jobs executed now
    failures: list[str] = field(default_factory=list)

    @property
    def complete(self) -> int:
        return self.skipped + self.done

    def line(self) -> str:
        parts = [f"{self.complete}/{self.total} jobs complete ({self.done} now, {self.skipped} already done)"]
        if self.failed or self.skipped_failed:
            parts.append(f"{self.failed + self.skipped_failed} failed")
        return ", ".join(parts) + f" in {self.seconds:.1f} s"


class Progress:
    """tqdm bar: jobs done / failed / left (a no-op when quiet)."""

    def __init__(self, total: int, initial: int, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc="sweep", unit="job", dynamic_ncols=True)
        self.total, self.done, self.failed = total, initial, 0
        self._post()

    def _post(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix(done=self.done, failed=self.failed, left=self.total - self.done - self.failed,
                                 refresh=False)

    def update(self, ok: bool) -> None:
        if ok:
            self.done += 1
        else:
            self.failed += 1
        if self.bar is not None:
            self.bar.update(1)
        self._post()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def plan(jobs: list[Job], out_dir: Path, retry_failed: bool = True) -> tuple[list[Job], dict[str, str]]:
    """The jobs still to run, and the state of every job."""
    states = {job.id: job_state(job, out_dir) for job in jobs}
    todo = [j for j in jobs if states[j.id] == STATE_TODO or (retry_failed and states[j.id] == STATE_FAILED)]
    return todo, states


def run_sweep(jobs: list[Job], out_dir: str | Path, executor: str = "local", workers: int | None = None,
              cpus_per_job: int | None = None, address: str | None = None, retry_failed: bool = True,
              progress: bool = True, on_result: Callable[[Job, dict], None] | None = None) -> SweepSummary:
    """Run the jobs not yet done under ``out_dir`` on the chosen executor, writing one file per job
    as each finishes. KeyboardInterrupt stops the workers and propagates; every file already written
    is complete, and re-running the same sweep picks up where this one stopped."""
    from benchmark.executors import make_executor

    out_dir = Path(out_dir)
    start = time.perf_counter()
    with sweep_lock(out_dir):
        todo, states = plan(jobs, out_dir, retry_failed)
        summary = SweepSummary(total=len(jobs), skipped=sum(s == STATE_DONE for s in states.values()))
        todo_ids = {j.id for j in todo}
        summary.failures = [i for i, s in states.items() if s == STATE_FAILED and i not in todo_ids]
        summary.skipped_failed = len(summary.failures)
        runner = make_executor(executor, workers=workers, cpus_per_job=cpus_per_job, address=address, jobs=todo)
        write_json(out_dir / "sweep.json", {"jobs": [j.id for j in jobs], "executor": executor,
                                            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        bar = Progress(len(jobs), summary.skipped, progress)
        bar.failed = summary.skipped_failed
        try:
            if todo:
                with runner:
                    for job, outcome in runner.run(todo):
                        outcome = record(job, outcome, out_dir, executor, summary)
                        if on_result is not None:
                            on_result(job, outcome)
                        bar.update(outcome["ok"])
        finally:
            bar.close()
            summary.seconds = time.perf_counter() - start
    return summary


def record(job: Job, outcome: dict[str, Any], out_dir: Path, executor: str,
           summary: SweepSummary) -> dict[str, Any]:
    """Write a finished job's file (atomically): its result, or its error record. A result JSON
    cannot hold (NaN or infinity in it) makes the job failed, with that error; returns the outcome."""
    summary.ran.append(job.id)
    if outcome["ok"]:
        try:
            write_json(job.result_path(out_dir), outcome["result"])
        except StealBenchError as exc:
            outcome = {"ok": False, "error": error_info(exc)}
    if outcome["ok"]:
        with contextlib.suppress(FileNotFoundError):
            job.error_path(out_dir).unlink()
        summary.done += 1
    else:
        write_json(job.error_path(out_dir), failure_record(job, outcome["error"], executor))
        summary.failed += 1
        summary.failures.append(job.id)
    return outcome


def describe(jobs: Iterable[Job], out_dir: Path) -> str:
    """A table of the jobs and their state (``sweep --dry-run``)."""
    import pandas as pd

    rows = [(j.id, Entry(j.config.attack, j.config.attack_options).label,
             Entry(j.config.defense, j.config.defense_options).label,
             Entry(j.config.victim, j.config.victim_options).label, j.config.dataset, j.config.seed,
             job_state(j, out_dir)) for j in jobs]
    frame = pd.DataFrame(rows, columns=["job", "attack", "defense", "victim", "dataset", "seed", "state"])
    return frame.to_markdown(index=False)


def default_workers(n_jobs: int) -> int:
    return max(1, min(os.cpu_count() or 1, n_jobs))
