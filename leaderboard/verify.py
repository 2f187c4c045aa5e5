"""``python -m leaderboard verify``: re-run entries and compare with what they record.

Each entry is re-run in a process of its own (``leaderboard.child``) with its recorded
configuration, seed and torch thread count, under its recorded numeric environment
(``environment.numeric``: the kernels of NumPy's and SciPy's OpenBLAS, torch's CPU capability,
MKL and oneDNN caps, thread counts, library versions; see ``benchmark.environment``): the recorded
kernels are pinned with environment variables and the child reports which kernels it really used.
Then, per entry:

- **reproduced** (the child's numeric environment has the recorded key): every compared number must
  be bit-identical (tolerance 0). ``ok`` or ``FAIL``.
- **not reproducible here** (a recorded kernel this CPU cannot run, other library versions, a CUDA
  entry on a machine without CUDA, which is re-run on the CPU, or a *legacy* entry recorded without
  a numeric environment): the claims are checked with the per-metric tolerances of ``TOLERANCES``
  (measured spread between kernels, see docs/leaderboard.md) and the entry is ``unverified`` (the
  reason is printed) or ``FAIL``. Unverified entries make ``verify`` exit 1 unless
  ``--allow-unverified``; ``render`` marks them and ranks them below verified ones.

``--exact`` requires bit-identical numbers for every entry, reproduced or not. Not compared: wall
clock (``attack_seconds`` and every ``*_seconds``), the victim's ``train_seconds`` and ``cached``,
and energy where the re-run could not read an energy counter (the entry is then unverified).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leaderboard.schema import check_entry, is_number
from leaderboard.store import Entry, entry_relpath, read_entry, show

#: per-metric tolerance where the numeric environment is not reproduced: (rule, tolerance);
#: rule "exact" (must be equal), "abs" (absolute difference), "rel" (relative difference).
#: Measured spread between OpenBLAS kernels and torch instruction sets: docs/leaderboard.md.
TOLERANCES: dict[str, tuple[str, float]] = {
    # structure and counts
    "victim.num_exits": ("exact", 0.0), "victim.exit_flops": ("exact", 0.0),
    "defense.acts_on": ("exact", 0.0),
    # multi-exit family: about 1.5x the largest difference measured between kernels and between CPU
    # vendors under the same pinned kernels (docs/leaderboard.md)
    "scores.acc": ("abs", 0.2), "scores.victim_acc": ("abs", 0.01), "scores.clo": ("abs", 0.07),
    "scores.clo_lift": ("abs", 0.07), "scores.clo_balanced": ("abs", 0.05), "scores.clo_query": ("abs", 0.03),
    "scores.clo_query_lift": ("abs", 0.03), "scores.clo_query_balanced": ("abs", 0.05),
    "scores.fidelity": ("abs", 0.2), "scores.clo_and_fidelity": ("abs", 0.04),
    "scores.exit_accuracy": ("abs", 0.01), "scores.exit_accuracy_baseline": ("abs", 0.01),
    "scores.victim_exit_hist": ("abs", 0.05), "scores.stolen_exit_hist": ("abs", 0.15),
    "victim.thresholds": ("abs", 0.03), "defense.cost.accuracy_lost": ("abs", 0.01),
    "defense.cost.defended_acc": ("abs", 0.01),
    "scores.cc_flops": ("rel", 0.09), "scores.victim_cc_flops": ("rel", 0.025), "scores.cc_ratio": ("rel", 0.1),
    "scores.queries": ("exact", 0.0),
    "scores.energy_j_per_sample.victim": ("rel", 0.5), "scores.energy_j_per_sample.stolen": ("rel", 0.5),
    # both families: the defense's cost
    "defense.cost.added_latency_mean_s": ("abs", 2e-5), "defense.cost.labels_changed": ("abs", 0.0),
    # measured on the honest traffic of the service (benchmark.service)
    "defense.cost.added_latency_p50_s": ("abs", 2e-5), "defense.cost.added_latency_p99_s": ("abs", 3e-4),
    "defense.cost.undefended_acc": ("abs", 0.01), "defense.cost.latency_savings_kept": ("abs", 0.02),
    "defense.cost.flops_savings_kept": ("abs", 0.01), "defense.cost.honest_queries": ("exact", 0.0),
    "defense.cost.honest_refused": ("abs", 0.0), "defense.cost.honest_share": ("abs", 1e-9),
    # exact-extraction family
    "scores.output_agreement": ("exact", 0.0), "scores.neurons_recovered": ("exact", 0.0),
    "scores.neurons_identified": ("exact", 0.0), "scores.label_agreement": ("exact", 0.0),
    "scores.complete": ("exact", 0.0), "scores.max_weight_error_log2": ("abs", 4.0),
    "scores.layer_errors_log2": ("abs", 4.0), "scores.max_output_diff": ("abs", 1e-9),
}
#: exact-extraction family: query counts (the total and each phase's) move with the kernel, and so
#: does the honest user's share of the stream
EXACT_FAMILY_QUERIES = ("rel", 0.2)
#: a number in ``scores`` without a rule of its own
DEFAULT_RULE = ("abs", 0.02)
#: exit_confusion: counts (a matrix), compared through clo and the exit histograms instead
SKIP_SCORES = {"attack_seconds", "energy_source", "energy_reason", "exit_confusion"}
#: the defense's cost on the service's honest traffic (entries made before it lack them)
HONEST_COST = ("defense.cost.undefended_acc", "defense.cost.added_latency_p50_s", "defense.cost.added_latency_p99_s",
               "defense.cost.latency_savings_kept", "defense.cost.flops_savings_kept", "defense.cost.honest_queries",
               "defense.cost.honest_refused", "defense.cost.honest_share")
COMPARED = ("victim.num_exits", "victim.exit_flops", "victim.thresholds", "defense.acts_on",
            "defense.cost.accuracy_lost", "defense.cost.defended_acc", "defense.cost.added_latency_mean_s",
            "defense.cost.labels_changed", "defense.cost.answered", *HONEST_COST)


@dataclass
class Outcome:
    path: Path
    status: str  # "ok" | "unverified" | "fail"
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    largest: tuple[float, str] = (0.0, "")
    reason: str = ""  # why the numeric environment was not reproduced ("" when it was)

    def lines(self) -> list[str]:
        name = show(self.path)
        diff, where = self.largest
        note = f"largest difference {diff:.4g} in {where}" if where else "identical"
        if self.status == "ok":
            return [f"ok    {name} ({self.seconds:.0f} s; numeric environment reproduced; {note})"]
        if self.status == "unverified":
            return [f"UNVERIFIED {name}: {self.reason}; checked within tolerance ({self.seconds:.0f} s; {note})"]
        why = f" [{self.reason}; tolerances applied]" if self.reason else ""
        return [f"FAIL  {name}: {p}{why}" for p in self.problems]


def _get(data: dict, path: str) -> tuple[bool, Any]:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def rule_for(key: str, exact_family: bool = False) -> tuple[str, float]:
    """The tolerance of one compared field where the numeric environment is not reproduced."""
    if key in TOLERANCES:
        if exact_family and key in ("scores.queries", "defense.cost.honest_share"):
            return EXACT_FAMILY_QUERIES
        return TOLERANCES[key]
    if key == "defense.cost.answered" or (exact_family and key.endswith("_queries")):
        return EXACT_FAMILY_QUERIES if exact_family else ("exact", 0.0)
    return DEFAULT_RULE


def _differs(a: float, b: float, rule: str, tol: float) -> tuple[bool, float]:
    """(beyond tolerance?, the difference as the rule measures it)."""
    absolute = abs(a - b)
    relative = absolute / max(abs(a), 1e-300) if a != b else 0.0
    if rule == "exact":
        return a != b, absolute
    if rule == "abs":
        return absolute > tol * (1 + 1e-9), absolute
    return relative > tol * (1 + 1e-9), relative


def _describe_rule(rule: str, tol: float) -> str:
    return {"exact": "must be equal", "abs": f"tolerance {tol:g} absolute",
            "rel": f"tolerance {tol:g} relative"}[rule]


def compared_keys(recorded: dict) -> list[str]:
    scores = recorded.get("scores") or {}
    keys = []
    for k, v in scores.items():
        if k in SKIP_SCORES or k.endswith("_seconds"):
            continue
        if isinstance(v, dict):
            keys += [f"scores.{k}.{sub}" for sub in v]
        else:
            keys.append(f"scores.{k}")
    return keys + list(COMPARED)


def compare(recorded: dict, rerun: dict, exact: bool = False) -> tuple[list[str], tuple[float, str]]:
    """(problems, (largest difference, where)) between a recorded entry and its re-run: every
    compared number bit-identical with ``exact``, else within the per-metric ``TOLERANCES``."""
    from leaderboard.schema import family

    exact_family = family(recorded) == "exact"
    problems: list[str] = []
    largest = (0.0, "")
    for key in compared_keys(recorded):
        has_a, a = _get(recorded, key)
        has_b, b = _get(rerun, key)
        if not has_a:
            continue
        if not has_b:
            problems.append(f"{key} recorded but the re-run has no such field")
            continue
        rule, tol = ("exact", 0.0) if exact else rule_for(key, exact_family)
        pairs: list[tuple[str, Any, Any]]
        if isinstance(a, list) or isinstance(b, list):
            if not (isinstance(a, list) and isinstance(b, list)) or len(a) != len(b):
                problems.append(f"{key} recorded {a!r}, re-run {b!r}")
                continue
            pairs = [(f"{key}[{i}]", x, y) for i, (x, y) in enumerate(zip(a, b))]
        else:
            pairs = [(key, a, b)]
        for where, x, y in pairs:
            if key.startswith("scores.energy_j_per_sample.") and y is None:
                continue  # no energy counter here: the entry is unverified (verify_one says why)
            if not (is_number(x) and is_number(y)):
                if x != y or type(x) is not type(y):
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


def plan(data: dict) -> tuple[dict, dict[str, str | None] | None, str]:
    """How to re-run an entry here: (configuration, pinned variables or None, why the numeric
    environment cannot be reproduced here; "" if it can be tried)."""
    import torch

    from benchmark.environment import pins, unavailable

    config = dict(data["config"])
    reasons = []
    if str(config["device"]).startswith("cuda"):
        if torch.cuda.is_available():
            reasons.append(f"made on {config['device']}; GPU kernels are not pinned, so CUDA entries are checked "
                           f"within tolerance")
        else:
            reasons.append(f"made on {config['device']}; no CUDA device here, re-run on the CPU")
            config["device"] = "cpu"
    numeric = data["environment"].get("numeric")
    if not isinstance(numeric, dict):
        return config, None, "; ".join([*reasons, "recorded without a numeric environment (a legacy entry)"])
    pinned = pins(numeric)
    missing = unavailable(numeric)
    if missing:
        reasons += missing
        for knob in ("OPENBLAS_CORETYPE", "ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS",
                     "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
            pinned.pop(knob, None)  # this CPU's own kernels
    return config, pinned, "; ".join(reasons)


def check_one(path: Path) -> Outcome | dict:
    """The entry's content if it may be re-run, else its failed Outcome (validation and placement;
    run in the calling thread: the plugin registries load on first use)."""
    entry = read_entry(path)
    if entry.data is None:
        return Outcome(path, "fail", [entry.error or "unreadable"])
    problems = check_entry(entry.data)
    if problems:
        return Outcome(path, "fail", [f"does not validate: {p}" for p in problems])
    want = entry_relpath(entry.data["config"], entry.data["environment"])
    if Path(path).resolve().parts[-3:] != want.parts:
        return Outcome(path, "fail", [f"does not validate: misplaced: its configuration and numeric environment "
                                      f"name it {want} (the hash covers config, environment.torch_threads and "
                                      f"environment.numeric)"])
    return entry.data


def vendor_reason(recorded: dict, here: dict) -> str:
    """Why a re-run under the same pinned kernels may differ: the entry was made on another CPU
    vendor, where torch's MKL / oneDNN code computes a training run differently (measured:
    docs/leaderboard.md); "" when the vendors are the same or either is unknown."""
    from benchmark.environment import cpu_vendor

    a, b = cpu_vendor(recorded), cpu_vendor(here)
    if a is None or b is None or a == b:
        return ""
    return f"made on a CPU by {a}, re-run on one by {b}: torch's pinned kernels are not bit-identical across vendors"


def verify_one(path: Path, exact: bool = False, checked: Outcome | dict | None = None) -> Outcome:
    """Check, re-run and compare one entry (``checked``: ``check_one(path)`` if already done)."""
    from benchmark.environment import differences
    from benchmark.errors import StealBenchError
    from leaderboard.child import run_child

    start = time.perf_counter()
    data = check_one(path) if checked is None else checked
    if isinstance(data, Outcome):
        return data
    entry = Entry(Path(path), data)
    config, pinned, reason = plan(entry.data)
    try:
        fresh = run_child(config, int(entry.data["environment"]["torch_threads"]), pinned)
    except StealBenchError as exc:
        return Outcome(path, "fail", [str(exc)], time.perf_counter() - start, reason=reason)
    if not reason:
        here = (fresh.get("environment") or {}).get("numeric") or {}
        diffs = differences(entry.data["environment"]["numeric"], here)
        if diffs:
            more = f" (and {len(diffs) - 2} more)" if len(diffs) > 2 else ""
            reason = "numeric environment not reproduced here: " + "; ".join(diffs[:2]) + more
    reproduced = not reason
    problems, largest = compare(entry.data, fresh, exact=exact or reproduced)
    if problems and reproduced and not exact:
        reason = vendor_reason(entry.data["environment"]["numeric"], (fresh.get("environment") or {}).get("numeric")
                               or {})
        if reason:
            problems, largest = compare(entry.data, fresh, exact=False)
    seconds = time.perf_counter() - start
    if problems:
        return Outcome(path, "fail", problems, seconds, largest, reason)
    for who in ("victim", "stolen"):
        had = _get(entry.data, f"scores.energy_j_per_sample.{who}")[1]
        if is_number(had) and not is_number(_get(fresh, f"scores.energy_j_per_sample.{who}")[1]):
            reason = "; ".join(filter(None, [reason, f"scores.energy_j_per_sample.{who} recorded, but no energy "
                                                     f"counter here to measure it again"]))
    return Outcome(path, "unverified" if reason else "ok", [], seconds, largest, reason)


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
    """Verify each file (``jobs`` re-runs at a time, each in a process of its own); ``report`` gets
    each outcome's lines as it finishes."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from leaderboard.child import stop_all

    outcomes: list[Outcome] = []
    pool = ThreadPoolExecutor(max_workers=max(1, jobs))
    try:
        checked = [check_one(path) for path in files]  # here: plugin registries are not thread-safe to load
        futures = {pool.submit(verify_one, path, exact, c): path for path, c in zip(files, checked)}
        for future in as_completed(futures):
            try:
                outcome = future.result()
            except Exception as exc:  # a bug is a failed entry, not a crashed verify
                outcome = Outcome(futures[future], "fail", [f"re-run crashed: {type(exc).__name__}: {exc}"])
            for line in outcome.lines():
                report(line)
            outcomes.append(outcome)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        stop_all()
        raise
    pool.shutdown()
    return sorted(outcomes, key=lambda o: o.path)
