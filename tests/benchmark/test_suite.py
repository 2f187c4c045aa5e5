"""``benchmark.evaluate``: the one-call Python API for defense authors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch

from benchmark import evaluate, summarize
from benchmark.api import Defense, Response
from benchmark.config import RunConfig
from benchmark.errors import ConfigError, StealBenchError
from benchmark.runner import run

FAST = {"epochs": 1, "budget": 600, "attack_options": {"knockoff": {"epochs": 1}}, "timing_profile": "flops"}


@dataclass(frozen=True)
class Shuffle(Defense):
    """An unregistered output defense: answers with the probabilities rolled one class over."""

    acts_on = "output"

    def apply(self, state, x, response: Response) -> Response:
        return Response(torch.roll(response.probs, 1, dims=1), response.latency)


def test_a_registered_defense_scores_as_the_cli_does():
    runs = evaluate("rounding", attacks=["knockoff"], seeds=[0], **FAST)
    assert list(runs["attack"]) == ["knockoff"] and list(runs["seed"]) == [0]
    cfg = RunConfig(attack="knockoff", defense="rounding", budget=600, timing_profile="flops",
                    attack_options={"epochs": 1}, victim_options={"epochs": 1})
    direct = run(cfg, progress=False).to_json()
    for key in ("acc", "clo", "cc_ratio", "fidelity"):
        assert runs[key].iloc[0] == pytest.approx(direct["scores"][key], abs=0)
    assert runs["accuracy_lost"].iloc[0] == pytest.approx(direct["defense"]["cost"]["accuracy_lost"], abs=0)


def test_an_unregistered_defense_instance_is_evaluated_as_it_is():
    runs = evaluate(Shuffle(), attacks=["knockoff"], seeds=[0], **FAST)
    assert list(runs["defense"]) == ["Shuffle"]
    # rolling the classes costs the owner nearly all of its accuracy: the instance really served
    assert runs["accuracy_lost"].iloc[0] > 0.5
    table = summarize(runs)
    assert table.iloc[0]["seeds"] == 1 and np.isnan(table.iloc[0]["acc_ci"])


def test_summary_interval_is_student_t():
    runs = pd.DataFrame({"attack": ["a"] * 3 + ["b"] * 3, "seed": [0, 1, 2] * 2,
                         "acc": [0.5, 0.6, 0.7, 0.1, 0.1, 0.1], "clo": [0.2, 0.3, 0.4, 0.9, 0.9, 0.9]})
    table = summarize(runs)
    a = table[table["attack"] == "a"].iloc[0]
    assert a["acc"] == pytest.approx(0.6)
    assert a["acc_ci"] == pytest.approx(4.302652729911275 * 0.1 / 3 ** 0.5)  # t(0.975, 2) * sd / sqrt(n)
    assert table.iloc[-1]["attack"] == "worst case (b)"


@pytest.mark.parametrize("kwargs, match", [
    ({"defense": "nosuch"}, "unknown defense"),
    ({"defense": 5}, "registered name or a Defense"),
    ({"attacks": ["nosuch"]}, "unknown attack"),
    ({"attacks": []}, "at least one attack"),
    ({"seeds": []}, "at least one seed"),
])
def test_bad_arguments_fail_before_any_run(kwargs, match, monkeypatch):
    import benchmark.runner

    monkeypatch.setattr(benchmark.runner, "run", lambda *a, **k: pytest.fail("ran"))
    with pytest.raises((ConfigError, StealBenchError), match=match):
        evaluate(**kwargs)


def test_the_documented_example_runs(capsys):
    """docs/python-api.md's example, run as written."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "python-api.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    namespace: dict = {"__name__": "docs_example"}
    exec(compile(code, "docs/python-api.md", "exec", dont_inherit=True), namespace)
    out = capsys.readouterr().out
    assert "worst case (knockoff)" in out
    runs = namespace["runs"]
    assert list(runs["defense"]) == ["Sharpen", "Sharpen"]
    assert (runs["accuracy_lost"].abs() < 1e-9).all()  # sharpening keeps every top-1 label
