"""Run every attack of the multi-exit paper's Table 1 with one seed and one budget and print a
markdown table of acc, clo and cc_ratio beside the paper's VGG/CIFAR10 rows.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/compare_attacks.py            # embedded default
    .venv/bin/python benchmarks/compare_attacks.py --budget 10000 --seed 0 --defense none
    .venv/bin/python benchmarks/compare_attacks.py --baseline-opt tolerance=0   # a stricter SDN rule
    .venv/bin/python benchmarks/compare_attacks.py --seeds 0,1,2 --reuse        # mean ± sd over seeds
    .venv/bin/python benchmarks/compare_attacks.py --preset paper:cpu-fashionmnist --seeds 0-4 \
        --paper-dataset FMNIST --markdown fm.md      # real Fashion-MNIST, 95% intervals

With several seeds a second table gives each metric as mean [95% t interval] over the paired
seeds (same victim and query set per seed for every attack): ``acc``, the paper's ``clo`` on
held-out query-set samples (``clo_query``), ``clo`` on the test set with its trivial reference
(best constant exit), ``cc_ratio`` and ``exit_accuracy`` (``ours`` only).

Each run goes through ``benchmark.runner.run(RunConfig(...))``, exactly like ``python -m benchmark
run``, and its Result JSON is written to ``--results`` (default ``results/compare-<victim>-<dataset>-
<defense>-b<budget>-s<seed>/``; with ``--seeds`` and ``--results F``, ``F/s<seed>/``); ``--reuse``
renders the table from those files where their configuration matches instead of running again (it
compares the run's configuration, not the code: delete the file of an attack whose code or
defaults changed). The paper's numbers are read from
``../shared/reference/paper_table1.csv`` next to the repository root (``--paper-csv`` overrides).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_PAPER_CSV = ROOT.parent / "shared" / "reference" / "paper_table1.csv"

#: (row label, attack, attack options, paper method)
ATTACK_ROWS: tuple[tuple[str, str, dict, str], ...] = (
    ("ours", "ours", {}, "Ours"),
    ("knockoff (random)", "knockoff", {"sampling": "random"}, "Knock"),
    ("knockoff (adaptive)", "knockoff", {"sampling": "adaptive"}, "Knock"),
    ("noise", "noise", {}, "Noise"),
    ("esa", "esa", {}, "ESA"),
)


class CompareError(Exception):
    """A one-line problem the script reports and exits on."""


def read_paper_rows(path: Path, backbone: str = "VGG", dataset: str = "CIFAR10") -> dict[str, dict[str, float | None]]:
    """The paper's Table 1 rows for one backbone and dataset: method -> {acc, clo, cc_ratio}
    (acc and clo as fractions)."""
    if not path.is_file():
        raise CompareError(f"paper table not found at {path} (expected ../shared/reference/paper_table1.csv "
                           f"next to the repository root; pass --paper-csv PATH)")
    lines = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    rows: dict[str, dict[str, float | None]] = {}
    for row in csv.DictReader(lines):
        if row.get("backbone") == backbone and row.get("dataset") == dataset:
            rows[row["method"]] = {"acc": _num(row, "acc", 100), "clo": _num(row, "clo", 100),
                                   "cc_ratio": _num(row, "cc_ratio")}
    if not rows:
        raise CompareError(f"{path} has no rows for {backbone}/{dataset}")
    return rows


def _num(row: dict, key: str, scale: float = 1.0) -> float | None:
    value = (row.get(key) or "").strip()
    try:
        return float(value) / scale if value else None
    except ValueError:
        raise CompareError(f"paper table: {key}={value!r} is not a number") from None


def pct(value: float | None, sd: float | None = None) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}%" if sd is None else f"{100 * value:.1f} ± {100 * sd:.1f}%"


def ratio(value: float | None, sd: float | None = None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}x" if sd is None else f"{value:.2f} ± {sd:.2f}x"


MEAN_KEYS = ("acc", "victim_acc", "clo", "cc_ratio", "fidelity")


def mean_over_seeds(per_seed: dict[int, dict[str, dict]]) -> dict[str, dict]:
    """{seed: {label: result}} -> {label: {"scores": means, "sd": sample standard deviations}}
    over the seeds that have the row (sd is 0 with one seed)."""
    labels = [label for label, *_ in ATTACK_ROWS if any(label in r for r in per_seed.values())]
    out = {}
    for label in labels:
        rows = [r[label]["scores"] for r in per_seed.values() if label in r]
        scores = {k: statistics.fmean(x[k] for x in rows) for k in MEAN_KEYS}
        sd = {k: statistics.stdev(x[k] for x in rows) if len(rows) > 1 else 0.0 for k in MEAN_KEYS}
        out[label] = {"scores": {**scores, "queries": rows[0]["queries"]}, "sd": sd, "seeds": len(rows)}
    return out


def render_table(results: dict[str, dict], paper: dict[str, dict]) -> str:
    """Markdown table: one row per attack (plus the victim), our scores beside the paper's."""
    header = ("| attack | acc | clo | cc_ratio | fidelity | queries | paper acc | paper clo | paper cc_ratio |\n"
              "|:--|--:|--:|--:|--:|--:|--:|--:|--:|")
    lines = [header]
    first = next(iter(results.values()))
    pv = paper.get("Victim", {})
    lines.append(f"| victim | {pct(first['scores']['victim_acc'], first.get('sd', {}).get('victim_acc'))} | - | 1.00x "
                 f"| - | - | {pct(pv.get('acc'))} | - "
                 f"| {ratio(pv.get('cc_ratio'))} |")
    for label, _, _, method in ATTACK_ROWS:
        if label not in results:
            continue
        s, sd = results[label]["scores"], results[label].get("sd", {})
        p = paper.get(method, {})
        lines.append(f"| {label} | {pct(s['acc'], sd.get('acc'))} | {pct(s['clo'], sd.get('clo'))} "
                     f"| {ratio(s['cc_ratio'], sd.get('cc_ratio'))} | {pct(s['fidelity'], sd.get('fidelity'))} "
                     f"| {s['queries']} | {pct(p.get('acc'))} | {pct(p.get('clo'))} | {ratio(p.get('cc_ratio'))} |")
    return "\n".join(lines)


INTERVAL_KEYS = (("acc", "acc", pct), ("clo_query", "paper clo (queries)", pct),
                 ("clo_query_trivial", "its trivial", pct), ("clo", "test clo", pct),
                 ("clo_trivial", "test trivial", pct), ("cc_ratio", "cc_ratio", ratio),
                 ("exit_accuracy", "exit acc", pct))
PAPER_COLUMNS = ("paper acc", "paper clo", "paper cc_ratio")


def interval_cell(values: list[float], fmt) -> str:
    """``mean [low, high]`` (95% t interval over seeds): percent for ``pct`` columns, ratio otherwise."""
    from benchmark.stats import mean_interval

    if not values:
        return "-"
    m, lo, hi = mean_interval(values)
    if fmt is pct:
        return f"{100 * m:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]%"
    return f"{m:.2f} [{lo:.2f}, {hi:.2f}]x"


def render_interval_table(per_seed: dict[int, dict[str, dict]], paper: dict[str, dict]) -> str:
    """Markdown table over seeds: each metric as mean [95% interval]; the paper's acc / clo / cc_ratio."""
    import pandas as pd

    rows = []
    victim = [r[label]["scores"]["victim_acc"] for r in per_seed.values() for label in list(r)[:1]]
    pv = paper.get("Victim", {})
    rows.append({"attack": "victim", "seeds": len(victim), "acc": interval_cell(victim, pct),
                 "paper acc": pct(pv.get("acc")), "paper clo": "-", "paper cc_ratio": ratio(pv.get("cc_ratio"))})
    for label, _, _, method in ATTACK_ROWS:
        runs = [r[label]["scores"] for r in per_seed.values() if label in r]
        if not runs:
            continue
        row = {"attack": label, "seeds": len(runs)}
        for key, name, fmt in INTERVAL_KEYS:
            row[name] = interval_cell([x[key] for x in runs if x.get(key) is not None], fmt)
        p = paper.get(method, {})
        row.update({"paper acc": pct(p.get("acc")), "paper clo": pct(p.get("clo")),
                    "paper cc_ratio": ratio(p.get("cc_ratio"))})
        rows.append(row)
    columns = ["attack", "seeds", *(name for _, name, _ in INTERVAL_KEYS), *PAPER_COLUMNS]
    return pd.DataFrame(rows, columns=columns).fillna("-").to_markdown(index=False)


def ordering_checks(results: dict[str, dict]) -> list[str]:
    """The paper's claims on this table, each as 'holds'/'FAILS' with the numbers."""
    out = []
    if "ours" not in results or len(results) < 2:
        return out
    s = {k: v["scores"] for k, v in results.items()}
    best_clo = max(s, key=lambda k: s[k]["clo"])
    closest = min(s, key=lambda k: abs(s[k]["cc_ratio"] - 1.0))
    out.append(f"ours has the highest clo: {'holds' if best_clo == 'ours' else 'FAILS'} "
               f"(highest: {best_clo}, {s[best_clo]['clo']:.4f}; ours {s['ours']['clo']:.4f})")
    out.append(f"ours has the cc_ratio closest to 1: {'holds' if closest == 'ours' else 'FAILS'} "
               f"(closest: {closest}, {s[closest]['cc_ratio']:.3f}; ours {s['ours']['cc_ratio']:.3f})")
    if "noise" in s:
        lowest = min(s, key=lambda k: s[k]["acc"])
        out.append(f"noise has the lowest acc: {'holds' if lowest == 'noise' else 'FAILS'} "
                   f"(lowest: {lowest}, {s[lowest]['acc']:.4f})")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=int, default=10_000, help="query budget of every attack (default 10000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", help="seeds, e.g. 0,1,2 or 0-4 (overrides --seed): every row runs once per seed and the "
                   "table shows mean ± sd over them")
    p.add_argument("--defense", default="none")
    p.add_argument("--victim", default=None, help="default sdn-tiny")
    p.add_argument("--dataset", default=None, help="default synthetic")
    p.add_argument("--query-data", dest="query_data", default=None, help="default synthetic-ood")
    p.add_argument("--device", default="cpu")
    p.add_argument("--timing-profile", dest="timing_profile", default="calibrated",
                   help="latency profile of the simulated timing: calibrated (measured on this host) or flops "
                   "(deterministic, from each exit's FLOPs; use it on a loaded host)")
    p.add_argument("--preset", help="a named configuration (e.g. paper:cpu-fashionmnist): victim, dataset, query "
                   "set, substitute and victim options; flags given next to it override them")
    p.add_argument("--victim-opt", dest="victim_opt", action="append", default=[], metavar="KEY=VALUE",
                   help="victim option (repeatable), e.g. train_subset=10000")
    p.add_argument("--paper-backbone", dest="paper_backbone", default="VGG", help="paper rows shown: VGG, ResNet or "
                   "MobileNet (default VGG)")
    p.add_argument("--paper-dataset", dest="paper_dataset", default="CIFAR10",
                   help="paper rows shown: CIFAR10, GTSRB, SVHN or FMNIST (default CIFAR10)")
    p.add_argument("--markdown", type=Path, help="also write the tables to this Markdown file")
    p.add_argument("--attacks", help="comma-separated row labels to run (default: all): "
                   + ", ".join(label for label, *_ in ATTACK_ROWS))
    p.add_argument("--baseline-opt", dest="baseline_opt", action="append", default=[], metavar="KEY=VALUE",
                   help="option given to every baseline (knockoff, noise, esa), e.g. tolerance=0 (repeatable)")
    p.add_argument("--attack-opt", dest="attack_opt", action="append", default=[], metavar="KEY=VALUE",
                   help="option given to every attack, ours included, e.g. epochs=1 (repeatable)")
    p.add_argument("--results", type=Path, help="folder for the Result JSON files")
    p.add_argument("--reuse", action="store_true", help="reuse Result files whose configuration matches")
    p.add_argument("--paper-csv", dest="paper_csv", type=Path, default=DEFAULT_PAPER_CSV)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)

    try:
        paper = read_paper_rows(args.paper_csv, args.paper_backbone, args.paper_dataset)  # fail before heavy work
        resolve_settings(args)
        wanted = [r for r in ATTACK_ROWS if not args.attacks or r[0] in args.attacks.split(",")]
        unknown = set(args.attacks.split(",")) - {r[0] for r in ATTACK_ROWS} if args.attacks else set()
        if unknown:
            raise CompareError(f"unknown attack row(s) {', '.join(sorted(unknown))}")
        seeds = parse_seeds(args.seeds) if args.seeds else [args.seed]
        per_seed = {seed: run_all(args, wanted, seed, multi=len(seeds) > 1) for seed in seeds}
    except CompareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    extra = f", baseline options {' '.join(args.baseline_opt)}" if args.baseline_opt else ""
    extra += f", attack options {' '.join(args.attack_opt)}" if args.attack_opt else ""
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {','.join(map(str, seeds))} (mean ± sd)"
    vopts = "".join(f", victim {k}={v}" for k, v in sorted(args.victim_options.items()))
    head = (f"{args.victim} / {args.dataset}{vopts}, queries from {args.query_data}, defense {args.defense}, "
            f"budget {args.budget}, {seed_text}, device {args.device}, timing profile {args.timing_profile}{extra}; "
            f"paper: Table 1, "
            f"{args.paper_backbone} / {args.paper_dataset}\n")
    print(head)
    if len(seeds) == 1:
        results = per_seed[seeds[0]]
        out = [head, render_table(results, paper), "", *(f"- {line}" for line in ordering_checks(results))]
        print("\n".join(out[1:]))
        if args.markdown:
            args.markdown.write_text("\n".join(out) + "\n")
        return 0
    means = mean_over_seeds(per_seed)
    out = [head, render_table(means, paper), "", "Mean [95% t interval] over the paired seeds:", "",
           render_interval_table(per_seed, paper), ""]
    per_seed_checks = [ordering_checks(r) for r in per_seed.values()]
    for i, line in enumerate(ordering_checks(means)):
        held = sum(c[i].split(":")[1].strip().startswith("holds") for c in per_seed_checks if i < len(c))
        out.append(f"- on the means, {line}; per seed it holds in {held} of {len(seeds)}")
    print("\n".join(out[1:]))
    if args.markdown:
        args.markdown.write_text("\n".join(out) + "\n")
    return 0


def resolve_settings(args: argparse.Namespace) -> None:
    """Fill victim / dataset / query set / substitute / victim options from ``--preset`` and the
    flags (flags win); one-line CompareError on a bad preset or option."""
    from benchmark.errors import StealBenchError
    from benchmark.options import parse_kv
    from benchmark.presets import apply_preset

    try:
        settings = apply_preset(args.preset) if args.preset else {}
        vopts = {**settings.get("victim_options", {}), **parse_kv(args.victim_opt, "victim")}
    except StealBenchError as exc:
        raise CompareError(str(exc)) from exc
    defaults = {"victim": "sdn-tiny", "dataset": "synthetic", "query_data": "synthetic-ood"}
    for key, default in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, settings.get(key, default))
    args.substitute_arch = settings.get("substitute_arch")
    args.victim_options = vopts


def parse_seeds(text: str) -> list[int]:
    """``--seeds``, parsed as the sweep parses its seeds (``0,1,5-7``; distinct, non-negative)."""
    from benchmark.errors import StealBenchError
    from benchmark.sweep import parse_seeds as sweep_seeds

    try:
        return list(sweep_seeds(text))
    except StealBenchError as exc:
        raise CompareError(f"--seeds must be comma-separated integers or ranges like 0-4, each once: {exc}") from None


def run_all(args: argparse.Namespace, rows, seed: int, multi: bool = False) -> dict[str, dict]:
    """Run (or with --reuse, read back) every row for one seed: {label: Result JSON}. With several
    seeds and --results F, seed s's files go to F/s<s>/; the default folder names the seed anyway."""
    from benchmark.config import RunConfig
    from benchmark.errors import StealBenchError
    from benchmark.options import parse_kv
    from benchmark.runner import run

    try:
        extra = parse_kv(args.baseline_opt, "baseline")
        common = parse_kv(getattr(args, "attack_opt", []), "attack")
    except StealBenchError as exc:
        raise CompareError(str(exc)) from exc
    suffix = "".join(f"-{k}{v}" for k, v in sorted({**extra, **common, **args.victim_options}.items()))
    default = ROOT / "results" / f"compare-{args.victim}-{args.dataset}-{args.defense}-b{args.budget}-s{seed}{suffix}"
    folder = default if args.results is None else (args.results / f"s{seed}" if multi else args.results)
    results = {}
    for label, attack, opts, _ in rows:
        options = {**opts, **common} if attack == "ours" else {**opts, **extra, **common}
        more = {"substitute_arch": args.substitute_arch} if args.substitute_arch else {}
        cfg = RunConfig(attack=attack, defense=args.defense, victim=args.victim, dataset=args.dataset,
                        query_data=args.query_data, budget=args.budget, seed=seed, device=args.device,
                        attack_options=options, victim_options=dict(args.victim_options),
                        timing_profile=args.timing_profile, **more)
        path = folder / (label.replace(" ", "-").replace("(", "").replace(")", "") + ".json")
        if args.reuse and path.is_file():
            cached = json.loads(path.read_text())
            if cached.get("config") == cfg.to_json():
                results[label] = cached
                print(f"[{label}] reused {path}", file=sys.stderr)
                continue
        t0 = time.perf_counter()
        print(f"[{label}] running ...", file=sys.stderr)
        try:
            result = run(cfg, progress=not args.quiet)
        except StealBenchError as exc:
            raise CompareError(f"{label}: {exc}") from exc
        result.write(path)
        results[label] = result.to_json()
        print(f"[{label}] done in {time.perf_counter() - t0:.0f}s -> {path}", file=sys.stderr)
    return results


if __name__ == "__main__":
    raise SystemExit(main())
