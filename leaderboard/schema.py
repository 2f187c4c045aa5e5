"""What one leaderboard entry must hold: ``check_entry(data) -> [problem, ...]``.

An entry is a run's result (``benchmark.result.Result.to_json()``, schema version
``benchmark.result.SCHEMA_VERSION``) whose configuration is complete (every ``RunConfig`` field,
an explicit budget, every plugin option), whose plugins are registered, whose scores are finite
and in range, and whose environment states the software that made it. Each problem is one line,
without the file name (the caller adds it).

Two score families: multi-exit attacks (``acc``, ``clo``, ``cc_ratio``, ...) and exact extraction
of ReLU networks (``output_agreement``, ``neurons_recovered``, ...; the ``relu-mlp`` victim).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from benchmark.config import RunConfig
from benchmark.errors import StealBenchError
from benchmark.result import SCHEMA_VERSION

TOP = ("schema_version", "config", "scores", "victim", "defense", "attack", "environment")
KINDS = ("attack", "defense", "victim")
IN_TREE = {"attack": "attacks.", "defense": "defenses.", "victim": "victims."}

# multi-exit family
UNIT = ("acc", "victim_acc", "clo", "fidelity", "clo_and_fidelity")
UNIT_OR_NULL = ("exit_accuracy", "exit_accuracy_baseline")
POSITIVE = ("cc_flops", "victim_cc_flops", "cc_ratio")
HISTS = ("victim_exit_hist", "stolen_exit_hist")
# exact-extraction family
EXACT_UNIT = ("output_agreement", "neurons_recovered")
EXACT_UNIT_OPTIONAL = ("neurons_identified", "label_agreement")
EXACT_NUMBER_OR_NULL = ("max_weight_error_log2",)
# required environment
ENV_STRINGS = ("stealbench", "python", "torch")


def family(data: dict[str, Any]) -> str:
    """``"exact"`` for cryptanalytic extraction results, ``"multi-exit"`` otherwise."""
    scores = data.get("scores")
    return "exact" if isinstance(scores, dict) and "output_agreement" in scores else "multi-exit"


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _describe(value: Any) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, float) and math.isinf(value):
        return "infinite"
    return f"{value!r}"


class _Checker:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.problems: list[str] = []
        self.seen: set[str] = set()  # paths already reported (the non-finite sweep skips them)

    def add(self, path: str, message: str) -> None:
        self.seen.add(path)
        self.problems.append(message)

    def get(self, path: str) -> tuple[bool, Any]:
        node: Any = self.data
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                return False, None
            node = node[part]
        return True, node

    def number(self, path: str, lo: float | None = None, hi: float | None = None, *, nullable: bool = False,
               integer: bool = False, lo_open: bool = False, required: bool = True) -> Any:
        present, value = self.get(path)
        if not present:
            if required:
                self.add(path, f"missing field {path}")
            return None
        if value is None:
            if not nullable:
                self.add(path, f"{path} is null; it must be a number")
            return None
        if not is_number(value) or (integer and not isinstance(value, int)):
            self.add(path, f"{path} is {_describe(value)}; it must be {'an integer' if integer else 'a number'}")
            return None
        if not math.isfinite(value):
            self.add(path, f"{path} is {_describe(value)}; it must be a finite number")
            return None
        bad_lo = lo is not None and (value <= lo if lo_open else value < lo)
        bad_hi = hi is not None and value > hi
        if bad_lo or bad_hi:
            left = "(" if lo_open else "["
            rng = f"{left}{'-inf' if lo is None else f'{lo:g}'}, {'inf' if hi is None else f'{hi:g}'}]"
            self.add(path, f"{path} = {value!r} is out of range {rng}")
            return None
        return value

    def string(self, path: str, nullable: bool = False) -> Any:
        present, value = self.get(path)
        if not present:
            self.add(path, f"missing field {path}")
        elif value is None and nullable:
            return None
        elif not isinstance(value, str) or not value.strip():
            self.add(path, f"{path} is {_describe(value)}; it must be a non-empty string")
        else:
            return value
        return None

    def dict_at(self, path: str) -> dict[str, Any] | None:
        present, value = self.get(path)
        if not present:
            self.add(path, f"missing field {path}")
            return None
        if not isinstance(value, dict):
            self.add(path, f"{path} must be a JSON object, not {_describe(value)}")
            return None
        return value

    def sweep_non_finite(self, node: Any = None, path: str = "") -> None:
        """Any NaN or infinity anywhere in the entry (details included) is a problem."""
        node = self.data if node is None and not path else node
        if isinstance(node, dict):
            for key, value in node.items():
                self.sweep_non_finite(value, f"{path}.{key}" if path else str(key))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                self.sweep_non_finite(value, f"{path}[{i}]")
        elif isinstance(node, float) and not math.isfinite(node) and path not in self.seen:
            self.add(path, f"{path} is {_describe(node)}; it must be a finite number")


def _registries():
    from benchmark.data import QUERY_SETS, TASKS
    from benchmark.plugins import ATTACKS, DEFENSES, VICTIMS

    return {"attack": ATTACKS, "defense": DEFENSES, "victim": VICTIMS, "dataset": TASKS, "query_data": QUERY_SETS}


def lookup(kind: str, name: str) -> tuple[Any, str | None]:
    """(plugin, None) or (None, one-line problem) for a registered name."""
    reg = _registries()[kind]
    try:
        return reg[name], None
    except StealBenchError as exc:
        what = kind.replace("_", " ")
        msg = str(exc)
        hint = msg.split("; ", 1)[1] if "; " in msg and msg.startswith("unknown") else msg
        return None, f"unknown {what} {name!r} (not in the registry; {hint})"


def plugin_origin(obj: Any) -> str | None:
    """The distribution that provides an out-of-tree plugin, with its version (None for in-tree)."""
    module = getattr(obj, "__module__", "") or ""
    if any(module.startswith(prefix) for prefix in IN_TREE.values()):
        return None
    from importlib.metadata import packages_distributions, version

    top = module.split(".")[0]
    dists = packages_distributions().get(top) or []
    if not dists:
        return f"{top} (no installed distribution)"
    return f"{dists[0]}=={version(dists[0])}"


def canonical_options(kind: str, name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Every option of the plugin with the given ones applied, typed as the plugin types them."""
    from benchmark.options import build_plugin, plugin_options

    reg = _registries()[kind]
    return plugin_options(build_plugin(reg[name], options, kind))


def check_config(c: _Checker) -> dict[str, Any] | None:
    cfg = c.dict_at("config")
    if cfg is None:
        return None
    fields = [f.name for f in dataclasses.fields(RunConfig)]
    missing = [f for f in fields if f not in cfg]
    for name in missing:
        c.add(f"config.{name}", f"config is incomplete: it lacks {name!r} (an entry states its whole configuration)")
    if missing:
        return None
    try:
        RunConfig.from_dict(cfg, source="config")
    except StealBenchError as exc:
        c.add("config", f"bad configuration: {exc}")
        return None
    if cfg["budget"] is None:
        c.add("config.budget", "config.budget is null; an entry states its query budget explicitly")
    if cfg["timing"] != "simulated" or cfg["timing_profile"] != "flops":
        c.add("config.timing", f"timing {cfg['timing']!r} with profile {cfg['timing_profile']!r}: leaderboard "
                               f"entries use timing 'simulated' with timing_profile 'flops', so anyone can re-run "
                               f"them exactly (see the README, section Leaderboard)")
    if cfg["data_root"] is not None:
        c.add("config.data_root", "config.data_root is a path on the submitter's machine; it must be null")
    ok = True
    for kind in ("attack", "defense", "victim", "dataset", "query_data"):
        _, problem = lookup(kind, cfg[kind])
        if problem:
            c.add(f"config.{kind}", problem)
            ok = False
    return cfg if ok else None


def check_options(c: _Checker, cfg: dict[str, Any]) -> None:
    """Config options complete and agreeing with the resolved options the run recorded."""
    for kind in KINDS:
        block = c.data.get(kind)
        if not isinstance(block, dict):
            continue
        if block.get("name") != cfg[kind]:
            c.add(f"{kind}.name", f"{kind}.name is {block.get('name')!r} but config.{kind} is {cfg[kind]!r}")
        given = cfg[f"{kind}_options"]
        recorded = block.get("options")
        if not isinstance(recorded, dict):
            continue
        missing = [k for k in recorded if k not in given]
        if missing:
            names = ", ".join(map(repr, missing))
            c.add(f"config.{kind}_options", f"config is incomplete: {kind}_options lacks {names} "
                                            f"(recorded in {kind}.options; an entry states every option)")
            continue
        try:
            canon = canonical_options(kind, cfg[kind], given)
        except StealBenchError as exc:
            c.add(f"config.{kind}_options", f"bad {kind} options: {exc}")
            continue
        diff = [k for k in recorded if k in canon and canon[k] != recorded[k]]
        if diff:
            k = diff[0]
            c.add(f"config.{kind}_options", f"config.{kind}_options.{k} = {canon[k]!r} but the run recorded "
                                            f"{kind}.options.{k} = {recorded[k]!r}")


def check_environment(c: _Checker, cfg: dict[str, Any] | None) -> None:
    env = c.dict_at("environment")
    if env is None:
        return
    for key in ENV_STRINGS:
        c.string(f"environment.{key}")
    present, commit = c.get("environment.git_commit")
    if not present:
        c.add("environment.git_commit", "missing field environment.git_commit (the commit that made the entry)")
    elif not (isinstance(commit, str) and re.fullmatch(r"[0-9a-f]{40}", commit)):
        c.add("environment.git_commit", f"environment.git_commit is {_describe(commit)}; it must be the 40-hex "
                                        f"commit of the StealBench that made the entry")
    threads = c.number("environment.torch_threads", 1, integer=True)
    check_numeric(c, threads)
    if cfg is None:
        return
    present, device = c.get("environment.device")
    if present and device != cfg["device"]:
        c.add("environment.device", f"environment.device is {_describe(device)} but config.device is "
                                    f"{cfg['device']!r}")
    plugins = env.get("plugins") if isinstance(env.get("plugins"), dict) else {}
    for kind in KINDS:
        obj, _ = lookup(kind, cfg[kind])
        if obj is None or plugin_origin(obj) is None:
            continue
        stated = plugins.get(kind)
        if not (isinstance(stated, str) and "==" in stated):
            c.add(f"environment.plugins.{kind}", f"{kind} {cfg[kind]!r} comes from outside StealBench but "
                                                 f"environment.plugins.{kind} does not state its distribution "
                                                 f"and version (e.g. 'my-defense==0.1.0')")


def check_numeric(c: _Checker, threads: Any) -> None:
    """``environment.numeric`` (``benchmark.environment.numeric_environment``): optional (an entry
    without it is a legacy entry, never counted as verified), well-formed where present."""
    present, numeric = c.get("environment.numeric")
    if not present:
        return
    if c.dict_at("environment.numeric") is None:
        return
    for key in ("cpu", "torch", "env"):
        c.dict_at(f"environment.numeric.{key}")
    for key in ("python", "numpy", "scipy"):
        c.string(f"environment.numeric.{key}", nullable=True)
    blas = numeric.get("blas")
    if not (isinstance(blas, list) and all(isinstance(b, dict) and isinstance(b.get("owner"), str) for b in blas)):
        c.add("environment.numeric.blas", "environment.numeric.blas must be a list of objects, each naming its "
                                          "owner (the BLAS libraries loaded and the kernel each used)")
    env = numeric.get("env")
    if isinstance(env, dict) and not all(isinstance(v, str) or v is None for v in env.values()):
        c.add("environment.numeric.env", "environment.numeric.env must map variable names to strings or null")
    torch_info = numeric.get("torch")
    if isinstance(torch_info, dict) and isinstance(threads, int) and torch_info.get("num_threads") != threads:
        c.add("environment.numeric.torch.num_threads", f"environment.numeric.torch.num_threads is "
                                                       f"{_describe(torch_info.get('num_threads'))} but "
                                                       f"environment.torch_threads is {threads}")


def check_defense(c: _Checker, cfg: dict[str, Any] | None, kind: str = "multi-exit") -> None:
    """What the defense is (``acts_on``, as its plugin declares) and what it cost (``kind``: the
    entry's family; the exact family's honest user has no task labels and its victim no early
    exits, so it has neither accuracy nor savings-kept fields)."""
    if cfg is not None:
        obj, _ = lookup("defense", cfg["defense"])
        if obj is not None:
            want = getattr(obj, "acts_on", "none")
            present, acts_on = c.get("defense.acts_on")
            if not present:
                c.add("defense.acts_on", "missing field defense.acts_on")
            elif acts_on != want:
                c.add("defense.acts_on", f"defense.acts_on is {_describe(acts_on)} but defense {cfg['defense']!r} "
                                         f"acts on {want!r}")
    if c.dict_at("defense.cost") is None:
        return
    c.number("defense.cost.added_latency_mean_s")
    c.number("defense.cost.labels_changed", 0, 1, required=False)
    budget = cfg.get("budget") if cfg else None
    c.number("defense.cost.answered", 0, budget if isinstance(budget, int) else None, integer=True, required=False)
    present, _ = c.get("defense.cost.honest_queries")
    if present:  # measured on the service's honest traffic: every field of it, or the entry is refused
        honest = c.number("defense.cost.honest_queries", 1, integer=True)
        c.number("defense.cost.honest_refused", 0, honest if isinstance(honest, int) else None, integer=True)
        c.number("defense.cost.honest_share", 0, 1, lo_open=True)
        early_exit = ("latency_savings_kept", "flops_savings_kept") if kind == "multi-exit" else ()
        if kind == "multi-exit":
            c.number("defense.cost.undefended_acc", 0, 1)
        for key in ("added_latency_p50_s", "added_latency_p99_s", *early_exit):
            c.number(f"defense.cost.{key}", nullable=True)


def check_multi_exit_scores(c: _Checker) -> None:
    for key in UNIT:
        c.number(f"scores.{key}", 0, 1)
    for key in UNIT_OR_NULL:
        c.number(f"scores.{key}", 0, 1, nullable=True)
    for key in POSITIVE:
        c.number(f"scores.{key}", 0, lo_open=True)
    for key in HISTS:
        present, hist = c.get(f"scores.{key}")
        if not present:
            c.add(f"scores.{key}", f"missing field scores.{key}")
        elif not (isinstance(hist, list) and hist and all(is_number(v) and math.isfinite(v) and v >= 0 for v in hist)):
            c.add(f"scores.{key}", f"scores.{key} must be a list of finite non-negative fractions")
        elif abs(sum(hist) - 1) > 1e-6:
            c.add(f"scores.{key}", f"scores.{key} sums to {sum(hist):.6g}, not 1")
    energy = c.dict_at("scores.energy_j_per_sample")
    source = c.string("scores.energy_source")
    if energy is not None:
        for who in ("victim", "stolen"):
            value = c.number(f"scores.energy_j_per_sample.{who}", 0, lo_open=True, nullable=True)
            if value is not None and source not in (None, "rapl", "nvml"):
                c.add(f"scores.energy_j_per_sample.{who}", f"scores.energy_j_per_sample.{who} is {value!r} but "
                                                           f"scores.energy_source is {source!r}: a measured energy "
                                                           f"comes from 'rapl' or 'nvml'")
    present, cost = c.get("defense.cost")
    if present and isinstance(cost, dict):
        c.number("defense.cost.accuracy_lost", -1, 1)
        c.number("defense.cost.defended_acc", 0, 1)


def check_exact_scores(c: _Checker) -> None:
    for key in EXACT_UNIT:
        c.number(f"scores.{key}", 0, 1)
    for key in EXACT_UNIT_OPTIONAL:
        c.number(f"scores.{key}", 0, 1, required=False)
    for key in EXACT_NUMBER_OR_NULL:
        c.number(f"scores.{key}", nullable=True, required=False)


def check_entry(data: dict[str, Any]) -> list[str]:
    """Every problem with one entry, one line each (the caller prefixes the file name)."""
    c = _Checker(data)
    for key in TOP:
        if key not in data:
            c.add(key, f"missing field {key}")
    if "schema_version" in data:
        version = data["schema_version"]
        if version != SCHEMA_VERSION or isinstance(version, bool):
            c.add("schema_version", f"schema_version is {_describe(version)}; this StealBench reads version "
                                    f"{SCHEMA_VERSION} (re-submit the entry)")
            return c.problems  # a different schema: field checks would only add noise
    cfg = check_config(c) if "config" in data else None
    if cfg is not None:
        check_options(c, cfg)
    for kind in KINDS:
        if kind in data:
            c.dict_at(kind)
    if isinstance(data.get("defense"), dict):
        check_defense(c, cfg, family(data))
    if "scores" in data and c.dict_at("scores") is not None:
        budget = cfg.get("budget") if cfg else None
        hi = budget if isinstance(budget, int) else None
        c.number("scores.queries", 1, hi, integer=True)
        c.number("scores.attack_seconds", 0)
        if family(data) == "exact":
            check_exact_scores(c)
        else:
            check_multi_exit_scores(c)
    if "environment" in data:
        check_environment(c, cfg)
    c.sweep_non_finite()
    return c.problems
