"""Tables of results (pandas + tabulate): one run's scores, and a folder of runs (a sweep) as a CSV,
a summary over seeds and figures (``benchmark.plots``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from benchmark.errors import StealBenchError
from benchmark.io import atomic_write

MAIN_SCORES = ("acc", "victim_acc", "clo", "clo_trivial", "clo_lift", "clo_balanced", "clo_query", "clo_query_trivial",
               "clo_query_lift", "fidelity", "clo_and_fidelity", "cc_ratio", "exit_accuracy",
               "exit_accuracy_baseline", "neurons_recovered", "max_weight_error_log2", "output_agreement",
               "max_output_diff", "label_agreement", "queries", "attack_seconds")


def _fmt(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def scores_table(result: dict) -> str:
    """A two-column table of one result's headline scores."""
    scores = result["scores"]
    rows = [(k, _fmt(scores.get(k))) for k in MAIN_SCORES if k in scores]
    cost = result.get("defense", {}).get("cost", {})
    for key in ("accuracy_lost", "added_latency_mean_s"):
        if key in cost:
            rows.append((f"defense {key}", _fmt(cost[key])))
    energy = scores.get("energy_j_per_sample")
    if isinstance(energy, dict):
        for who, value in energy.items():
            rows.append((f"energy J/sample ({who})", _fmt(value) if value is not None
                         else f"null ({scores.get('energy_reason')})"))
    cfg = result["config"]
    title = f"{cfg['attack']} vs {cfg['victim']}/{cfg['dataset']} + {cfg['defense']} (seed {cfg['seed']})"
    return title + "\n" + pd.DataFrame(rows, columns=["score", "value"]).to_markdown(index=False)


# ---- many results: ``python -m benchmark report RESULTS_DIR`` ---------------------------------------

RUN_SCORES = ("acc", "victim_acc", "clo", "clo_trivial", "clo_lift", "clo_query", "clo_query_trivial", "clo_query_lift",
              "clo_balanced", "fidelity", "clo_and_fidelity", "cc_ratio", "exit_accuracy", "queries",
              "attack_seconds")
SUMMARY_SCORES = ("acc", "clo", "fidelity", "cc_ratio", "exit_accuracy", "accuracy_lost", "added_latency_ms")
CELL = ["victim", "dataset", "attack", "defense"]


def load_results(results_dir) -> tuple[list[tuple[str, dict]], list[tuple[str, dict]]]:
    """(name, result) for every result JSON under ``results_dir`` (recursively) and (name, record)
    for every failed sweep job (``*.error.json``); other JSON files are ignored. ``name`` is the
    file's path relative to the folder without ``.json``."""
    root = Path(results_dir)
    if not root.is_dir():
        raise StealBenchError(f"{root} is not a folder of results")
    results, failures = [], []
    for path in sorted(root.rglob("*.json")):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        name = str(path.relative_to(root))[: -len(".json")]
        if path.name.endswith(".error.json") and "error" in data:
            failures.append((name[: -len(".error")], data))
        elif "scores" in data and "config" in data and "schema_version" in data:
            results.append((name, data))
    return results, failures


def _label(name: str, options: dict, common: set) -> str:
    """The entry as a sweep spells it (``jitter:size=2.0``), without the options every run shares."""
    from benchmark.sweep import Entry

    return Entry(name, {k: v for k, v in options.items() if (k, json.dumps(v)) not in common}).label


def _common_options(results: list[dict], kind: str) -> set:
    """(key, value) pairs that every result's ``<kind>_options`` has: left out of the labels."""
    sets = [{(k, json.dumps(v)) for k, v in (r["config"].get(f"{kind}_options") or {}).items()} for r in results]
    return set.intersection(*sets) if sets else set()


def runs_frame(results: list[tuple[str, dict]]) -> pd.DataFrame:
    """One row per result: its cell (labels include options that differ between results), seed,
    scores and defense cost."""
    data = [r for _, r in results]
    common = {kind: _common_options(data, kind) for kind in ("attack", "defense", "victim")}
    rows = []
    for name, r in results:
        cfg, scores = r["config"], r["scores"]
        cost = (r.get("defense") or {}).get("cost") or {}
        row = {"job": name,
               "victim": _label(cfg["victim"], cfg.get("victim_options") or {}, common["victim"]),
               "dataset": cfg["dataset"],
               "attack": _label(cfg["attack"], cfg.get("attack_options") or {}, common["attack"]),
               "defense": _label(cfg["defense"], cfg.get("defense_options") or {}, common["defense"]),
               "seed": cfg["seed"]}
        for key in RUN_SCORES:
            value = scores.get(key)
            row[key] = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        row["accuracy_lost"] = cost.get("accuracy_lost")
        latency = cost.get("added_latency_mean_s")
        row["added_latency_ms"] = latency * 1e3 if isinstance(latency, (int, float)) else None
        rows.append(row)
    columns = ["job", *CELL, "seed", *RUN_SCORES, "accuracy_lost", "added_latency_ms"]
    return pd.DataFrame(rows, columns=columns)


def summary_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean of each score over the seeds of a cell (victim, dataset, attack, defense), with the number
    of seeds and the standard deviation of CLO and ACC across them."""
    if runs.empty:
        return pd.DataFrame(columns=[*CELL, "seeds", *SUMMARY_SCORES, "clo_std", "acc_std"])
    numeric = runs[[*CELL, *SUMMARY_SCORES]].copy()
    for key in SUMMARY_SCORES:
        numeric[key] = pd.to_numeric(numeric[key], errors="coerce")
    groups = numeric.groupby(CELL, sort=False, dropna=False)
    out = groups[list(SUMMARY_SCORES)].mean()
    out.insert(0, "seeds", runs.groupby(CELL, sort=False, dropna=False)["seed"].nunique())
    out["clo_std"] = groups["clo"].std(ddof=0)
    out["acc_std"] = groups["acc"].std(ddof=0)
    return out.reset_index().sort_values(CELL, kind="stable", ignore_index=True)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=,+-]+", "-", text).strip("-") or "x"


def write_report(results_dir, out_dir=None, plots: bool = True) -> tuple[str, list]:
    """Tables and figures for every result under ``results_dir``. Writes to ``out_dir`` (default
    ``RESULTS_DIR/report``): ``runs.csv`` (one row per run), ``summary.csv`` and ``summary.md`` (mean
    over seeds per cell) and, unless ``plots`` is off, PNGs: ``kde/<job>.png`` (attacks that estimate
    exits from timing), ``exits/<job>.png`` and ``tradeoff__<victim>__<dataset>.png``. Returns the
    text to print and the files written."""
    results, failures = load_results(results_dir)
    if not results and not failures:
        raise StealBenchError(f"no result files in {results_dir}")
    out = Path(out_dir) if out_dir else Path(results_dir) / "report"
    runs = runs_frame(results)
    summary = summary_frame(runs)
    files = []

    def write_text(name: str, text: str) -> None:
        atomic_write(out / name, lambda fh: fh.write(text.encode()))
        files.append(out / name)

    write_text("runs.csv", runs.to_csv(index=False))
    write_text("summary.csv", summary.to_csv(index=False))
    table = summary.to_markdown(index=False, floatfmt=".4g") if not summary.empty else "(no results)"
    data = [r for _, r in results]
    notes = []
    for kind in ("attack", "defense", "victim"):
        common = sorted(_common_options(data, kind))
        if common:
            notes.append(f"{kind} options in every run: " + ", ".join(f"{k}={v}" for k, v in common))
    lines = [f"{len(results)} results, {len(failures)} failed jobs in {results_dir}", "", table, *notes]
    for name, rec in failures:
        err = rec.get("error") or {}
        lines.append(f"FAILED {name}: {err.get('type', 'Error')}: {err.get('message', '')}")
    text = "\n".join(lines)
    write_text("summary.md", text + "\n")

    if plots and results:
        from benchmark import plots as figs

        labels = runs.set_index("job")
        for name, r in results:
            row = labels.loc[name]
            title = f"{row['attack']} vs {row['victim']}/{row['dataset']} + {row['defense']} (seed {row['seed']})"
            if figs.has_kde(r):
                files.append(figs.kde(r, out / "kde" / f"{_safe(name)}.png", title))
            if r["scores"].get("victim_exit_hist") is not None:
                files.append(figs.exit_histograms(r, out / "exits" / f"{_safe(name)}.png", title))
        for (victim, dataset), part in summary.groupby(["victim", "dataset"], sort=False):
            files.append(figs.tradeoff(part, out / f"tradeoff__{_safe(victim)}__{_safe(dataset)}.png",
                                       f"attack success vs defense cost: {victim} on {dataset} "
                                       f"(mean over seeds)"))
    return text, files
