"""Every number on the leaderboard stands: entries record the numeric environment that decides
their numbers; ``verify`` re-runs each under it (bit-identical where it is reproduced, whatever
kernel the calling process would pick), reports what it cannot reproduce as UNVERIFIED (never a
silent skip or pass), and catches a hand edit of any field the table shows; ``render`` ranks
unverified rows last and shows ties; bad arguments and malformed files are one line each."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.environment import is_standard, numeric_environment
from leaderboard.cli import main
from leaderboard.store import Entry, entry_files, entry_relpath, show

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "leaderboard" / "entries"


def lb(*argv) -> int:
    return main([str(a) for a in argv])


def sh(*argv, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "leaderboard", *map(str, argv)], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=600)


def place(root: Path, data: dict) -> Path:
    """Write ``data`` where its configuration and numeric environment put it under ``root``."""
    path = root / entry_relpath(data["config"], data["environment"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    return path


@pytest.fixture(scope="module")
def crypto(tmp_path_factory):
    """An exact-extraction entry (relu-mlp + cryptanalytic, seconds to run) submitted through the CLI."""
    root = tmp_path_factory.mktemp("crypto") / "entries"
    assert lb("--entries", root, "submit", "--attack", "cryptanalytic", "--victim", "relu-mlp", "--quiet") == 0
    (path,) = entry_files(root)
    return path, json.loads(path.read_text())


@pytest.fixture
def multi(crypto):
    """A committed multi-exit entry given the numeric environment of a run made under the standard
    environment (its re-run is faked: ``fake_rerun``), so that edits are judged without minutes of training."""
    src = sorted(COMMITTED.rglob("sdn-tiny-synthetic/jitter/ours-*.json"))[0]
    data = json.loads(src.read_text())
    data["environment"]["numeric"] = copy.deepcopy(crypto[1]["environment"]["numeric"])
    data["environment"]["torch_threads"] = 1
    return data


def fake_rerun(monkeypatch, result: dict) -> None:
    """``verify`` gets ``result`` as the re-run of every entry (the real re-run is tested separately)."""
    import leaderboard.child

    monkeypatch.setattr(leaderboard.child, "run_child", lambda *a, **k: copy.deepcopy(result))


# ---- 1. the numeric environment is recorded and reproduced -----------------------------------------

def test_results_record_their_numeric_environment(crypto):
    _, data = crypto
    numeric = data["environment"]["numeric"]
    assert numeric["blas"] and all(b["architecture"] == "Haswell" for b in numeric["blas"])  # the kernel in use
    assert numeric["torch"]["cpu_capability"] == "AVX2" and numeric["torch"]["num_threads"] == 1
    assert numeric["env"]["OPENBLAS_CORETYPE"] == "Haswell" and numeric["numpy"] and numeric["cpu"]["isa"]
    assert is_standard(numeric) and not is_standard(numeric_environment())  # submit runs under STANDARD


def test_verify_pins_the_recorded_kernel_whatever_the_caller_uses(crypto, tmp_path):
    """A caller whose OpenBLAS would pick another kernel (SkylakeX, Sandybridge: 5117 queries instead
    of 5590, other weight errors) still re-runs the entry bit-identical: the child is pinned."""
    path, _ = crypto
    for kernel in ("SkylakeX", "Sandybridge"):
        p = sh("verify", path, env={"OPENBLAS_CORETYPE": kernel})
        assert p.returncode == 0, p.stdout + p.stderr
        assert f"ok    {show(path)}" in p.stdout and "numeric environment reproduced; identical" in p.stdout


def test_verify_says_when_the_recorded_kernel_cannot_run_here(crypto, monkeypatch, capsys):
    import benchmark.environment

    path, _ = crypto
    here = benchmark.environment.cpu()
    monkeypatch.setattr(benchmark.environment, "cpu", lambda: {**here, "isa": ["sse4_2", "avx"]})
    assert lb("verify", path) == 1
    out, err = capsys.readouterr()
    assert f"UNVERIFIED {show(path)}: " in out and "OpenBLAS core type Haswell needs the CPU flag avx2" in out
    assert "checked within tolerance" in out and "1 unverified" in err
    assert lb("verify", "--allow-unverified", path) == 0


def test_a_legacy_entry_is_unverified_never_ok(crypto, tmp_path, capsys):
    _, data = crypto
    legacy = copy.deepcopy(data)
    del legacy["environment"]["numeric"]  # as recorded before results carried their numeric environment
    path = place(tmp_path / "entries", legacy)
    assert lb("verify", path) == 1
    out = capsys.readouterr().out
    assert f"UNVERIFIED {show(path)}: recorded without a numeric environment" in out


# ---- 2. device, labels_changed, acts_on ---------------------------------------------------------------

def test_a_cuda_entry_is_rerun_on_the_cpu_and_never_skipped(crypto, tmp_path, capsys):
    _, data = crypto
    cuda = copy.deepcopy(data)
    cuda["config"]["device"] = cuda["environment"]["device"] = "cuda"
    assert entry_relpath(cuda["config"], cuda["environment"]) != entry_relpath(data["config"], data["environment"])
    cuda["scores"]["queries"] += 200  # within the tolerance for query counts where nothing is reproduced
    path = place(tmp_path / "entries", cuda)
    assert lb("verify", path) == 1
    out, err = capsys.readouterr()
    assert f"UNVERIFIED {show(path)}: made on cuda" in out and "skip" not in out + err
    cuda["scores"]["neurons_recovered"] = 0.8
    path.write_text(json.dumps(cuda))
    assert lb("verify", "--allow-unverified", path) == 1
    assert f"FAIL  {show(path)}: scores.neurons_recovered recorded 0.8" in capsys.readouterr().out


def test_device_is_in_the_name_hash(crypto, tmp_path, capsys):
    path, data = crypto
    edited = copy.deepcopy(data)
    edited["config"]["device"] = edited["environment"]["device"] = "cuda"
    root = tmp_path / "entries"
    dest = root / path.relative_to(path.parents[2])
    dest.parent.mkdir(parents=True)
    dest.write_text(json.dumps(edited))
    assert lb("--entries", root, "validate") == 1
    assert f"{show(dest)}: misplaced" in capsys.readouterr().out


def test_labels_changed_and_acts_on_are_checked(crypto, tmp_path, monkeypatch, capsys):
    _, data = crypto
    root = tmp_path / "entries"
    for field, value, message in (("labels_changed", 1.5, "defense.cost.labels_changed = 1.5 is out of range"),
                                  ("acts_on", "timing", "defense.acts_on is 'timing' but defense 'none' acts on")):
        edited = copy.deepcopy(data)
        (edited["defense"]["cost"] if field == "labels_changed" else edited["defense"])[field] = value
        dest = place(root, edited)
        assert lb("--entries", root, "validate") == 1
        assert f"{show(dest)}: {message}" in capsys.readouterr().out
    edited = copy.deepcopy(data)
    edited["defense"]["cost"]["labels_changed"] = 0.25  # in range: only the re-run can refuse it
    dest = place(root, edited)
    fake_rerun(monkeypatch, data)
    assert lb("verify", dest) == 1
    assert f"FAIL  {show(dest)}: defense.cost.labels_changed recorded 0.25" in capsys.readouterr().out


# ---- 3. tolerance 0 where the environment is reproduced; ties --------------------------------------

def test_a_small_edit_fails_where_the_environment_is_reproduced(multi, tmp_path, monkeypatch, capsys):
    recorded = copy.deepcopy(multi)
    multi["scores"]["clo"] = round(multi["scores"]["clo"] + 0.01, 4)  # inside the old 0.02 tolerance
    path = place(tmp_path / "entries", multi)
    fake_rerun(monkeypatch, recorded)
    assert lb("verify", path) == 1
    out = capsys.readouterr().out
    assert f"FAIL  {show(path)}: scores.clo recorded" in out and "must be equal" in out


def _row(data, defense, clo, standard):
    d = copy.deepcopy(data)
    d["config"]["defense"] = d["defense"]["name"] = defense
    d["defense"]["acts_on"] = {"none": "none", "top1": "output", "rounding": "output"}[defense]
    d["config"]["defense_options"] = d["defense"]["options"] = {}
    d["scores"]["clo"] = clo
    if not standard:
        d["environment"].pop("numeric")
    return Entry(Path(f"{defense}.json"), d)


def test_render_ties_within_tolerance_and_ranks_unverified_rows_last(multi):
    from leaderboard.render import render

    rows = [_row(multi, "none", 0.70, True), _row(multi, "top1", 0.71, True), _row(multi, "rounding", 0.10, False)]
    table = render(rows).split("### Per-attack")[0]
    lines = [line for line in table.splitlines() if line.startswith("|") and "---" not in line][1:]
    assert [line.split("|")[1].strip() for line in lines] == ["1=", "1=", "3"]
    assert "none (reference)" in lines[0] and "top1" in lines[1] and "rounding (unverified)" in lines[2]


def test_render_shows_seed_intervals_and_ties_overlapping_ones(multi):
    """Several seeds: clo as mean [95% t interval]; rows whose intervals overlap share a rank even
    when their means differ by more than the tolerance, rows whose intervals do not are ranked apart."""
    from leaderboard.render import render

    def seeds(defense, clos):
        out = []
        for seed, clo in enumerate(clos):
            e = _row(multi, defense, clo, True)
            e.data["config"]["seed"] = seed
            out.append(Entry(Path(f"{defense}-{seed}.json"), e.data))
        return out

    rows = seeds("none", [0.70, 0.74, 0.78]) + seeds("top1", [0.62, 0.70, 0.75]) + seeds("rounding", [0.20, 0.21, 0.22])
    table = render(rows).split("### Per-attack")[0]
    lines = [line for line in table.splitlines() if line.startswith("|") and "---" not in line][1:]
    assert [line.split("|")[1].strip() for line in lines] == ["1", "2=", "2="]
    assert "0.210 [0.185, 0.235]" in lines[0]  # mean 0.21, sd 0.01, t(0.975, 2) = 4.303
    assert "rounding" in lines[0] and "top1" in lines[1] and "none (reference)" in lines[2]


# ---- 4. nothing passes silently -----------------------------------------------------------------

@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_verify_refuses_a_meaningless_cheap(value, capsys):
    assert lb("verify", "--cheap", value) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --cheap must be a finite number") and len(err.splitlines()) == 1


@pytest.mark.parametrize("command", ["validate", "render", "verify"])
def test_entries_must_be_a_folder_with_entries(command, tmp_path, capsys):
    for where in ("/etc/passwd", tmp_path):
        assert lb("--entries", where, command) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and "all valid" not in err and str(where) in err


def test_a_deeply_nested_entry_is_one_line(tmp_path, capsys):
    root = tmp_path / "entries"
    path = root / "a" / "b" / "c.json"
    path.parent.mkdir(parents=True)
    path.write_text("[" * 100_000 + "]" * 100_000)
    assert lb("--entries", root, "validate") == 1
    out = capsys.readouterr().out
    assert out.splitlines() == [f"{show(path)}: JSON nested 100000 levels deep; an entry nests at most 64"]
    assert lb("verify", path) == 1
    assert "Traceback" not in "".join(capsys.readouterr())
    assert lb("--entries", tmp_path / "new", "submit", "--from-result", path) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "nested 100000 levels deep" in err


# ---- every field the table shows: a hand edit is refused, naming the file and the field ------------

MULTI_EXIT_FIELDS = {  # field -> edited value (each inside its range, so only verify can refuse most)
    "scores.clo": 0.5, "scores.acc": 0.5, "scores.cc_ratio": 1.5, "scores.fidelity": 0.5,
    "scores.clo_and_fidelity": 0.3, "scores.exit_accuracy": 0.5, "scores.queries": 9000,
    "scores.energy_j_per_sample.victim": 0.5, "defense.cost.accuracy_lost": 0.01,
    "defense.cost.added_latency_mean_s": 0.001, "defense.acts_on": "output",
    "config.seed": 3, "config.budget": 20000, "config.defense_options.size": 2.0, "config.attack": "esa",
}
EXACT_FIELDS = {
    "scores.output_agreement": 0.5, "scores.neurons_recovered": 0.6, "scores.max_weight_error_log2": -20.0,
    "scores.queries": 5000, "defense.cost.labels_changed": 0.1, "defense.cost.added_latency_mean_s": 0.001,
}


def _edit(data, dotted, value):
    d = copy.deepcopy(data)
    node = d
    *parents, last = dotted.split(".")
    for key in parents:
        node = node[key]
    node[last] = value
    return d


@pytest.mark.parametrize("family", ["multi-exit", "exact"])
def test_every_shown_field_edited_by_hand_is_refused(family, crypto, multi, tmp_path, monkeypatch, capsys):
    recorded = multi if family == "multi-exit" else crypto[1]
    fields = MULTI_EXIT_FIELDS if family == "multi-exit" else EXACT_FIELDS
    fake_rerun(monkeypatch, recorded)
    for i, (field, value) in enumerate(fields.items()):
        root = tmp_path / f"e{i}"
        path = place(root, recorded)
        path.write_text(json.dumps(_edit(recorded, field, value)))  # edited by hand: the name stays
        code_v = lb("--entries", root, "validate")
        out_v = capsys.readouterr().out
        code_r = lb("verify", path)
        out_r = capsys.readouterr().out
        refused = [line for line in (out_v + out_r).splitlines()
                   if line.startswith((f"{show(path)}: ", f"FAIL  {show(path)}: ", f"UNVERIFIED {show(path)}: "))]
        assert code_v == 1 or code_r == 1, field
        named = field if not field.startswith("config.") else "misplaced"
        assert any(named in line or field in line for line in refused), (field, refused)



def test_parallel_verify_loads_plugins_once(capsys):
    """``--jobs 2``: entries are checked before the re-runs start in parallel (plugin registries load once)."""
    files = [sorted(COMMITTED.rglob(f"relu-mlp-synthetic/{d}/cryptanalytic-*.json"))[0] for d in ("top1", "rounding")]
    p = sh("verify", "--jobs", "2", "--allow-unverified", *files)
    assert p.returncode == 0 and "unknown attack" not in p.stdout, p.stdout + p.stderr
    assert ": 2 ok (numeric environment reproduced, bit-identical)" in p.stdout and "0 failed" in p.stdout


def test_resubmit_replaces_a_legacy_entry(tmp_path, capsys):
    src = sorted(COMMITTED.rglob("relu-mlp-synthetic/top1/cryptanalytic-*.json"))[0]
    legacy = json.loads(src.read_text())
    del legacy["environment"]["numeric"]  # as recorded before results carried their numeric environment
    root = tmp_path / "entries"
    old = place(root, legacy)
    assert lb("--entries", root, "validate") == 0
    assert lb("--entries", root, "resubmit") == 0
    (new,) = entry_files(root)
    data = json.loads(new.read_text())
    assert not old.exists() and is_standard(data["environment"]["numeric"])
    assert lb("--entries", root, "validate") == 0
