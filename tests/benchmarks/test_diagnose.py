"""The strategy-gap diagnosis and its script (benchmarks/strategy_gap.py)."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from attacks._strategy import exits_under

ROOT = Path(__file__).resolve().parents[2]


def load_script():
    if "strategy_gap" not in sys.modules:
        spec = importlib.util.spec_from_file_location("strategy_gap", ROOT / "benchmarks" / "strategy_gap.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["strategy_gap"] = module
        spec.loader.exec_module(module)
    return sys.modules["strategy_gap"]


def strategy_gap(*args, **kwargs):
    return load_script().strategy_gap(*args, **kwargs)


def test_gap_separates_threshold_loss_from_substitute_loss():
    rng = np.random.default_rng(0)
    vconf = rng.uniform(0.1, 1.0, (400, 3))
    t = np.array([0.6, 0.7, 0.0])
    vexits = exits_under(vconf, t)
    # a substitute with the victim's ranking at every exit but half as confident at exit 2: the
    # victim's thresholds send exit-2 samples on to exit 3, yet some thresholds reproduce every exit
    sconf = vconf * np.array([1.0, 0.5, 0.5])
    gap = strategy_gap(vconf, vexits, sconf, t, np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0]),
                       query_exits=np.array([0, 0, 1, 2]))
    share2 = float((vexits == 1).mean())
    assert 0.05 < share2 < 0.5
    assert gap.clo == pytest.approx(1 - share2)
    assert gap.cc_ratio > 1.0
    assert gap.clo_best == 1.0 and gap.cc_ratio_best == pytest.approx(1.0)
    rows = {r["victim exit"]: r for r in gap.rows}
    assert rows["2"]["share of test"] == pytest.approx(share2) and rows["2"]["stolen share of test"] == 0.0
    assert rows["2"]["stolen conf at exit"] == pytest.approx(rows["2"]["victim conf at exit"] / 2)
    assert rows["1"]["share of queries"] == 0.5 and rows["3"]["share of queries"] == 0.25


def test_gap_needs_matching_exits():
    with pytest.raises(ValueError, match="same number"):
        strategy_gap(np.ones((4, 3)), np.zeros(4, int), np.ones((4, 2)), np.array([0.5, 0.0]),
                     np.ones(2), np.ones(3), np.zeros(4, int))




def test_script_runs_one_attack_and_reports(capsys):
    mod = load_script()
    rc = mod.main(["--victim-opt", "epochs=1", "--attack", "knockoff", "--attack-opt", "epochs=1",
                   "--budget", "600", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0, out
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert "victim exit" in table[0] and len(table) == 2 + 4  # header, rule, one row per exit of sdn-tiny
    assert "own thresholds" in out and "best thresholds for the test set" in out


def test_script_bad_option_is_one_line(capsys):
    rc = load_script().main(["--attack", "nosuch", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error:") and err.count("\n") == 1
