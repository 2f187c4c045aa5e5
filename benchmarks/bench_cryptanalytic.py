"""Benchmark of exact extraction (the cryptanalytic attack) across model sizes and seeds.

Follows Foerster et al. (NeurIPS 2024): the same models for every method, layer by layer, time
*and* queries, signature and sign extraction apart, training (weights) seeds and extraction
seeds varied. Each run is one line of JSON in ``--out`` (runs already there are skipped, so an
interrupted benchmark resumes); ``--table`` renders the Markdown table of ``BENCHMARKS.md``.

    python benchmarks/bench_cryptanalytic.py                       # Table 1 sizes up to 100-50-50-1
    python benchmarks/bench_cryptanalytic.py --sizes 10-5-5-1,10-15-15-1 --weight-seeds 0,1,2
    python benchmarks/bench_cryptanalytic.py --defense-decimals 12,10,8,6 --sizes 10-5-5-1
    python benchmarks/bench_cryptanalytic.py --table               # print the tables

Trained victims (``--trained mnist``): ``relu-mlp`` with ``init=trained`` on the task, its weight
seed the training seed, ``--epochs`` of Adam (odd vs even digit for one output); each row records
the victim's test accuracy. ``--wiggle`` and ``--sign-samples`` (comma lists) run the sign-step
ablation on the same networks:

    python benchmarks/bench_cryptanalytic.py --trained mnist --sizes 784-4-4-1,784-8-8-1 \
        --weight-seeds 0,1 --extraction-seeds 0,1,2,3 --time-limit 600
    python benchmarks/bench_cryptanalytic.py --trained mnist --sizes 784-8-8-1 --extraction-seeds 0,1 \
        --wiggle suppress,projection --sign-samples 15,200
    python benchmarks/bench_cryptanalytic.py --trained mnist --table

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
# 784-L-L-1 trained on MNIST (odd vs even digit)
MNIST_SIZES = ["784-4-4-1", "784-8-8-1", "784-16-16-1", "784-32-32-1", "784-64-64-1"]


def run_one(layers: str, weight_seed: int, extraction_seed: int, decimals: int | None, time_limit: float,
            dataset: str | None = None, epochs: int = 20, wiggle: str = "suppress", sign_samples: int = 15) -> dict:
    """One extraction. ``dataset`` None: a random victim (weights from ``weight_seed``); else a
    victim trained on that task with training seed ``weight_seed`` (``epochs`` of Adam)."""
    from attacks.cryptanalytic import Cryptanalytic
    from benchmark.api.attack import AttackContext
    from benchmark.exact import score
    from benchmark.exact_scoring import align
    from victims.relu_mlp import MLPOracle, ReLUMLPSpec

    if dataset is None:
        victim = ReLUMLPSpec(layers=layers, seed=weight_seed).build(0)
    else:
        victim = ReLUMLPSpec(layers=layers, init="trained", seed=weight_seed, epochs=epochs).build(0, dataset=dataset)
    attack = Cryptanalytic(layers=layers, time_limit=time_limit, wiggle=wiggle, sign_samples=sign_samples,
                           hard_samples=max(100, sign_samples))
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
    al = align(*victim.net.parameters_numpy(), stolen.weights, stolen.biases).to_json()
    row = {"layers": layers, "weight_seed": weight_seed, "extraction_seed": extraction_seed, "decimals": decimals,
           "seconds": seconds, "cpu_seconds": cpu, "load_average": list(os.getloadavg()),
           "queries": oracle.used, "complete": d["complete"],
           "neurons_recovered": s["neurons_recovered"], "neurons_identified": s["neurons_identified"],
           "max_weight_error_log2": s["max_weight_error_log2"], "output_agreement": s["output_agreement"],
           "max_output_diff": s["max_output_diff"], "label_agreement": s["label_agreement"],
           "per_layer": d["per_layer"], "output_layer": d["output_layer"], "not_recovered": d["not_recovered"],
           "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine()}}
    if dataset is not None or wiggle != "suppress" or sign_samples != 15:
        row.update({
            "dataset": dataset, "epochs": epochs if dataset is not None else None,
            "test_accuracy": victim.test_accuracy, "wiggle": wiggle, "sign_samples": sign_samples,
            "time_limit": time_limit, "hit_time_limit": any("time limit" in n for n in d["not_recovered"]),
            "recovered_per_layer": al["recovered_per_layer"], "identified_per_layer": al["identified_per_layer"],
            "sign_correct_per_layer": al["sign_correct_per_layer"],
            "claimed_recovered_per_layer": d["claimed_recovered_per_layer"],
            "max_output_diff_real": s["max_output_diff_real"]})
    return row


def key(r: dict) -> tuple:
    return (r["layers"], r["weight_seed"], r["extraction_seed"], r["decimals"], r.get("dataset"),
            r.get("wiggle", "suppress"), r.get("sign_samples", 15))


def default_settings(r: dict) -> bool:
    return r.get("wiggle", "suppress") == "suppress" and r.get("sign_samples", 15) == 15


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


def size_key(size: str) -> list[int]:
    return [int(v) for v in size.split("-")]


def exact(r: dict) -> bool:
    return r["neurons_recovered"] == 1.0 and r["output_agreement"] == 1.0


def recovered_cell(rs: list[dict]) -> str:
    """Neurons recovered per hidden layer of the runs that were not exact, and their output agreement,
    e.g. ``w1e0: 64/64, 12/64 (output agreement 0.0000, time limit)``."""
    out = []
    for r in rs:
        if exact(r):
            continue
        widths = size_key(r["layers"])[1:-1]
        per = ", ".join(f"{k}/{n}" for k, n in zip(r.get("recovered_per_layer", []), widths))
        found = ", ".join(str(g["found"]) for g in r["per_layer"])
        refined = ", ".join(str(g["rows_refined"]) for g in r["per_layer"])
        why = (f", time limit; signatures found {found}, rows through the precision step {refined}"
               if r.get("hit_time_limit") else "")
        out.append(f"w{r['weight_seed']}e{r['extraction_seed']}: {per} (output agreement "
                   f"{r['output_agreement']:.4f}{why})")
    return "; ".join(out) or "-"


def trained_table(rows: list[dict]) -> str:
    """Trained victims at the default sign settings: per model size, the victims' test accuracy, runs,
    exact runs, worst error, per layer signature (without the precision step), precision step and
    sign step, time and queries (mean ± std over training and extraction seeds), totals, and what
    the runs that were not exact recovered."""
    rs_all = [r for r in rows if r.get("dataset") and r["decimals"] is None and default_settings(r)]
    sizes = sorted({r["layers"] for r in rs_all}, key=size_key)
    head = ["model", "test acc", "runs", "exact runs", "worst error (log2)"]
    for layer in (1, 2):
        head += [f"L{layer} signature s", f"L{layer} signature q", f"L{layer} precision s", f"L{layer} precision q",
                 f"L{layer} sign s", f"L{layer} sign q"]
    head += ["total s", "total CPU s", "total q", "not exact: neurons recovered per layer"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for size in sizes:
        rs = [r for r in rs_all if r["layers"] == size]
        accs = {r["weight_seed"]: r["test_accuracy"] for r in rs}
        full = sum(exact(r) for r in rs)
        cells = [size, " / ".join(f"{accs[w]:.3f}" for w in sorted(accs)), str(len(rs)), f"{full}/{len(rs)}",
                 f"{max(r['max_weight_error_log2'] for r in rs):.1f}"]
        for layer in (1, 2):  # runs that reached the layer
            logs = [r["per_layer"][layer - 1] for r in rs
                    if len(r["per_layer"]) >= layer and r["per_layer"][layer - 1]["signature_queries"]]
            prec = [g for g in logs if g["precision_queries"]]  # runs whose precision / sign step ran
            sign = [g for g in logs if g["sign_queries"]]
            cells += [fmt_mean([g["signature_seconds"] - g["precision_seconds"] for g in logs]),
                      kq([g["signature_queries"] - g["precision_queries"] for g in logs]),
                      fmt_mean([g["precision_seconds"] for g in prec]), kq([g["precision_queries"] for g in prec]),
                      fmt_mean([g["sign_seconds"] for g in sign]), kq([g["sign_queries"] for g in sign])]
        cells += [fmt_mean([r["seconds"] for r in rs], 1), fmt_mean([r["cpu_seconds"] for r in rs], 1),
                  kq([r["queries"] for r in rs]), recovered_cell(rs)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ablation_table(rows: list[dict]) -> str:
    """The sign-step settings on the same trained networks: per model, wiggle and ``s``, over the
    (training seed, extraction seed) pairs every setting of that model ran: runs, exact runs,
    neurons recovered, signs right (neurons whose aligned scale is positive), hard neurons, sign
    time and queries per layer, totals."""
    rs_all = [r for r in rows if r.get("dataset") and r["decimals"] is None]
    groups: dict[tuple, list[dict]] = {}
    for r in rs_all:
        groups.setdefault((r["layers"], r.get("wiggle", "suppress"), r.get("sign_samples", 15)), []).append(r)
    ablated = {size for (size, w, s_) in groups if (w, s_) != ("suppress", 15)}
    common: dict[str, set] = {}
    for (size, _, _), g in groups.items():
        pairs = {(r["weight_seed"], r["extraction_seed"]) for r in g}
        common[size] = common[size] & pairs if size in common else pairs
    head = ["model", "wiggle", "s", "runs", "exact runs", "neurons recovered", "signs right", "hard neurons",
            "L1 sign s", "L1 sign q", "L2 sign s", "L2 sign q", "total s", "total CPU s", "total q"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for (size, wig, s_), g in sorted(groups.items(), key=lambda kv: (size_key(kv[0][0]), kv[0][1], kv[0][2])):
        g = [r for r in g if (r["weight_seed"], r["extraction_seed"]) in common[size]]
        if size not in ablated or not g:
            continue
        total = sum(sum(size_key(r["layers"])[1:-1]) for r in g)
        rec = sum(sum(r.get("recovered_per_layer", [])) for r in g)
        right = sum(sum(r.get("sign_correct_per_layer", [])) for r in g)
        hard = sum(x["hard_neurons"] for r in g for x in r["per_layer"])
        cells = [size, wig, str(s_), str(len(g)), f"{sum(exact(r) for r in g)}/{len(g)}", f"{rec}/{total}",
                 f"{right}/{total}", str(hard)]
        for layer in (1, 2):
            logs = [r["per_layer"][layer - 1] for r in g if len(r["per_layer"]) >= layer]
            cells += [fmt_mean([x["sign_seconds"] for x in logs]), kq([x["sign_queries"] for x in logs])]
        cells += [fmt_mean([r["seconds"] for r in g], 1), fmt_mean([r["cpu_seconds"] for r in g], 1),
                  kq([r["queries"] for r in g])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default=None, help=f"comma list (default: {','.join(DEFAULT_SIZES)}; with --trained "
                                                 f"mnist: {','.join(MNIST_SIZES)})")
    p.add_argument("--weight-seeds", default="0,1", help="training (random weights) seeds")
    p.add_argument("--extraction-seeds", default="0,1")
    p.add_argument("--defense-decimals", default="", help="rounding defense settings, e.g. 12,10,8,6")
    p.add_argument("--time-limit", type=float, default=900.0, help="per run, seconds")
    p.add_argument("--trained", default=None, metavar="TASK",
                   help="trained victims (init=trained on this task, e.g. mnist) instead of random ones")
    p.add_argument("--epochs", type=int, default=20, help="training epochs of --trained victims")
    p.add_argument("--wiggle", default="suppress", help="sign step(s): suppress, projection, or both (comma list)")
    p.add_argument("--sign-samples", default="15", help="Foerster et al.'s s, comma list")
    p.add_argument("--out", default=None, help="JSONL file (default: benchmarks/results/cryptanalytic.jsonl, "
                                               "with --trained TASK cryptanalytic-TASK.jsonl)")
    p.add_argument("--table", action="store_true", help="print the Markdown tables and exit")
    args = p.parse_args(argv)
    name = "cryptanalytic.jsonl" if args.trained is None else f"cryptanalytic-{args.trained}.jsonl"
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / name
    rows = load(out)
    if args.table:
        if any(not r.get("dataset") for r in rows):
            print(table([r for r in rows if not r.get("dataset") and default_settings(r)]))
        if any(r.get("dataset") for r in rows):
            print(trained_table(rows))
            if any(r.get("dataset") and not default_settings(r) for r in rows):
                print()
                print(ablation_table(rows))
        if any(r["decimals"] is not None for r in rows):
            print()
            print(rounding_table(rows))
        return 0
    done = {key(r) for r in rows}
    decimals = [int(d) for d in args.defense_decimals.split(",") if d.strip()] or [None]
    wiggles = [w.strip() for w in args.wiggle.split(",") if w.strip()]
    samples = [int(v) for v in args.sign_samples.split(",") if v.strip()]
    sizes = args.sizes.split(",") if args.sizes else (MNIST_SIZES if args.trained else DEFAULT_SIZES)
    out.parent.mkdir(parents=True, exist_ok=True)
    for size in sizes:
        for ws in (int(v) for v in args.weight_seeds.split(",")):
            for es in (int(v) for v in args.extraction_seeds.split(",")):
                for dec in decimals:
                    for wig in wiggles:
                        for ss in samples:
                            if (size, ws, es, dec, args.trained, wig, ss) in done:
                                continue
                            r = run_one(size, ws, es, dec, args.time_limit, args.trained, args.epochs, wig, ss)
                            with out.open("a") as fh:
                                fh.write(json.dumps(r) + "\n")
                            acc = f" acc {r['test_accuracy']:.3f}" if args.trained else ""
                            print(f"{size} w{ws} e{es} d{dec} {wig} s={ss}{acc}: {r['seconds']:.1f}s "
                                  f"{r['queries']} queries, recovered {r['neurons_recovered']:.2f}, "
                                  f"error 2^{r['max_weight_error_log2']:.1f}, agreement {r['output_agreement']:.4f}",
                                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
