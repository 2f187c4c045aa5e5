"""The example external defense package (examples/stealbench-defense-example), installed for real
(pip builds and installs it into a private folder put on PYTHONPATH, so the shared environment is
left alone): listed by ``python -m benchmark list``, runs with ``--defense quantized-latency``, is
submitted to and validated by the leaderboard, and the contract tests pick it up by themselves."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "stealbench-defense-example"
TINY = ["--victim-opt", "epochs=1", "--attack-opt", "epochs=1", "--budget", "600", "--timing-profile", "flops",
        "--quiet"]


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    work = tmp_path_factory.mktemp("plugin")
    src = work / "src"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = work / "site"
    p = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                        "--target", str(site), str(src)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert list(site.glob("stealbench_defense_example-0.1.0.dist-info/entry_points.txt"))
    return {**os.environ, "PYTHONPATH": str(site)}


def sh(*argv, env, timeout=900):
    return subprocess.run([sys.executable, *map(str, argv)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_listed(plugin_env):
    p = sh("-m", "benchmark", "list", env=plugin_env)
    assert p.returncode == 0, p.stderr
    defenses = p.stdout.split("defenses:")[1].split("victims:")[0]
    assert "quantized-latency" in defenses and "rounded up to a grid" in defenses


def test_runs_submits_and_validates(plugin_env, tmp_path):
    result = tmp_path / "result.json"
    p = sh("-m", "benchmark", "run", "--attack", "ours", "--defense", "quantized-latency", "--defense-opt", "step=0.5",
           *TINY, "--out", result, env=plugin_env)
    assert p.returncode == 0, p.stderr
    r = json.loads(result.read_text())
    assert r["defense"]["name"] == "quantized-latency" and r["defense"]["options"] == {"step": 0.5}
    assert r["defense"]["cost"]["added_latency_mean_s"] > 0 and r["defense"]["cost"]["accuracy_lost"] == 0

    entries = tmp_path / "entries"
    p = sh("-m", "leaderboard", "--entries", entries, "submit", "--from-result", result, env=plugin_env)
    assert p.returncode == 0, p.stderr
    (entry,) = entries.rglob("*.json")
    assert entry.parent.name == "quantized-latency"
    assert json.loads(entry.read_text())["environment"]["plugins"] == {
        "defense": "stealbench-defense-example==0.1.0"}
    p = sh("-m", "leaderboard", "--entries", entries, "validate", env=plugin_env)
    assert p.returncode == 0 and "1 entries, all valid" in p.stdout, p.stdout + p.stderr
    p = sh("-m", "leaderboard", "--entries", entries, "render", "--out", tmp_path / "t.md", env=plugin_env)
    assert p.returncode == 0 and "quantized-latency" in (tmp_path / "t.md").read_text()
    # verify re-runs it in a child process pinned to the recorded numeric environment: the plugin is found there too
    p = sh("-m", "leaderboard", "--entries", entries, "verify", env=plugin_env)
    assert p.returncode == 0 and "numeric environment reproduced; identical" in p.stdout, p.stdout + p.stderr

    # without the package installed, the entry names a defense that does not exist here
    bare = {k: v for k, v in plugin_env.items() if k != "PYTHONPATH"}
    p = sh("-m", "leaderboard", "--entries", entries, "validate", env=bare)
    assert p.returncode == 1 and "unknown defense 'quantized-latency'" in p.stdout
    assert "Traceback" not in p.stdout + p.stderr


def test_contract_tests_cover_the_plugin(plugin_env):
    p = sh("-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/defenses/test_defense_contract.py", "-k", "quantized",
           env=plugin_env)
    assert p.returncode == 0, p.stdout[-3000:]
    # every per-defense contract test ran on it: 8 pass, the zero-setting check is skipped (it has none)
    assert "8 passed, 1 skipped" in p.stdout and "quantized-latency has no zero setting" in p.stdout, p.stdout[-2000:]
