"""CONTRIBUTING.md's defense walkthrough, run as written, so that the guide cannot drift from the code.

The python blocks run in order in one namespace (tracebacks point at CONTRIBUTING.md's own line
numbers); the defense they define is registered under a temporary name (way (a) of the guide) and
removed afterwards. The toml block is checked against the example package it names. Every line of
the shell blocks is either run here (in-process, or the contract tests in a child process with the
walkthrough's defense registered by a pytest plugin) or skipped with the reason it is too
expensive; a shell line this file does not know fails, so a new command in the guide needs a
decision here. Same approach as ``docs/python-api.md``'s example in ``tests/benchmark/test_suite.py``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import torch

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "CONTRIBUTING.md"
TMP_NAME = "contributing-walkthrough"  # the registry name the example is registered under here
TINY = ["--victim-opt", "epochs=1", "--attack-opt", "epochs=1", "--budget", "600", "--timing-profile", "flops",
        "--quiet"]


def blocks(lang: str) -> list[tuple[int, str]]:
    """The guide's fenced blocks of ``lang``: (line number of the block's first line, code)."""
    text = GUIDE.read_text()
    found = []
    for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
        if m.group(1) == lang:
            found.append((text.count("\n", 0, m.start(2)) + 1, m.group(2)))
    return found


def walkthrough_class() -> type:
    """Run the guide's python blocks in order in one namespace; the Defense subclass they define."""
    from benchmark.api.defense import Defense

    namespace: dict = {"__name__": "contributing_walkthrough"}
    for line, code in blocks("python"):
        # padded so that a failing line is reported with its line number in CONTRIBUTING.md
        exec(compile("\n" * (line - 1) + code, str(GUIDE), "exec", dont_inherit=True), namespace)
    defined = [v for v in namespace.values()
               if isinstance(v, type) and issubclass(v, Defense) and v is not Defense]
    assert len(defined) == 1, f"the walkthrough should define one defense, found {defined}"
    return defined[0]


def shell_lines() -> list[str]:
    return [ln.strip() for _, code in blocks("bash") for ln in code.splitlines() if ln.strip()]


@pytest.fixture
def registered(monkeypatch):
    """The walkthrough's defense, registered as ``TMP_NAME`` for this test only."""
    from benchmark.plugins import DEFENSES

    DEFENSES.names()  # in-tree plugins and entry points loaded first, so the copy below holds them
    monkeypatch.setattr(DEFENSES, "_items", dict(DEFENSES._items))  # the original comes back afterwards
    cls = walkthrough_class()
    DEFENSES.register(TMP_NAME)(cls)  # way (a), step 1: @DEFENSES.register("<name>")
    yield cls
    assert TMP_NAME in DEFENSES._items


def test_the_guide_imports_the_real_contract():
    code = "\n".join(c for _, c in blocks("python"))
    assert "from benchmark.api.defense import Defense" in code
    for module in re.findall(r"^from ([\w.]+) import", code, re.M):
        __import__(module)  # every module the guide imports exists


def test_the_walkthrough_defense_follows_the_contract(registered):
    from helpers import tiny_oracle

    from benchmark.api.defense import Defense

    cls = registered
    assert issubclass(cls, Defense) and dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen
    assert cls.acts_on == "timing" and cls.name == TMP_NAME
    assert [f.name for f in dataclasses.fields(cls)] == ["step"]
    inner = tiny_oracle(budget=100)
    defended = cls(step=2.0).wrap(inner, seed=0)
    x = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    r = defended.query(x)
    raw = defended.last_raw
    tick = 2e-3
    assert torch.equal(r.probs, raw.probs)
    assert (r.latency >= raw.latency).all() and (r.latency - raw.latency < tick + 1e-12).all()
    assert torch.allclose(r.latency / tick, torch.round(r.latency / tick))  # on the coarse grid
    assert defended.used == 16 and defended.cost()["added_latency_mean_s"] > 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        cls().step = 3.0


def test_list_shows_it(registered, capsys):
    """Way (a), step 3: ``python -m benchmark list`` shows it, with its docstring's first line."""
    from benchmark.cli import main

    assert main(["list", "--options"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.split()[:1] == [TMP_NAME])
    assert "Latency rounded up to a coarse grid (timing defense)." in line
    assert "step = 1.0" in out


def test_run_runs_it(registered, tmp_path, capsys):
    """Way (a), step 3: ``python -m benchmark run --defense <name>`` (tiny configuration), with an option."""
    from benchmark.cli import main

    out = tmp_path / "r.json"
    assert main(["run", "--attack", "knockoff", "--defense", TMP_NAME, "--defense-opt", "step=2", *TINY,
                 "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["config"]["defense"] == TMP_NAME
    assert r["defense"]["cost"]["added_latency_mean_s"] > 0 and r["defense"]["cost"]["accuracy_lost"] == 0


def test_the_entry_point_block_matches_the_example_package():
    """Way (b): the guide's toml is what the complete example package declares, and it resolves."""
    (_, code), = blocks("toml")
    guide = tomllib.loads(code)["project"]["entry-points"]["stealbench.defenses"]
    example = ROOT / "examples" / "stealbench-defense-example"
    declared = tomllib.loads((example / "pyproject.toml").read_text())["project"]["entry-points"]
    assert declared["stealbench.defenses"] == guide
    (target,) = guide.values()
    module, attr = target.split(":")
    sys.path.insert(0, str(example))
    try:
        from benchmark.api.defense import Defense

        assert issubclass(getattr(__import__(module), attr), Defense)
    finally:
        sys.path.remove(str(example))


# Every line of the shell blocks, and how this file handles it: a test function that runs it, or
# the reason it is not run.
RUN = {
    ".venv/bin/python -m pytest tests/defenses/test_defense_contract.py": "test_contract_tests_include_it",
    'for attack in $(.venv/bin/python -c "from benchmark.plugins import ATTACKS; print(*ATTACKS.names())"); do':
        "test_submit_loop_arguments",
    "OMP_NUM_THREADS=1 .venv/bin/python -m leaderboard submit --attack \"$attack\" --defense <name> --seed 0 "
    "--budget 10000": "test_submit_loop_arguments",
    "done": "test_submit_loop_arguments",
    ".venv/bin/python -m leaderboard validate          # every entry well-formed, no duplicates":
        "test_validate_and_render",
    ".venv/bin/python -m leaderboard render            # rewrite leaderboard/LEADERBOARD.md":
        "test_validate_and_render",
}
NOT_RUN = {
    "OMP_NUM_THREADS=1 .venv/bin/python -m leaderboard submit --attack \"$attack\" --defense <name> --seed 0 "
    "--budget 10000": "each submit is a full run at the leaderboard's fixed settings (budget 10,000, default "
                      "victim, its own process), one per attack: too long for the test suite; its arguments are "
                      "parsed here and the run path is covered by test_run_runs_it and tests/leaderboard/",
    "git add leaderboard/entries leaderboard/LEADERBOARD.md && git commit":
        "changes the checkout's git history; never run by a test",
}


def test_every_shell_line_is_run_or_explained():
    unknown = [ln for ln in shell_lines() if ln not in RUN and ln not in NOT_RUN]
    assert not unknown, f"CONTRIBUTING.md has shell lines this test neither runs nor explains: {unknown}"
    assert all(name in globals() for name in RUN.values())


@pytest.mark.parametrize("line", list(NOT_RUN))
def test_expensive_lines_are_skipped_with_a_reason(line):
    if line not in shell_lines():
        pytest.fail(f"no longer in CONTRIBUTING.md, remove it from NOT_RUN: {line}")
    pytest.skip(f"not run: `{line}`: {NOT_RUN[line]}")


PLUGIN = f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from benchmark.plugins import DEFENSES
from test_contributing import walkthrough_class
DEFENSES.register({TMP_NAME!r})(walkthrough_class())
"""


def test_contract_tests_include_it(tmp_path):
    """``pytest tests/defenses/test_defense_contract.py`` with the walkthrough's defense registered (by a pytest
    plugin in the child process, as an installed plugin would be), only its parametrisations."""
    (tmp_path / "walkthrough_plugin.py").write_text(PLUGIN)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "walkthrough_plugin", "-p", "no:cacheprovider",
                           "tests/defenses/test_defense_contract.py", "-k", TMP_NAME],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    passed = re.search(r"(\d+) passed", done.stdout)
    assert passed and int(passed.group(1)) >= 5, done.stdout[-2000:]


def test_submit_loop_arguments(registered, capsys):
    """The loop's attack list is the registered attacks, and ``submit``'s arguments parse as written."""
    from benchmark.plugins import ATTACKS
    from leaderboard.cli import build_parser

    loop = next(ln for ln in shell_lines() if ln.startswith("for attack in"))
    exec(re.search(r'-c "(.*?)"\)', loop).group(1), {})
    attacks = capsys.readouterr().out.split()
    assert attacks == ATTACKS.names() and attacks
    submit = next(ln for ln in shell_lines() if " leaderboard submit " in ln)
    argv = submit.split(" leaderboard ", 1)[1].replace("<name>", TMP_NAME).split()
    for attack in attacks:
        args = build_parser().parse_args([a.replace('"$attack"', attack) for a in argv])
        assert (args.attack, args.defense, args.seed, args.budget) == (attack, TMP_NAME, 0, 10000)


def test_validate_and_render(tmp_path, capsys):
    """``validate`` on the repository's entries; ``render`` as written but into a scratch file, so that
    the checkout's table is not rewritten."""
    from leaderboard.cli import main

    assert main(["validate"]) == 0
    table = tmp_path / "LEADERBOARD.md"
    assert main(["render", "--out", str(table)]) == 0
    assert table.read_text().count("\n|") > 2
