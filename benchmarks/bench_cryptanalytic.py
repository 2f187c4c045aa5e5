"""Benchmark of exact extraction (the cryptanalytic attack) across model sizes and seeds.

Follows Foerster et al. (NeurIPS 2024): the same models for every method, layer by layer, time
*and* queries, signature and sign extraction apart, training (weights) seeds and extraction
seeds varied. Each run is one line of JSON in ``--out`` (runs already there are skipped, so an
interrupted benchmark resumes); ``--table`` renders the Markdown table of ``BENCHMARKS.md``.

    python benchmarks/bench_cryptanalytic.py                       # Table 1 sizes up to 100-50-50-1
    python benchmarks/bench_cryptanalytic.py --sizes 10-5-5-1,10-15-15-1 --weight-seeds 0,1,2
    python benchmarks/bench_cryptanalytic.py --defense-decimals 12,10,8,6 --sizes 10-5-5-1
    python benchmarks/bench_cryptanalytic.py --table               # print the tables

Timings are wall-clock seconds of the attack on whatever machine runs it (the oracle's own
time is inside them: a float64 numpy forward pass per query batch).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Foerster et al.'s Table 1 models (random, two hidden layers), plus the expansive 10-15-15-1
TABLE1 = ["10-5-5-1", "20-10-10-1", "30-15-15-1", "40-20-20-1", "50-25-25-1", "60-30-30-1", "70-35-35-1",
          "80-40-40-1", "90-45-45-1", "100-50-50-1"]
DEFAULT_SIZES = [*TABLE1[:1], "10-15-15-1", *TABLE1[1:]]


def run_one(layers: str, weight_seed: int, extraction_seed: int, decimals: int | None, time_limit: float) -> dict:
    from attacks.cryptanalytic import Cryptanalytic
    from benchmark.api.attack import AttackContext
    from benchmark.exact import score
    from victims.relu_mlp import MLPOracle, ReLUMLPSpec

    victim = ReLUMLPSpec(layers=layers, seed=weight_seed).build(0)
    attack = Cryptanalytic(layers=layers, time_limit=time_limit)
    budget = attack.default_budget
    oracle = MLPOracle(victim.net, budget)
    served = oracle
    if decimals is not None:
        from defenses.rounding import Rounding

        served = Rounding(decimals=decimals).wrap(oracle, seed=extraction_seed)
    t0, c0 = time.perf_counter(), time.process_time()
    stolen = attack.run(served.black_box(), None, budget, AttackContext(seed=extraction_seed, progress=False))
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    s = score(victim, stolen, oracle.used, seconds, extraction_seed)
    d = stolen.details
    return {"layers": layers, "weight_seed": weight_seed, "extraction_seed": extraction_seed, "decimals": decimals,
            "seconds": seconds, "cpu_seconds": cpu, "load_average": list(os.getloadavg()),
            "queries": oracle.used, "complete": d["complete"],
            "neurons_recovered": s["neurons_recovered"], "neurons_identified": s["neurons_identified"],
            "max_weight_error_log2": s["max_weight_error_log2"], "output_agreement": s["output_agreement"],
            "max_output_diff": s["max_output_diff"], "label_agreement": s["label_agreement"],
            "per_layer": d["per_layer"], "output_layer": d["output_layer"], "not_recovered": d["not_recovered"],
            "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine()}}


def key(r: dict) -> tuple:
    return r["layers"], r["weight_seed"], r["extraction_seed"], r["decimals"]


def load(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def fmt_mean(values: list[float], digits: int = 2) -> str:
    if not values:
        return "-"
    m = float(np.mean(values))
    if len(values) == 1:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ± {float(np.std(values)):.{digits}f}"


def kq(values: list[float]) -> str:
    if not values:
        return "-"
    m = float(np.mean(values)) / 1000
    return f"{m:.1f}k" if len(values) == 1 else f"{m:.1f}k ± {float(np.std(values)) / 1000:.1f}k"


def table(rows: list[dict]) -> str:
    """Per model size: runs, exact runs (every neuron recovered and all 10,000 random inputs
    agreeing to 1e-6), worst error, and per layer the time and queries of signature and sign
    extraction (mean ± std over weight and extraction seeds)."""
    plain = [r for r in rows if r["decimals"] is None]
    sizes = sorted({r["layers"] for r in plain}, key=lambda s: [int(v) for v in s.split("-")])
    head = ("| model | runs | exact runs | worst error (log2) | L1 signature s | L1 signature q "
            "| L1 sign s | L1 sign q | L2 signature s | L2 signature q | L2 sign s | L2 sign q | total s | total CPU s "
            "| total q |")
    lines = [head, "|" + "|".join(["---"] * 15) + "|"]
    for size in sizes:
        rs = [r for r in plain if r["layers"] == size]
        full = sum(r["neurons_recovered"] == 1.0 and r["output_agreement"] == 1.0 for r in rs)
        worst = max(r["max_weight_error_log2"] for r in rs)
        cells = [size, str(len(rs)), f"{full}/{len(rs)}", f"{worst:.1f}"]
        for layer in (1, 2):
            logs = [r["per_layer"][layer - 1] for r in rs if len(r["per_layer"]) >= layer]
            cells += [fmt_mean([g["signature_seconds"] for g in logs]), kq([g["signature_queries"] for g in logs]),
                      fmt_mean([g["sign_seconds"] for g in logs]), kq([g["sign_queries"] for g in logs])]
        cells += [fmt_mean([r["seconds"] for r in rs], 1), fmt_mean([r.get("cpu_seconds", np.nan) for r in rs], 1),
                  kq([r["queries"] for r in rs])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rounding_table(rows: list[dict]) -> str:
    rs = [r for r in rows if r["decimals"] is not None] + [r for r in rows if r["decimals"] is None]
    groups: dict[tuple, list[dict]] = {}
    for r in rs:
        groups.setdefault((r["layers"], r["decimals"]), []).append(r)
    head = ("| model | rounding (decimals) | runs | neurons recovered | neurons identified | worst error (log2) "
            "| output agreement | label agreement | queries | seconds |")
    lines = [head, "|" + "|".join(["---"] * 10) + "|"]
    for (size, dec), g in sorted(groups.items(), key=lambda kv: ([int(v) for v in kv[0][0].split("-")],
                                                                 -(kv[0][1] if kv[0][1] is not None else 99))):
        if not any(r["decimals"] is not None for r in rows if r["layers"] == size):
            continue
        lines.append("| " + " | ".join([
            size, "none" if dec is None else str(dec), str(len(g)),
            fmt_mean([r["neurons_recovered"] for r in g]), fmt_mean([r["neurons_identified"] for r in g]),
            f"{max(r['max_weight_error_log2'] for r in g):.1f}", fmt_mean([r["output_agreement"] for r in g], 4),
            fmt_mean([r["label_agreement"] for r in g], 4), kq([r["queries"] for r in g]),
            fmt_mean([r["seconds"] for r in g], 1)]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default=",".join(DEFAULT_SIZES))
    p.add_argument("--weight-seeds", default="0,1", help="training (random weights) seeds")
    p.add_argument("--extraction-seeds", default="0,1")
    p.add_argument("--defense-decimals", default="", help="rounding defense settings, e.g. 12,10,8,6")
    p.add_argument("--time-limit", type=float, default=900.0, help="per run, seconds")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cryptanalytic.jsonl"))
    p.add_argument("--table", action="store_true", help="print the Markdown tables and exit")
    args = p.parse_args(argv)
    out = Path(args.out)
    rows = load(out)
    if args.table:
        print(table(rows))
        if any(r["decimals"] is not None for r in rows):
            print()
            print(rounding_table(rows))
        return 0
    done = {key(r) for r in rows}
    decimals = [int(d) for d in args.defense_decimals.split(",") if d.strip()] or [None]
    out.parent.mkdir(parents=True, exist_ok=True)
    for size in args.sizes.split(","):
        for ws in (int(v) for v in args.weight_seeds.split(",")):
            for es in (int(v) for v in args.extraction_seeds.split(",")):
                for dec in decimals:
                    if (size, ws, es, dec) in done:
                        continue
                    r = run_one(size, ws, es, dec, args.time_limit)
                    with out.open("a") as fh:
                        fh.write(json.dumps(r) + "\n")
                    print(f"{size} w{ws} e{es} d{dec}: {r['seconds']:.1f}s {r['queries']} queries, "
                          f"recovered {r['neurons_recovered']:.2f}, error 2^{r['max_weight_error_log2']:.1f}, "
                          f"agreement {r['output_agreement']:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
