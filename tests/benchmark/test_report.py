"""``python -m benchmark report``: the summary table (CSV and text) and the PNG figures, on real runs."""

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.image import imread

from benchmark.cli import main
from benchmark.config import RunConfig
from benchmark.io import write_json
from benchmark.report import load_results, runs_frame, summary_frame, write_report
from benchmark.runner import run
from benchmark.sweep import Job, failure_record, job_id

TINY = {"attack_options": {"epochs": 1}, "victim_options": {"epochs": 1}, "budget": 600, "timing_profile": "flops"}


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    """Two real runs (ours vs none, ours vs jitter:size=2), one result of an attack without a timing
    KDE (the 'none' run relabelled as another seed of the 'noise' attack, to exercise that path) and
    one failed job's record."""
    folder = tmp_path_factory.mktemp("results")
    written = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a sweep job runs; on a busy 2-core machine 2 threads are much slower
    try:
        for defense, opts in (("none", {}), ("jitter", {"size": 2.0})):
            cfg = RunConfig(**TINY, defense=defense, defense_options=opts)
            written[defense] = run(cfg, progress=False)
            written[defense].write(folder / f"{job_id(cfg)}.json")
    finally:
        torch.set_num_threads(threads)
    other = copy.deepcopy(written["none"].to_json())
    other["config"].update(attack="noise", seed=1, attack_options={})
    other["attack"]["details"] = {}
    write_json(folder / "noise-run.json", other)
    bad = RunConfig(**TINY, dataset="cifar10")
    write_json(folder / f"{job_id(bad)}.error.json",
               failure_record(Job(job_id(bad), bad), {"type": "StealBenchError", "message": "CIFAR10 not found",
                                                       "traceback": ""}, "local"))
    write_json(folder / "sweep.json", {"jobs": []})  # not a result: ignored
    return folder


def assert_png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = imread(path)
    assert img.shape[0] > 100 and img.shape[1] > 100
    assert float(np.asarray(img)[..., :3].std()) > 0.01  # something is drawn


def test_load_results_classifies_files(results_dir):
    results, failures = load_results(results_dir)
    assert len(results) == 3 and len(failures) == 1
    assert failures[0][1]["error"]["message"] == "CIFAR10 not found"


def test_report_writes_csv_table_and_pngs(results_dir, tmp_path):
    text, files = write_report(results_dir, tmp_path / "rep")
    runs = pd.read_csv(tmp_path / "rep" / "runs.csv")
    assert len(runs) == 3 and {"acc", "clo", "accuracy_lost", "added_latency_ms", "seed"} <= set(runs.columns)
    # options common to every run (epochs=1) are left out of the labels; differing ones are kept
    assert set(runs["defense"]) == {"none", "jitter:size=2.0"} and set(runs["attack"]) == {"ours:epochs=1", "noise"}
    jitter = runs[runs["defense"] == "jitter:size=2.0"].iloc[0]
    raw = json.loads(next(results_dir.glob("ours__jitter__*.json")).read_text())
    assert jitter["clo"] == pytest.approx(raw["scores"]["clo"])
    assert jitter["added_latency_ms"] == pytest.approx(raw["defense"]["cost"]["added_latency_mean_s"] * 1e3)
    assert jitter["added_latency_ms"] > 0
    summary = pd.read_csv(tmp_path / "rep" / "summary.csv")
    assert len(summary) == 3 and set(summary["seeds"]) == {1}
    assert "jitter:size=2.0" in text and "FAILED" in text and "CIFAR10 not found" in text
    assert "attack options in every run" not in text  # noise has none: epochs=1 is not common to all
    assert "victim options in every run: epochs=1" in text
    pngs = [f for f in files if f.suffix == ".png"]
    kde = sorted((tmp_path / "rep" / "kde").glob("*.png"))
    exits = sorted((tmp_path / "rep" / "exits").glob("*.png"))
    tradeoff = sorted((tmp_path / "rep").glob("tradeoff__*.png"))
    assert len(kde) == 2 and len(exits) == 3 and len(tradeoff) == 1  # no KDE for the attack without one
    assert len(pngs) == 6
    for path in pngs:
        assert_png(path)


def test_report_cli(results_dir, capsys):
    assert main(["report", str(results_dir), "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "| victim" in out and "jitter:size=2.0" in out and "runs.csv" in out
    assert (results_dir / "report" / "summary.csv").exists()
    assert not (results_dir / "report" / "kde").exists()
    # the report's own files are not results: a second report reads the same 3 runs
    assert main(["report", str(results_dir), "--no-plots"]) == 0
    assert "3 results, 1 failed jobs" in capsys.readouterr().out


def test_report_of_nothing_is_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no result files" in err and err.count("\n") == 1
    assert main(["report", str(tmp_path / "missing")]) == 2


def test_summary_is_the_mean_over_seeds():
    runs = pd.DataFrame([
        {"victim": "v", "dataset": "d", "attack": "a", "defense": "x", "seed": 0, "acc": 0.2, "clo": 0.5,
         "fidelity": 0.1, "cc_ratio": 1.0, "exit_accuracy": None, "accuracy_lost": 0.0, "added_latency_ms": 1.0},
        {"victim": "v", "dataset": "d", "attack": "a", "defense": "x", "seed": 1, "acc": 0.4, "clo": 0.7,
         "fidelity": 0.3, "cc_ratio": 2.0, "exit_accuracy": None, "accuracy_lost": 0.0, "added_latency_ms": 3.0},
        {"victim": "v", "dataset": "d", "attack": "a", "defense": "none", "seed": 0, "acc": 0.9, "clo": 0.9,
         "fidelity": 0.9, "cc_ratio": 1.0, "exit_accuracy": 0.8, "accuracy_lost": 0.0, "added_latency_ms": 0.0},
    ])
    s = summary_frame(runs).set_index("defense")
    assert s.loc["x", "seeds"] == 2 and s.loc["x", "acc"] == pytest.approx(0.3)
    assert s.loc["x", "clo"] == pytest.approx(0.6) and s.loc["x", "clo_std"] == pytest.approx(0.1)
    assert s.loc["x", "added_latency_ms"] == pytest.approx(2.0) and pd.isna(s.loc["x", "exit_accuracy"])
    assert s.loc["none", "seeds"] == 1 and s.loc["none", "exit_accuracy"] == pytest.approx(0.8)
    assert list(summary_frame(runs.iloc[:0]).columns)[:5] == ["victim", "dataset", "attack", "defense", "seeds"]


def test_runs_frame_labels_keep_differing_options():
    def result(opts):
        return {"config": {"victim": "sdn-tiny", "dataset": "synthetic", "attack": "ours", "defense": "jitter",
                           "seed": 0, "attack_options": {"epochs": 1, **opts}, "defense_options": {},
                           "victim_options": {}},
                "scores": {"acc": 0.5}, "defense": {"cost": {}}}

    frame = runs_frame([("a", result({})), ("b", result({"repeats": 2, "bw_scale": [1, 2]}))])
    assert list(frame["attack"]) == ["ours", "ours:repeats=2:bw_scale=1,2"]
