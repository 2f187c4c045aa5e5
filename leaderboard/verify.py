"""``python -m leaderboard verify``: re-run entries with their recorded configuration, seed and
torch thread count, and fail if a score differs beyond the tolerance.

Tolerance (``TOLERANCE``; ``--exact`` sets every one to 0):

- exact: counts and structure (``queries``, the victim's ``num_exits`` and ``exit_flops``);
- absolute 0.02: fractions (``acc``, ``victim_acc``, ``clo``, ``fidelity``, ``clo_and_fidelity``,
  ``exit_accuracy(_baseline)``, exit histograms, the victim's thresholds, the defense's
  ``accuracy_lost`` / ``defended_acc``; exact family: ``output_agreement``, ``neurons_recovered``);
- relative 0.02: ``cc_flops``, ``victim_cc_flops``, ``cc_ratio``, ``added_latency_mean_s``;
- any other number in ``scores``: within 0.02 absolute or 0.02 relative;
- not compared: wall-clock and energy measurements (``attack_seconds`` and every other
  ``*_seconds`` score, ``energy_*``, the victim's ``train_seconds`` and ``cached``) and the environment.

Entries use the simulated timing channel with the FLOPs profile (machine-independent) on CPU, so a
re-run with the same thread count on the same kind of machine reproduces every compared number
bit for bit (``--exact`` passes); the tolerance is there for other CPUs and BLAS builds, whose float
rounding can move a training run by a few test samples.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leaderboard.schema import check_entry, is_number
from leaderboard.store import read_entry, show

ABS, REL = 0.02, 0.02
TOLERANCE = {"abs": ABS, "rel": REL}
EXACT_KEYS = {"scores.queries", "victim.num_exits", "victim.exit_flops"}
ABS_KEYS = {"scores.acc", "scores.victim_acc", "scores.clo", "scores.fidelity", "scores.clo_and_fidelity",
            "scores.exit_accuracy", "scores.exit_accuracy_baseline", "scores.victim_exit_hist",
            "scores.stolen_exit_hist", "scores.output_agreement", "scores.neurons_recovered",
            "scores.neurons_identified", "scores.label_agreement", "victim.thresholds",
            "defense.cost.accuracy_lost", "defense.cost.defended_acc"}
REL_KEYS = {"scores.cc_flops", "scores.victim_cc_flops", "scores.cc_ratio", "defense.cost.added_latency_mean_s"}
SKIP_SCORES = {"attack_seconds", "energy_j_per_sample", "energy_source", "energy_reason"}


@dataclass
class Outcome:
    path: Path
    status: str  # "ok" | "fail" | "skip"
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    largest: tuple[float, str] = (0.0, "")

    def lines(self) -> list[str]:
        name = show(self.path)
        if self.status == "ok":
            diff, where = self.largest
            note = f"largest difference {diff:.4g} in {where}" if where else "identical"
            return [f"ok    {name} ({self.seconds:.0f} s; {note})"]
        if self.status == "skip":
            return [f"skip  {name}: {p}" for p in self.problems]
        return [f"FAIL  {name}: {p}" for p in self.problems]


def _get(data: dict, path: str) -> tuple[bool, Any]:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _rule(key: str, exact: bool) -> tuple[str, float]:
    if exact or key in EXACT_KEYS:
        return "exact", 0.0
    if key in ABS_KEYS:
        return "abs", TOLERANCE["abs"]
    if key in REL_KEYS:
        return "rel", TOLERANCE["rel"]
    return "abs-or-rel", max(TOLERANCE["abs"], TOLERANCE["rel"])


def _differs(a: float, b: float, rule: str, tol: float) -> tuple[bool, float]:
    """(beyond tolerance?, the difference as the rule measures it)."""
    absolute = abs(a - b)
    relative = absolute / max(abs(a), 1e-300) if a != b else 0.0
    if rule == "exact":
        return a != b, absolute
    if rule == "abs":
        return absolute > tol + 1e-12, absolute
    if rule == "rel":
        return relative > tol + 1e-12, relative
    return min(absolute, relative) > tol + 1e-12, min(absolute, relative)


def _describe_rule(rule: str, tol: float) -> str:
    return {"exact": "must be equal", "abs": f"tolerance {tol:g} absolute", "rel": f"tolerance {tol:g} relative",
            "abs-or-rel": f"tolerance {tol:g} absolute or relative"}[rule]


def compare(recorded: dict, rerun: dict, exact: bool = False) -> tuple[list[str], tuple[float, str]]:
    """(problems, (largest difference, where)) between a recorded entry and its re-run."""
    keys = [f"scores.{k}" for k in (recorded.get("scores") or {})
            if k not in SKIP_SCORES and not k.endswith("_seconds")]
    keys += ["victim.num_exits", "victim.exit_flops", "victim.thresholds", "defense.cost.accuracy_lost",
             "defense.cost.defended_acc", "defense.cost.added_latency_mean_s"]
    problems: list[str] = []
    largest = (0.0, "")
    for key in keys:
        has_a, a = _get(recorded, key)
        has_b, b = _get(rerun, key)
        if not has_a:
            continue
        if not has_b:
            problems.append(f"{key} recorded but the re-run has no such field")
            continue
        rule, tol = _rule(key, exact)
        pairs: list[tuple[str, Any, Any]]
        if isinstance(a, list) or isinstance(b, list):
            if not (isinstance(a, list) and isinstance(b, list)) or len(a) != len(b):
                problems.append(f"{key} recorded {a!r}, re-run {b!r}")
                continue
            pairs = [(f"{key}[{i}]", x, y) for i, (x, y) in enumerate(zip(a, b))]
        else:
            pairs = [(key, a, b)]
        for where, x, y in pairs:
            if not (is_number(x) and is_number(y)):
                if x != y:
                    problems.append(f"{where} recorded {x!r}, re-run {y!r}")
                continue
            if not (math.isfinite(x) and math.isfinite(y)):
                if not (x == y or (math.isnan(x) and math.isnan(y))):
                    problems.append(f"{where} recorded {x!r}, re-run {y!r}")
                continue
            beyond, diff = _differs(float(x), float(y), rule, tol)
            if diff > largest[0]:
                largest = (diff, where)
            if beyond:
                problems.append(f"{where} recorded {x!r}, re-run {y!r} (differs by {diff:.4g}; "
                                f"{_describe_rule(rule, tol)})")
    return problems, largest


def rerun(data: dict) -> dict:
    """Run the entry's configuration again, with its torch thread count, in the leaderboard zoo."""
    import torch

    from benchmark.config import RunConfig
    from benchmark.runner import run
    from leaderboard.submit import leaderboard_cache

    cfg = RunConfig.from_dict(data["config"], source="config")
    threads = int(data["environment"]["torch_threads"])
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with leaderboard_cache(threads):
            return run(cfg, progress=False).to_json()
    finally:
        torch.set_num_threads(saved)


def verify_one(path: Path, exact: bool = False) -> Outcome:
    import torch

    from benchmark.errors import StealBenchError

    start = time.perf_counter()
    entry = read_entry(path)
    if entry.data is None:
        return Outcome(path, "fail", [entry.error or "unreadable"])
    problems = check_entry(entry.data)
    if problems:
        return Outcome(path, "fail", [f"does not validate: {p}" for p in problems])
    device = entry.data["config"]["device"]
    if device.startswith("cuda") and not torch.cuda.is_available():
        return Outcome(path, "skip", [f"made on {device}; this machine has no CUDA device"])
    try:
        fresh = rerun(entry.data)
    except StealBenchError as exc:
        return Outcome(path, "fail", [f"re-run failed: {exc}"], time.perf_counter() - start)
    except Exception as exc:  # a plugin's bug is a failed entry, not a crashed verify
        first = (str(exc).splitlines() or [""])[0]
        return Outcome(path, "fail", [f"re-run crashed: {type(exc).__name__}: {first}"], time.perf_counter() - start)
    problems, largest = compare(entry.data, fresh, exact)
    return Outcome(path, "fail" if problems else "ok", problems, time.perf_counter() - start, largest)


def recorded_seconds(path: Path) -> float | None:
    """The attack time an entry recorded (None if unreadable): what a re-run costs, roughly."""
    data = read_entry(path).data
    value = ((data or {}).get("scores") or {}).get("attack_seconds")
    return float(value) if is_number(value) else None


def select(files: list[Path], sample: int | None, sample_seed: int, cheap: float | None = None) -> list[Path]:
    """Which entries to re-run: all ``files``; or, with ``cheap``, those whose recorded attack took at
    most ``cheap`` seconds; plus, with ``sample``, that many of the others drawn with ``sample_seed``
    (the same draw every time)."""
    files = sorted(files)
    if sample is None and cheap is None:
        return files
    chosen = [f for f in files if (s := recorded_seconds(f)) is not None and s <= cheap] if cheap is not None else []
    rest = [f for f in files if f not in chosen]
    if sample is not None:
        chosen += rest if sample >= len(rest) else random.Random(sample_seed).sample(rest, sample)
    return sorted(chosen)


def verify_many(files: list[Path], exact: bool = False, jobs: int = 1, report=print) -> list[Outcome]:
    """Verify each file (in ``jobs`` processes); ``report`` gets each outcome's lines as it finishes."""
    outcomes: list[Outcome] = []
    if jobs <= 1 or len(files) <= 1:
        for path in files:
            outcome = verify_one(path, exact)
            for line in outcome.lines():
                report(line)
            outcomes.append(outcome)
        return outcomes
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(verify_one, path, exact): path for path in files}
        for future in as_completed(futures):
            try:
                outcome = future.result()
            except Exception as exc:  # a crashed worker is a failed entry, not a crashed verify
                outcome = Outcome(futures[future], "fail", [f"re-run crashed: {type(exc).__name__}: {exc}"])
            for line in outcome.lines():
                report(line)
            outcomes.append(outcome)
    return sorted(outcomes, key=lambda o: o.path)
