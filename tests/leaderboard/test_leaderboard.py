"""The leaderboard: submit writes a valid entry where its configuration says; validate names the
file and the problem for every kind of malformed entry (never a traceback); render is
deterministic and ``--check`` catches a stale table; verify re-runs entries and catches a score
edited by hand; an interrupted submit leaves no partial file."""

import copy
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import benchmark.io
from benchmark.plugins import DEFENSES
from benchmark.result import SCHEMA_VERSION
from leaderboard.cli import main
from leaderboard.schema import canonical_options, check_entry
from leaderboard.store import entry_files, entry_relpath, show
from leaderboard.submit import write_entry
from leaderboard.validate import canonical_config

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--victim-opt", "epochs=1", "--attack-opt", "epochs=1", "--budget", "600", "--quiet"]


def lb(*argv) -> int:
    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One real tiny entry (victim and attack trained 1 epoch, 600 queries), submitted through the CLI."""
    entries = tmp_path_factory.mktemp("tiny") / "entries"
    assert lb("--entries", entries, "submit", "--attack", "ours", "--defense", "jitter", *TINY) == 0
    (path,) = entry_files(entries)
    return path, json.loads(path.read_text())


@pytest.fixture
def entries(tmp_path, tiny):
    """A fresh entries folder holding a copy of the tiny entry."""
    src, data = tiny
    root = tmp_path / "entries"
    dest = root / entry_relpath(data["config"], data["environment"])
    dest.parent.mkdir(parents=True)
    shutil.copy(src, dest)
    return root, dest, copy.deepcopy(data)


# ---- submit ----------------------------------------------------------------------------------------

def test_submit_writes_a_complete_valid_entry_where_its_config_says(tiny):
    path, data = tiny
    cfg = data["config"]
    assert data["schema_version"] == SCHEMA_VERSION
    name = entry_relpath(cfg, data["environment"]).stem[-8:]
    assert path.as_posix().endswith(f"sdn-tiny-synthetic/jitter/ours-s0-{name}.json")
    assert cfg["budget"] == 600 and cfg["timing"] == "simulated" and cfg["timing_profile"] == "flops"
    assert cfg["defense_options"] == {"size": 1.0, "dist": "uniform", "keyed": False}  # every option stated
    assert cfg["attack_options"]["epochs"] == 1 and "alpha" in cfg["attack_options"]
    assert cfg["victim_options"]["epochs"] == 1 and "lr" in cfg["victim_options"]
    assert len(data["environment"]["git_commit"]) == 40 and data["environment"]["stealbench"]
    assert check_entry(data) == []


def test_submit_refuses_to_overwrite(entries, capsys):
    root, path, _ = entries
    before = path.read_bytes()
    t0 = time.perf_counter()
    assert lb("--entries", root, "submit", "--attack", "ours", "--defense", "jitter", *TINY) == 2
    assert time.perf_counter() - t0 < 30  # refused before running, not after
    err = capsys.readouterr().err
    # a working tree with uncommitted code adds submit's own warning line; the error is one line
    lines = [line for line in err.splitlines() if not line.startswith("warning: uncommitted changes")]
    assert "already exists" in err and "never overwritten" in err and len(lines) == 1, err
    assert path.read_bytes() == before


def test_submit_refuses_settings_that_cannot_be_rerun(tmp_path, capsys):
    assert lb("--entries", tmp_path, "submit", "--timing-profile", "calibrated") == 2
    assert "invalid choice" in capsys.readouterr().err
    assert lb("--entries", tmp_path, "submit", "--defense", "nope") == 2
    assert "unknown defense 'nope'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_import_a_benchmark_result(entries, tmp_path):
    """``submit --from-result`` files a result that ``python -m benchmark run`` made (options
    completed from what the run recorded), and refuses a second copy of the same configuration."""
    root, _path, data = entries
    result = copy.deepcopy(data)
    result["config"]["seed"] = 7
    result["config"]["defense_options"] = {}  # as `benchmark run` writes it: only the options given
    result["config"]["attack_options"] = {"epochs": 1}
    src = tmp_path / "result.json"
    src.write_text(json.dumps(result))
    assert lb("--entries", root, "submit", "--from-result", src) == 0
    new = root / entry_relpath(canonical_config({**result["config"], **{
        f"{k}_options": result[k]["options"] for k in ("attack", "defense", "victim")}}), result["environment"])
    assert new.exists() and json.loads(new.read_text())["config"]["defense_options"]["size"] == 1.0
    assert lb("--entries", root, "validate") == 0
    assert lb("--entries", root, "submit", "--from-result", src) == 2


# ---- validate -------------------------------------------------------------------------------------

def _set(data, dotted, value):
    node = data
    *parents, last = dotted.split(".")
    for part in parents:
        node = node[part]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value


MALFORMED = [
    ("missing-field", "scores.clo", KeyError, "missing field scores.clo"),
    ("nan", "scores.clo", math.nan, "scores.clo is NaN"),
    ("infinite", "scores.cc_ratio", math.inf, "scores.cc_ratio is infinite"),
    ("out-of-range", "scores.acc", 1.5, "scores.acc = 1.5 is out of range [0, 1]"),
    ("negative-ratio", "scores.cc_ratio", -0.5, "scores.cc_ratio = -0.5 is out of range (0, inf]"),
    ("queries-over-budget", "scores.queries", 601, "scores.queries = 601 is out of range [1, 600]"),
    ("unknown-defense", "config.defense", "nodefense", "unknown defense 'nodefense'"),
    ("unknown-attack", "config.attack", "ourz", "unknown attack 'ourz'"),
    ("wrong-schema", "schema_version", 99, f"schema_version is 99; this StealBench reads version {SCHEMA_VERSION}"),
    ("incomplete-config", "config.budget", KeyError, "config is incomplete: it lacks 'budget'"),
    ("incomplete-options", "config.attack_options.lr", KeyError, "attack_options lacks 'lr'"),
    ("no-version", "environment.stealbench", KeyError, "missing field environment.stealbench"),
    ("no-commit", "environment.git_commit", None, "environment.git_commit is None"),
    ("calibrated-timing", "config.timing_profile", "calibrated", "timing_profile 'flops'"),
    ("hist-sum", "scores.victim_exit_hist", [0.5, 0.1, 0.1, 0.1], "scores.victim_exit_hist sums to 0.8"),
    ("bad-option", "config.defense_options.size", -1.0, "size must be >= 0"),
]


@pytest.mark.parametrize("case, field, value, message", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_validate_names_the_file_and_the_problem(entries, capsys, case, field, value, message):
    root, path, data = entries
    _set(data, field, value)
    path.write_text(json.dumps(data, indent=1))  # json writes NaN / Infinity literally, as a hand edit would
    assert lb("--entries", root, "validate") == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    hit = [line for line in lines if message in line]
    assert hit, out
    assert all(line.startswith(f"{show(path)}: ") for line in lines)  # every line names the file
    assert "Traceback" not in out + err and "problems in 1 files" in err


def test_validate_duplicate_configuration(entries, capsys):
    root, path, data = entries
    other = root / "sdn-tiny-synthetic" / "jitter" / "copy.json"
    other.write_text(json.dumps(data))
    assert lb("--entries", root, "validate") == 1
    out = capsys.readouterr().out
    # one of the two is the duplicate (and is also not where its configuration puts it)
    dup = [line for line in out.splitlines() if "duplicate configuration" in line]
    assert len(dup) == 1 and show(other) in dup[0] + out and show(path) in dup[0]
    assert f"{show(other)}: misplaced" in out


def test_validate_duplicate_spelled_differently(entries, capsys):
    """``size: 1`` and ``size: 1.0`` are the same configuration."""
    root, _path, data = entries
    data["config"]["defense_options"]["size"] = 1
    other = root / "elsewhere.json"
    other.write_text(json.dumps(data))
    assert lb("--entries", root, "validate") == 1
    assert "duplicate configuration" in capsys.readouterr().out


def test_an_entry_made_before_a_plugin_gained_an_option_stays_valid(entries, capsys):
    """A plugin that gains an option (with a default) does not invalidate or move older entries,
    and a new entry with that option at its default is a duplicate of the old one."""
    root, path, data = entries
    for block in (data["config"]["defense_options"], data["defense"]["options"]):
        del block["keyed"]  # as if the entry was made before jitter had `keyed`
    path.unlink()
    old = root / entry_relpath(data["config"], data["environment"])
    old.parent.mkdir(parents=True, exist_ok=True)
    old.write_text(json.dumps(data))
    assert lb("--entries", root, "validate") == 0
    data["config"]["defense_options"]["keyed"] = False
    data["defense"]["options"]["keyed"] = False
    new = root / entry_relpath(data["config"], data["environment"])
    assert new != old
    new.write_text(json.dumps(data))
    assert lb("--entries", root, "validate") == 1
    assert "duplicate configuration" in capsys.readouterr().out


def test_validate_unreadable_and_leftover_files(entries, capsys):
    root, path, _ = entries
    path.write_text(path.read_text()[:200])  # truncated by hand
    (path.parent / f".{path.name}.abc123.tmp").write_text("{")  # what a killed writer leaves
    assert lb("--entries", root, "validate") == 1
    out = capsys.readouterr().out
    assert f"{show(path)}: not valid JSON" in out
    assert "temporary file left by an interrupted write" in out


def test_validate_a_clean_folder(entries, capsys):
    root, _, _ = entries
    assert lb("--entries", root, "validate") == 0
    assert "1 entries, all valid" in capsys.readouterr().out


def test_validate_cli_has_no_traceback(entries):
    root, path, data = entries
    data["scores"]["clo"] = "high"
    data["config"] = "not a table"
    path.write_text(json.dumps(data))
    p = subprocess.run([sys.executable, "-m", "leaderboard", "--entries", str(root), "validate"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 1 and "Traceback" not in p.stdout + p.stderr
    assert "config must be a JSON object" in p.stdout and "scores.clo is 'high'" in p.stdout


# ---- render ---------------------------------------------------------------------------------------

def _variant(data, defense, attack, clo, acc, seed=0, latency=None):
    d = copy.deepcopy(data)
    cfg = d["config"]
    cfg["defense"], cfg["attack"], cfg["seed"] = defense, attack, seed
    cfg["defense_options"] = canonical_options("defense", defense, {})
    cfg["attack_options"] = canonical_options("attack", attack, {"epochs": 1})
    d["defense"].update(name=defense, options=cfg["defense_options"], acts_on=DEFENSES[defense].acts_on)
    d["attack"].update(name=attack, options=cfg["attack_options"])
    d["scores"].update(clo=clo, acc=acc)
    d["defense"]["cost"]["added_latency_mean_s"] = latency if latency is not None else 0.0
    return d


def test_render_ranks_defenses_by_the_strongest_attack(tmp_path, tiny, capsys):
    _, data = tiny
    root = tmp_path / "entries"
    for d in (_variant(data, "none", "ours", 0.80, 0.85), _variant(data, "none", "knockoff", 0.40, 0.88),
              _variant(data, "padding", "ours", 0.30, 0.70, latency=0.004),
              _variant(data, "padding", "knockoff", 0.45, 0.80, latency=0.004),
              _variant(data, "padding", "knockoff", 0.55, 0.80, seed=1, latency=0.004),
              _variant(data, "top1", "ours", 0.60, 0.50)):
        write_entry(d, root)
    table = tmp_path / "LEADERBOARD.md"
    assert lb("--entries", root, "render", "--out", table) == 0
    text = table.read_text()
    first = text.split("### Per-attack detail")[0].splitlines()
    rows = [line for line in first if re.match(r"\|\s+\d+ \|", line)]  # ranked rows, not header or rule
    # padding: strongest attack is knockoff (mean clo over 2 seeds 0.50) -> rank 1; top1 0.60; none 0.80
    assert rows[0].split("|")[2].strip() == "padding" and "knockoff" in rows[0] and "0.500" in rows[0]
    assert rows[1].split("|")[2].strip() == "top1" and "0.600" in rows[1]
    assert "none (reference)" in rows[2] and "+0.000" in rows[2]
    assert "-0.300" in rows[0]  # Δclo vs none
    assert "4.0000" in rows[0]  # added latency, ms
    assert "### Per-attack detail: sdn-tiny on synthetic" in text
    # deterministic: same entries, same bytes; --check agrees, then catches a stale table
    assert lb("--entries", root, "render", "--check", "--out", table) == 0
    before = table.read_bytes()
    assert lb("--entries", root, "render", "--out", table) == 0 and table.read_bytes() == before
    write_entry(_variant(data, "rounding", "ours", 0.7, 0.8), root)
    capsys.readouterr()
    assert lb("--entries", root, "render", "--check", "--out", table) == 1
    assert "is not what the entries render to" in capsys.readouterr().out
    table.write_text(before.decode().replace("0.500", "0.100"))
    assert lb("--entries", root, "render", "--check", "--out", table) == 1


def test_render_refuses_invalid_entries(entries, tmp_path, capsys):
    root, path, data = entries
    data["scores"]["clo"] = 2.0
    path.write_text(json.dumps(data))
    assert lb("--entries", root, "render", "--out", tmp_path / "t.md") == 1
    assert "scores.clo = 2.0 is out of range" in capsys.readouterr().out
    assert not (tmp_path / "t.md").exists()


def test_committed_leaderboard_is_valid_and_rendered(capsys):
    assert lb("validate") == 0
    assert lb("render", "--check") == 0


# ---- verify ---------------------------------------------------------------------------------------

def test_verify_reruns_exactly_and_catches_a_tampered_score(entries, capsys):
    root, path, data = entries
    assert lb("--entries", root, "verify", "--exact") == 0
    out = capsys.readouterr().out
    assert f"ok    {show(path)}" in out and "numeric environment reproduced" in out and "1 ok" in out
    data["scores"]["clo"] = round(data["scores"]["clo"] + 0.1, 4) if data["scores"]["clo"] < 0.9 else 0.5
    path.write_text(json.dumps(data, indent=2))
    assert lb("--entries", root, "validate") == 0  # still a well-formed entry...
    assert lb("--entries", root, "verify") == 1  # ...but not what its configuration produces
    out, err = capsys.readouterr()
    assert f"FAIL  {show(path)}: scores.clo recorded" in out and "must be equal" in out  # reproduced: exact
    assert "0 ok" in err and "1 failed" in err and "Traceback" not in out + err


def test_verify_selects_cheap_entries_and_a_fixed_sample(tmp_path):
    from leaderboard.verify import select

    files = []
    for i in range(10):
        files.append(tmp_path / f"{i}.json")
        files[-1].write_text(json.dumps({"scores": {"attack_seconds": 10.0 * i}}))
    assert select(files, 3, 0) == select(list(reversed(files)), 3, 0)  # the same draw every time
    assert len(select(files, 3, 0)) == 3 and select(files, None, 0) == files and select(files, 20, 0) == files
    assert select(files, None, 0, cheap=25) == files[:3]
    both = select(files, 2, 0, cheap=25)
    assert len(both) == 5 and set(files[:3]) <= set(both)


def test_verify_compare_tolerances(tiny):
    from leaderboard.verify import compare

    _, data = tiny
    other = copy.deepcopy(data)  # per-metric tolerances: where the numeric environment is not reproduced
    other["scores"]["clo"] += 0.06
    other["scores"]["cc_ratio"] *= 1.08
    other["scores"]["attack_seconds"] *= 10  # wall clock: never compared
    assert compare(data, other)[0] == []
    assert len(compare(data, other, exact=True)[0]) == 2
    other["scores"]["queries"] -= 1
    other["scores"]["clo"] += 0.02
    problems = compare(data, other)[0]
    assert any(p.startswith("scores.queries") and "must be equal" in p for p in problems)
    assert any(p.startswith("scores.clo") and "tolerance 0.07 absolute" in p for p in problems)


def test_verify_checks_a_re_run_on_another_cpu_vendor_within_tolerance():
    from benchmark.environment import cpu_vendor
    from leaderboard.verify import vendor_reason

    amd = {"cpu": {"model": "AMD EPYC"}}  # an entry recorded before the vendor was
    intel = {"cpu": {"model": "Intel(R) Xeon(R) Processor", "vendor": "GenuineIntel"}}
    assert cpu_vendor(amd) == "AuthenticAMD" and cpu_vendor(intel) == "GenuineIntel"
    assert cpu_vendor({"cpu": {"model": "QEMU Virtual CPU"}}) is None
    reason = vendor_reason(amd, intel)
    assert "AuthenticAMD" in reason and "GenuineIntel" in reason
    assert vendor_reason(intel, intel) == "" and vendor_reason(amd, {"cpu": {}}) == ""  # unknown: no excuse


def test_verify_rejects_an_invalid_entry_without_rerunning(entries, capsys):
    root, path, data = entries
    data["schema_version"] = 0
    path.write_text(json.dumps(data))
    t0 = time.perf_counter()
    assert lb("--entries", root, "verify") == 1
    assert time.perf_counter() - t0 < 30
    assert "does not validate: schema_version is 0" in capsys.readouterr().out


# ---- atomic writes --------------------------------------------------------------------------------

def test_write_interrupted_mid_file_leaves_nothing(tmp_path, tiny, monkeypatch):
    _, data = tiny
    d = copy.deepcopy(data)
    d["config"]["seed"] = 5

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(benchmark.io.os, "fsync", interrupted)  # the bytes are written, not yet renamed
    root = tmp_path / "entries"
    with pytest.raises(KeyboardInterrupt):
        write_entry(d, root)
    assert [p for p in root.rglob("*") if p.is_file()] == []


def test_killed_submit_leaves_no_file(tmp_path):
    root, cache = tmp_path / "entries", tmp_path / "cache"
    env = {**os.environ, "STEALBENCH_CACHE": str(cache)}
    proc = subprocess.Popen([sys.executable, "-m", "leaderboard", "--entries", str(root), "submit", "--attack",
                             "ours", "--defense", "none", "--seed", "3", *TINY], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not list(cache.rglob("*.lock")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)  # wait until the run is under way (the victim zoo takes its lock)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=240)
    assert proc.returncode == 130 and "no entry was half-written" in err and "Traceback" not in err
    assert not root.exists() or [p for p in root.rglob("*") if p.is_file()] == []


# ---- exact extraction (relu-mlp) ------------------------------------------------------------------

def test_exact_extraction_entry(tmp_path, capsys):
    """The cryptanalytic attack's score family: submitted, validated, rendered, verified bit for bit."""
    root = tmp_path / "entries"
    assert lb("--entries", root, "submit", "--attack", "cryptanalytic", "--victim", "relu-mlp", "--quiet") == 0
    (path,) = entry_files(root)
    assert path.parent.parent.name == "relu-mlp-synthetic"
    data = json.loads(path.read_text())
    assert check_entry(data) == [] and data["config"]["attack_options"]["layers"] == "10-5-5-1"
    assert lb("--entries", root, "render", "--out", tmp_path / "t.md") == 0
    assert "## Exact extraction (ReLU networks)" in (tmp_path / "t.md").read_text()
    assert lb("--entries", root, "verify", "--exact") == 0
    capsys.readouterr()
    data["scores"]["output_agreement"] = math.nan
    data["scores"]["neurons_recovered"] = 1.2
    path.write_text(json.dumps(data))
    assert lb("--entries", root, "validate") == 1
    out = capsys.readouterr().out
    assert "scores.output_agreement is NaN" in out and "scores.neurons_recovered = 1.2 is out of range" in out


def _leaves(node, path=()):
    if isinstance(node, dict):
        for key, value in node.items():
            if key not in ("details", "latency_profile"):  # long lists of numbers: sampled by the NaN sweep test
                yield from _leaves(value, (*path, key))
    yield path


@pytest.mark.parametrize("bad", [None, "x", [], {}, math.nan, -1, True, 10**30], ids=repr)
def test_validate_never_crashes(bad):
    """Any field of a real entry replaced by a value of the wrong kind: problems, never an exception."""
    src = sorted((ROOT / "leaderboard" / "entries").rglob("ours-*.json"))[0]
    data = json.loads(src.read_text())
    for path in _leaves(data):
        if not path:
            continue
        d = copy.deepcopy(data)
        node = d
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = bad
        problems = check_entry(d)
        assert all(isinstance(p, str) and "\n" not in p for p in problems)
