"""benchmarks/decisive.py: re-scoring a substitute under another output strategy (factor b), the
cell and paired-difference tables, and resuming from result files. Tiny untrained models and
fabricated result dicts (fixtures, not measurements); no attack is run."""

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from helpers import tiny_task, tiny_victim
from scipy import stats

from attacks._baseline import exits_at
from benchmark.api.attack import StolenModel
from benchmark.api.victim import NEVER
from benchmark.metrics import compare, run_early_exit
from benchmark.training import exit_confidences

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def decisive():
    spec = importlib.util.spec_from_file_location("decisive", ROOT / "benchmarks" / "decisive.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["decisive"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("decisive", None)


@pytest.fixture(scope="module")
def models():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: one thread is faster than two on a shared host
    yield _models()
    torch.set_num_threads(threads)


def _models():
    task = tiny_task(32)
    victim, stolen = tiny_victim(0), tiny_victim(1)
    for model, shares in ((victim, (0.7, 0.6, 0.5)), (stolen, (0.6, 0.5, 0.6))):
        conf, _ = exit_confidences(model, task.test, "cpu")  # thresholds that spread the samples over the exits
        model.set_thresholds([float(conf[:, k].quantile(q)) for k, q in enumerate(shares)] + [0.0])
        model.exit_flops()  # measured once; every copy keeps it
    return victim, stolen, task.test, task.val


def test_forced_exit_rescoring_gives_the_constant_exit_closeness(decisive, models):
    victim, stolen, test, _ = models
    v = run_early_exit(victim, test, "cpu").exits
    shares = torch.bincount(v, minlength=4).double() / len(v)
    assert len(set(v.tolist())) > 1  # the fixture victim uses several exits
    clos = []
    for k in range(4):
        s = decisive.rescore(victim, stolen, stolen.forced_exit_thresholds(k), test, None)
        assert s["clo"] == pytest.approx(float(shares[k]), abs=1e-12)
        assert s["clo_lift"] == pytest.approx(float(shares[k]) - s["clo_trivial"], abs=1e-12)
        assert s["clo_balanced"] == pytest.approx(1 / int((shares > 0).sum()), abs=1e-12)
        clos.append(s["clo"])
    assert max(clos) == pytest.approx(s["clo_trivial"], abs=1e-12)
    never = decisive.rescore(victim, stolen, decisive.global_thresholds(4, NEVER), test, None)
    assert never["clo"] == pytest.approx(float(shares[3]), abs=1e-12)  # last exit only
    assert never["stolen_exit_hist"] == pytest.approx([0.0, 0.0, 0.0, 1.0])
    assert stolen.thresholds[:3].min() > 0.05  # the original is untouched


def test_global_rescoring_is_the_baselines_rule(decisive, models):
    victim, stolen, test, held = models
    assert decisive.global_thresholds(4) == [0.9, 0.9, 0.9, 0.0]
    conf, _ = exit_confidences(stolen, test, "cpu")
    q = float(conf[:, :3].median())  # an untrained model's max-softmax is ~0.1: this threshold splits the samples
    s = decisive.rescore(victim, stolen, decisive.global_thresholds(4, q), test, held)
    expected = exits_at(conf, q).long()
    assert len(set(expected.tolist())) > 1
    v = run_early_exit(victim, test, "cpu").exits
    assert s["clo"] == pytest.approx(float((expected == v).double().mean()), abs=1e-12)
    own = decisive.rescore(victim, stolen, stolen.thresholds, test, held)
    assert own == compare(victim, stolen, test, "cpu", held)


def test_global_rescore_checks_the_runs_own_scores(decisive, models, monkeypatch):
    victim, stolen, test, held = models
    monkeypatch.setattr(decisive, "scoring_splits", lambda cfg, task: (test, held))
    result = {"scores": compare(victim, stolen, test, "cpu", held)}
    seen = {"victim": victim, "stolen": StolenModel(stolen), "task": None}
    cfg = argparse.Namespace(device="cpu")
    block = decisive.global_rescore(result, seen, cfg)
    assert block["global"]["thresholds"] == [0.9, 0.9, 0.9, 0.0]
    assert block["stolen_thresholds"] == pytest.approx(stolen.thresholds.tolist())
    result["scores"]["clo"] += 0.01  # a run whose scoring the re-scoring does not reproduce
    with pytest.raises(decisive.DecisiveError, match="does not reproduce"):
        decisive.global_rescore(result, seen, cfg)


def fixture_results(decisive, seeds=(0, 1, 2)) -> dict:
    """Fabricated result dicts: clo of ours with stolen thresholds = 0.5 + 0.1 * rule + 0.01 * seed^2,
    the global re-scoring 0.08 + 0.01 * seed lower; knockoff 0.4."""
    out = {}
    for r, rule in enumerate(decisive.RULES):
        for seed in seeds:
            for loss in decisive.LOSSES:
                clo = 0.5 + 0.1 * r + 0.01 * seed ** 2
                scores = {m: 0.5 for m, *_ in decisive.METRICS} | {"clo": clo, "cc_ratio": 1.0 + 0.1 * seed}
                glob = dict(scores) | {"clo": clo - 0.08 - 0.01 * seed}
                out[(rule, seed, f"ours {loss}")] = {"scores": scores,
                                                     "decisive": {"global": {"scores": glob}, "run_seconds": 1.0}}
            out[(rule, seed, "knockoff")] = {"scores": {m: 0.4 for m, *_ in decisive.METRICS},
                                             "decisive": {"run_seconds": 1.0}}
    return out


def test_cells_and_paired_differences_on_fixtures(decisive):
    cells = decisive.cell_scores(fixture_results(decisive))
    assert len(cells) == 2 * (2 * 2 + 1)
    rows = decisive.paired_rows(cells, ["clo"])
    b = [r for r in rows if r["comparison A - B (held fixed)"] == "stolen - global (owner, kl)"]
    assert len(b) == 1
    a_vals = [0.5 + 0.01 * s ** 2 for s in range(3)]
    b_vals = [v - 0.08 - 0.01 * s for s, v in enumerate(a_vals)]
    assert b[0]["mean diff"] == pytest.approx(0.09)
    assert b[0]["p"] == pytest.approx(float(stats.ttest_rel(a_vals, b_vals).pvalue))
    assert b[0]["verdict"] == "A > B"
    c = [r for r in rows if r["comparison A - B (held fixed)"] == "per-class - owner (kl, stolen)"]
    assert c[0]["mean diff"] == pytest.approx(0.1) and c[0]["ci_low"] == pytest.approx(0.1)
    loss = [r for r in rows if r["factor"] == "(a) loss"]
    assert len(loss) == 4 and all(r["mean diff"] == 0 and r["verdict"] == "tied" for r in loss)
    table = decisive.cells_table(cells)
    assert "| owner         | knockoff" in table and "40.0 ± 0.0" in table
    assert "1.100 ± 0.248x" in table  # cc_ratio 1.0, 1.1, 1.2: t(0.975, 2) * 0.1 / sqrt(3)
    assert "+9.0" in decisive.diff_table(rows)
    wide = decisive.diff_table(rows, wide=True)
    assert "| (b) strategy    | stolen - global (owner, kl)" in wide and "+9.0 [" in wide


def test_load_or_run_resumes_from_result_files(decisive, tmp_path, monkeypatch):
    calls = []

    def fake_run(job, cfg, progress):
        calls.append(job)
        return {"config": cfg.to_json(), "scores": {"clo": 0.5}, "decisive": {"run_seconds": 0.0}}

    monkeypatch.setattr(decisive, "run_job", fake_run)
    args = argparse.Namespace(victim="sdn-tiny", dataset="synthetic", query_data="synthetic-ood", budget=100,
                              device="cpu", timing_profile="flops", results=tmp_path, fresh=False, quiet=True)
    jobs = decisive.plan_jobs([0, 1], [0])
    assert [(j.label, j.rule, j.seed) for j in jobs[:3]] == [("ours kl+strategy", "owner", 0),
                                                             ("ours kl+strategy", "per-class", 0),
                                                             ("ours kl+strategy", "owner", 1)]
    assert jobs[4].label == "ours kl" and jobs[-1].label == "knockoff"
    _, counts = decisive.load_or_run(jobs[:4], args, {}, run_missing=False)
    assert counts == {"ran": 0, "reused": 0, "missing": 4} and not calls
    _, counts = decisive.load_or_run(jobs, args, {})
    assert counts == {"ran": 10, "reused": 0, "missing": 0} and len(calls) == 10
    path = jobs[4].path(tmp_path)
    assert json.loads(path.read_text())["config"]["victim_options"] == {"exit_rule": "owner"}
    assert json.loads(path.read_text())["config"]["attack_options"] == {"strategy_weight": 0.0}
    _, counts = decisive.load_or_run(jobs, args, {})
    assert counts == {"ran": 0, "reused": 10, "missing": 0} and len(calls) == 10
    args.budget = 200  # another configuration: nothing is reused
    _, counts = decisive.load_or_run(jobs[:1], args, {})
    assert counts == {"ran": 1, "reused": 0, "missing": 0}
