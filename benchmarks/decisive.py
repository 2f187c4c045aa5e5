"""The decisive experiment: does the timing channel give ``ours`` anything over a baseline that
ignores it, and where? Three paired factors over seeds, plus a KnockOff reference row.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/decisive.py                     # synthetic, seeds 0-4
    .venv/bin/python benchmarks/decisive.py --seeds 0-2 --budget 5000 --markdown decisive.md
    .venv/bin/python benchmarks/decisive.py --dataset fashionmnist --victim-opt train_subset=10000
    .venv/bin/python benchmarks/decisive.py --seeds 0-2 --losses kl --knockoff-seeds none   # a part first
    .venv/bin/python benchmarks/decisive.py --no-run --wide                                 # tables so far

Factors (every level of every factor on the same victim and the same queries per seed):

(a) training loss of ``ours``: ``kl`` (``strategy_weight=0``) or ``kl+strategy`` (the default
    weight, 3);
(b) output strategy of the stolen substitute: ``stolen`` (ours' per-exit thresholds from its Eq. 4
    search on the inferred exits, what the run scores) or ``global`` (one fixed confidence threshold,
    0.9, for every internal exit, the rule the baselines use with ``strategy=global``). No second
    attack run: the same substitute is re-scored with the global thresholds by the runner's own
    scoring (``benchmark.metrics.compare``) on the same scoring split and held-out query tail;
    before that, re-scoring with the substitute's own thresholds must reproduce the run's scores
    exactly (checked, else the script stops);
(c) the victim owner's exit rule (``--victim-opt exit_rule``): ``owner`` (the default, close to one
    global threshold) or ``per-class`` (exit k fires only for the classes allowed to leave there,
    the rule one global threshold imitates worst: ``benchmarks/exit_rule_mix.py``, docs/victims.md).

Reference: ``knockoff`` with ``sampling=random`` and its default ``strategy=global``, same victims and
seeds. Every run goes through ``benchmark.runner.run(RunConfig(...))`` like ``python -m benchmark
run``; its Result JSON (with the re-scored global-threshold scores under ``"decisive"``) is written
to ``--results`` (default ``benchmarks/results/decisive-<dataset>/<rule>/s<seed>/<run>.json``; with
``--timing-profile calibrated``, ``decisive-<dataset>-calibrated``) and
a later call reuses every file whose configuration matches (``--fresh`` runs everything again).

Output: a Markdown table of every cell (mean ± half-width of the 95% t interval over seeds), a table
of paired differences per factor (``benchmark.stats.paired_comparison``: mean difference, 95% t
interval, paired t test p, Wilcoxon p, minimum detectable effect) and one summary line with the
wall time; ``--markdown FILE`` writes the same text to FILE.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: victim exit rules (factor c)
RULES: tuple[str, ...] = ("owner", "per-class")
#: training loss of ours (factor a): label -> attack options
LOSSES: dict[str, dict] = {"kl": {"strategy_weight": 0.0}, "kl+strategy": {}}
#: output strategies of the stolen substitute (factor b)
STRATEGIES: tuple[str, ...] = ("stolen", "global")
#: the baselines' fixed global threshold (``attacks._baseline.BaselineAttack.threshold``)
GLOBAL_THRESHOLD = 0.9
#: the reference row
KNOCKOFF_OPTIONS: dict = {"sampling": "random"}

#: scores of every cell: (result key, column name, kind) with kind "pct" (shown x100) or "x"
METRICS: tuple[tuple[str, str, str], ...] = (
    ("clo_query", "paper clo", "pct"),
    ("clo_query_trivial", "paper trivial", "pct"),
    ("clo_query_lift", "paper lift", "pct"),
    ("clo", "test clo", "pct"),
    ("clo_trivial", "test trivial", "pct"),
    ("clo_lift", "test lift", "pct"),
    ("clo_balanced", "balanced clo", "pct"),
    ("acc", "acc", "pct"),
    ("cc_ratio", "cc_ratio", "x"),
    ("exit_accuracy", "exit acc", "pct"),
    ("exit_accuracy_baseline", "exit acc, commonest", "pct"),
)
DIFF_METRICS = ("clo_query", "clo", "clo_lift", "clo_balanced", "acc", "cc_ratio")
#: scores the re-scoring with the stolen thresholds must reproduce exactly
CHECKED = ("acc", "clo", "clo_query", "clo_balanced", "cc_ratio", "fidelity")


class DecisiveError(Exception):
    """A one-line problem the script reports and exits on."""


# ---- re-scoring a substitute under another output strategy --------------------------------

def global_thresholds(num_exits: int, q: float = GLOBAL_THRESHOLD) -> list[float]:
    """One threshold ``q`` for every internal exit; the last exit always fires (as
    ``attacks._baseline`` sets a baseline's substitute)."""
    return [q] * (num_exits - 1) + [0.0]


def rescore(victim, stolen, thresholds, test, query_heldout, device: str = "cpu") -> dict:
    """The runner's scores (``benchmark.metrics.compare``) of a copy of ``stolen`` with ``thresholds``."""
    from benchmark.metrics import compare

    model = copy.deepcopy(stolen)
    model.set_thresholds(thresholds)
    model.eval()
    return compare(victim, model, test, device, query_heldout)


def scoring_splits(cfg, task):
    """(scoring part of the test split, held-out query tail): what ``benchmark.runner.deploy``
    gives ``score`` for this configuration."""
    from benchmark.closeness import split_query_heldout
    from benchmark.data import QUERY_SETS, DataRequest
    from benchmark.paths import data_dir
    from benchmark.runner import INPUT_SHAPE
    from benchmark.service.server import carve_honest

    req = DataRequest(Path(cfg.data_root) if cfg.data_root else data_dir(), cfg.download, cfg.data_seed, INPUT_SHAPE)
    test, _ = carve_honest(task.test, cfg.data_seed)
    _, heldout = split_query_heldout(QUERY_SETS[cfg.query_data](req))
    return test, heldout


def global_rescore(result: dict, seen: dict, cfg) -> dict:
    """Re-score the run's substitute with the global threshold; first check that its own
    thresholds reproduce the run's scores. Returns the ``"decisive"`` block of the result file."""
    victim, stolen = seen["victim"], seen["stolen"].model
    test, heldout = scoring_splits(cfg, seen["task"])
    own = rescore(victim, stolen, stolen.thresholds.clone(), test, heldout, cfg.device)
    for key in CHECKED:
        a, b = own[key], result["scores"][key]
        if a != b and not (a is not None and b is not None and abs(a - b) < 1e-12):
            raise DecisiveError(f"re-scoring with the substitute's own thresholds gives {key}={a}, the run {b}: "
                                f"the re-scoring does not reproduce the runner's scoring")
    thresholds = global_thresholds(stolen.num_exits)
    scores = rescore(victim, stolen, thresholds, test, heldout, cfg.device)
    return {"global": {"threshold": GLOBAL_THRESHOLD, "thresholds": thresholds, "scores": scores},
            "stolen_thresholds": [float(t) for t in stolen.thresholds]}


# ---- runs ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    rule: str
    seed: int
    label: str  # "ours kl", "ours kl+strategy", "knockoff"
    attack: str
    attack_options: dict = field(default_factory=dict)

    def path(self, folder: Path) -> Path:
        return folder / self.rule / f"s{self.seed}" / (self.label.replace(" ", "-") + ".json")


def plan_jobs(seeds: Sequence[int], knockoff_seeds: Sequence[int],
              losses: Sequence[str] = ("kl+strategy", "kl")) -> list[Job]:
    """Ours, one loss after the other (every seed, both rules; by default the default loss first:
    factors b and c), then KnockOff. Stopped early, the later rows have fewer seeds, and a later
    call resumes."""
    jobs = [Job(rule, seed, f"ours {loss}", "ours", dict(LOSSES[loss]))
            for loss in losses for seed in seeds for rule in RULES]
    jobs += [Job(rule, seed, "knockoff", "knockoff", dict(KNOCKOFF_OPTIONS))
             for seed in knockoff_seeds for rule in RULES]
    return jobs


def make_config(job: Job, args: argparse.Namespace, victim_extra: dict):
    from benchmark.config import RunConfig

    return RunConfig(attack=job.attack, victim=args.victim, dataset=args.dataset, query_data=args.query_data,
                     budget=args.budget, seed=job.seed, device=args.device, timing_profile=args.timing_profile,
                     attack_options=job.attack_options,
                     victim_options={"exit_rule": job.rule, **victim_extra})


def run_job(job: Job, cfg, progress: bool, runner: Callable | None = None) -> dict:
    """One run (with the global re-scoring for ours): the result file's content."""
    from benchmark.runner import run

    seen: dict = {}
    t0 = time.perf_counter()
    result = (runner or run)(cfg, progress=progress, inspect=seen.update).to_json()
    block = global_rescore(result, seen, cfg) if job.attack == "ours" else {}
    result["decisive"] = {**block, "run_seconds": time.perf_counter() - t0}
    return result


def load_or_run(jobs: Sequence[Job], args: argparse.Namespace, victim_extra: dict,
                run_missing: bool = True) -> tuple[dict, dict]:
    """{(rule, seed, label): result dict}; counts of runs made, reused and (``run_missing`` false)
    missing."""
    from tqdm import tqdm

    from benchmark.errors import StealBenchError
    from benchmark.io import write_json

    out, counts = {}, {"ran": 0, "reused": 0, "missing": 0}
    bar = tqdm(jobs, desc="decisive", unit="run", disable=args.quiet, file=sys.stderr)
    for job in bar:
        cfg = make_config(job, args, victim_extra)
        path = job.path(args.results)
        bar.set_postfix_str(f"{job.rule} s{job.seed} {job.label}")
        if not args.fresh and path.is_file():
            cached = json.loads(path.read_text())
            if cached.get("config") == cfg.to_json() and "decisive" in cached:
                out[(job.rule, job.seed, job.label)] = cached
                counts["reused"] += 1
                continue
        if not run_missing:
            counts["missing"] += 1
            continue
        try:
            result = run_job(job, cfg, progress=False)
        except StealBenchError as exc:
            raise DecisiveError(f"{job.rule} s{job.seed} {job.label}: {exc}") from exc
        write_json(path, result)
        out[(job.rule, job.seed, job.label)] = result
        counts["ran"] += 1
        tqdm.write(f"[{job.rule} s{job.seed} {job.label}] {result['decisive']['run_seconds']:.0f} s -> {path}",
                   file=sys.stderr)
    return out, counts


# ---- tables ----------------------------------------------------------------------------------

def cell_scores(results: dict) -> dict[tuple[str, str, str], dict[int, dict]]:
    """{(rule, row, strategy): {seed: scores}} with rows "ours kl", "ours kl+strategy" (strategies
    "stolen" and "global") and "knockoff" (strategy "global": its own)."""
    cells: dict = {}
    for (rule, seed, label), res in results.items():
        if label == "knockoff":
            cells.setdefault((rule, label, "global"), {})[seed] = res["scores"]
            continue
        cells.setdefault((rule, label, "stolen"), {})[seed] = res["scores"]
        glob = {**res["decisive"]["global"]["scores"]}
        for key in ("exit_accuracy", "exit_accuracy_baseline"):  # the attack's, not the strategy's
            glob[key] = res["scores"].get(key)
        cells.setdefault((rule, label, "global"), {})[seed] = glob
    return cells


def cell_order(key: tuple[str, str, str]) -> tuple:
    rule, row, strategy = key
    rows = [f"ours {loss}" for loss in LOSSES] + ["knockoff"]
    return RULES.index(rule), rows.index(row), STRATEGIES.index(strategy)


def fmt(mean: float, half: float | None, kind: str) -> str:
    scale, unit = (100.0, "") if kind == "pct" else (1.0, "x")
    if half is None:
        return f"{scale * mean:.{1 if kind == 'pct' else 3}f}{unit}"
    digits = 1 if kind == "pct" else 3
    return f"{scale * mean:.{digits}f} ± {scale * half:.{digits}f}{unit}"


def cells_table(cells: dict) -> str:
    """Markdown: one row per cell, each score as mean ± half-width of its 95% t interval (clo, acc
    and exit accuracy in percent)."""
    import pandas as pd

    from benchmark.stats import mean_interval

    rows = []
    for key in sorted(cells, key=cell_order):
        rule, label, strategy = key
        per_seed = cells[key]
        row = {"victim rule": rule, "attack": label, "strategy": strategy, "seeds": len(per_seed)}
        for metric, name, kind in METRICS:
            values = [s[metric] for s in per_seed.values() if isinstance(s.get(metric), (int, float))]
            if not values:
                row[name] = "-"
                continue
            mean, low, high = mean_interval(values)
            row[name] = fmt(mean, (high - low) / 2 if len(values) > 1 else None, kind)
        rows.append(row)
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)


def comparisons(cells: dict) -> list[tuple[str, str, tuple, tuple]]:
    """(factor, what, cell A, cell B): every paired difference A - B the experiment asks for."""
    out = []
    for rule in RULES:
        for strategy in STRATEGIES:
            out.append(("(a) loss", f"kl+strategy - kl ({rule}, {strategy})",
                        (rule, "ours kl+strategy", strategy), (rule, "ours kl", strategy)))
    for rule in RULES:
        for loss in LOSSES:
            out.append(("(b) strategy", f"stolen - global ({rule}, {loss})",
                        (rule, f"ours {loss}", "stolen"), (rule, f"ours {loss}", "global")))
    for loss in LOSSES:
        for strategy in STRATEGIES:
            out.append(("(c) victim rule", f"per-class - owner ({loss}, {strategy})",
                        ("per-class", f"ours {loss}", strategy), ("owner", f"ours {loss}", strategy)))
    for rule in RULES:  # ours as it is, and ours without either use of the inferred exits
        for loss, strategy in (("kl+strategy", "stolen"), ("kl", "global")):
            out.append(("vs KnockOff", f"ours {loss}, {strategy} - knockoff ({rule})",
                        (rule, f"ours {loss}", strategy), (rule, "knockoff", "global")))
    return [c for c in out if c[2] in cells and c[3] in cells]


def paired_rows(cells: dict, metrics: Sequence[str] = DIFF_METRICS) -> list[dict]:
    """One row per (comparison, metric) with at least 2 seeds on both sides:
    ``benchmark.stats.paired_comparison`` of A - B over the shared seeds."""
    from benchmark.stats import paired_comparison

    rows = []
    for factor, what, a_key, b_key in comparisons(cells):
        a, b = cells[a_key], cells[b_key]
        for metric in metrics:
            seeds = sorted(s for s in set(a) & set(b)
                           if isinstance(a[s].get(metric), (int, float)) and isinstance(b[s].get(metric), (int, float)))
            if len(seeds) < 2:
                continue
            r = paired_comparison([a[s][metric] for s in seeds], [b[s][metric] for s in seeds])
            rows.append({"factor": factor, "comparison A - B (held fixed)": what, "metric": metric,
                         "seeds": len(seeds), "mean diff": r["mean_diff"], "ci_low": r["ci_diff"][0],
                         "ci_high": r["ci_diff"][1], "p": r["p_ttest"], "p_wilcoxon": r["p_wilcoxon"],
                         "mde": r["mde"], "verdict": r["verdict"]})
    return rows


def diff_table(rows: list[dict], wide: bool = False) -> str:
    """Markdown of :func:`paired_rows` (clo and acc differences in percentage points); ``wide``:
    one row per comparison, one column per score ("mean [95% CI] p")."""
    import pandas as pd

    if wide and rows:
        table: dict = {}
        for r in rows:
            scale, digits = (1.0, 3) if r["metric"] == "cc_ratio" else (100.0, 1)
            key = (r["factor"], r["comparison A - B (held fixed)"])
            row = table.setdefault(key, {"factor": key[0], "comparison A - B (held fixed)": key[1],
                                         "seeds": r["seeds"]})
            row[r["metric"]] = (f"{scale * r['mean diff']:+.{digits}f} [{scale * r['ci_low']:+.{digits}f}, "
                                f"{scale * r['ci_high']:+.{digits}f}] p {r['p']:.2g}")
        return pd.DataFrame(list(table.values())).fillna("-").to_markdown(index=False, disable_numparse=True)
    out = []
    for r in rows:
        scale, digits = (1.0, 3) if r["metric"] == "cc_ratio" else (100.0, 1)
        out.append({"factor": r["factor"], "comparison A - B (held fixed)": r["comparison A - B (held fixed)"],
                    "metric": r["metric"], "seeds": r["seeds"],
                    "mean diff": f"{scale * r['mean diff']:+.{digits}f}",
                    "95% CI": f"[{scale * r['ci_low']:+.{digits}f}, {scale * r['ci_high']:+.{digits}f}]",
                    "p": f"{r['p']:.3g}", "test": "paired t (scipy ttest_rel)",
                    "Wilcoxon p": f"{r['p_wilcoxon']:.3g}", "MDE": f"{scale * r['mde']:.{digits}f}",
                    "verdict": r["verdict"]})
    if not out:
        return "(no comparison has 2 paired seeds yet)"
    return pd.DataFrame(out).to_markdown(index=False, disable_numparse=True)


def host() -> str:
    return f"{platform.machine()}, {os.cpu_count()} logical CPUs, {platform.system()}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="synthetic", help="synthetic (default) or fashionmnist")
    p.add_argument("--query-data", dest="query_data",
                   help="the attacker's query set (default: synthetic-ood for synthetic, mnist for fashionmnist)")
    p.add_argument("--victim", default="sdn-tiny")
    p.add_argument("--victim-opt", dest="victim_opt", action="append", default=[], metavar="KEY=VALUE",
                   help="extra victim option for every victim, e.g. train_subset=10000 (repeatable; exit_rule is "
                        "the factor and cannot be given)")
    p.add_argument("--seeds", default="0-4", help="paired seeds, e.g. 0-4 or 0,1,2 (default 0-4)")
    p.add_argument("--knockoff-seeds", dest="knockoff_seeds",
                   help="seeds of the KnockOff reference (default: --seeds; 'none' for no reference)")
    p.add_argument("--losses", default="kl+strategy,kl",
                   help="losses of ours to run, in this order (default kl+strategy,kl)")
    p.add_argument("--budget", type=int, default=10_000, help="query budget of every run (default 10000)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--timing-profile", dest="timing_profile", default="flops",
                   help="latency profile the simulated timing draws from (default flops: the same on every host; "
                        "calibrated measures this host, which load can leave without separated exits)")
    p.add_argument("--results", type=Path, help="folder of the result files "
                   "(default benchmarks/results/decisive-<dataset>)")
    p.add_argument("--fresh", action="store_true", help="run everything again instead of reusing result files")
    p.add_argument("--no-run", dest="no_run", action="store_true",
                   help="run nothing: tables from the result files already there (missing runs are left out)")
    p.add_argument("--markdown", type=Path, help="also write the tables to this file")
    p.add_argument("--diff-metrics", dest="diff_metrics", default=",".join(DIFF_METRICS),
                   help=f"scores of the paired-difference table (default {','.join(DIFF_METRICS)})")
    p.add_argument("--wide", action="store_true",
                   help="paired differences as one row per comparison, one column per score (paired t p)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)

    from benchmark.errors import StealBenchError
    from benchmark.options import parse_kv

    t0 = time.perf_counter()
    try:
        if args.query_data is None:
            args.query_data = {"synthetic": "synthetic-ood", "fashionmnist": "mnist"}.get(args.dataset)
            if args.query_data is None:
                raise DecisiveError(f"--dataset {args.dataset}: give --query-data")
        if args.results is None:
            profile = "" if args.timing_profile == "flops" else f"-{args.timing_profile}"
            args.results = ROOT / "benchmarks" / "results" / f"decisive-{args.dataset}{profile}"
        victim_extra = parse_kv(args.victim_opt, "victim")
        if "exit_rule" in victim_extra:
            raise DecisiveError("--victim-opt exit_rule is factor (c); the script runs both rules")
        seeds = parse_seeds(args.seeds)
        knockoff_seeds = [] if args.knockoff_seeds == "none" else (
            parse_seeds(args.knockoff_seeds) if args.knockoff_seeds else seeds)
        metrics = [m for m in args.diff_metrics.split(",") if m]
        losses = [x for x in args.losses.split(",") if x]
        unknown = set(losses) - set(LOSSES)
        if unknown or not losses:
            raise DecisiveError(f"--losses: give some of {', '.join(LOSSES)}, got {args.losses!r}")
        jobs = plan_jobs(seeds, knockoff_seeds, losses)
        results, counts = load_or_run(jobs, args, victim_extra, run_missing=not args.no_run)
    except (DecisiveError, StealBenchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cells = cell_scores(results)
    run_seconds = sum(r["decisive"]["run_seconds"] for r in results.values())
    extra = "".join(f", victim option {k}={v}" for k, v in victim_extra.items())
    text = "\n".join([
        f"{args.victim} / {args.dataset}, queries from {args.query_data}, budget {args.budget}, seeds "
        f"{','.join(map(str, seeds))}, KnockOff seeds {','.join(map(str, knockoff_seeds)) or 'none'}, defense none, "
        f"device {args.device}, timing profile {args.timing_profile}{extra}; global threshold {GLOBAL_THRESHOLD}",
        "", "Cells (mean ± half-width of the 95% t interval over seeds; clo, acc, exit acc in %):", "",
        cells_table(cells),
        "", "Paired differences A - B over the shared seeds (clo and acc in percentage points; "
            "95% t interval; MDE: the smallest true difference the paired t test finds with 80% power):", "",
        diff_table(paired_rows(cells, metrics), wide=args.wide),
    ])
    missing = f", {counts['missing']} missing" if counts["missing"] else ""
    summary = (f"decisive: {len(results)} runs ({counts['ran']} run now, {counts['reused']} reused{missing}), "
               f"wall {time.perf_counter() - t0:.0f} s, sum of the runs' own times {run_seconds:.0f} s, "
               f"host {host()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(text)
    print()
    print(summary)
    if args.markdown:
        args.markdown.write_text(text + "\n\n" + summary + "\n")
    return 0


def parse_seeds(text: str) -> list[int]:
    """``--seeds`` as the sweep parses its seeds (``0,1,5-7``; distinct, non-negative)."""
    from benchmark.errors import StealBenchError
    from benchmark.sweep import parse_seeds as sweep_seeds

    try:
        return list(sweep_seeds(text))
    except StealBenchError as exc:
        raise DecisiveError(f"--seeds must be comma-separated integers or ranges like 0-4, each once: {exc}") from None


if __name__ == "__main__":
    raise SystemExit(main())
