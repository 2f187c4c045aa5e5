"""Bad input to the CLI: one line on stderr, exit status 2, no traceback, nothing written, and
refused before the work (not after it)."""

import json
import math
import os
import typing
from pathlib import Path

import pytest
import torch

import benchmark.runner
from benchmark.cli import main
from benchmark.errors import ConfigError, StealBenchError

TINY = ["--victim-opt", "epochs=1", "--attack-opt", "epochs=1", "--budget", "600", "--timing-profile", "flops",
        "--quiet"]


@pytest.fixture
def no_run(monkeypatch):
    """Any run that gets past the up-front checks is a test failure (and costs no minutes)."""
    def refuse(*args, **kwargs):
        raise AssertionError("the run started although its input was bad")

    monkeypatch.setattr(benchmark.runner, "run", refuse)


def one_line_error(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err[:2000]
    for fragment in fragments:
        assert fragment in err, err
    return err


# ---- tracebacks where one line was promised -----------------------------------------------------

@pytest.mark.parametrize("seed", [str(2**64), str(2**63), str(2**32)])
def test_huge_seed_is_one_line(seed, no_run, capsys, tmp_path):
    out = tmp_path / "r.json"
    assert main(["run", "--seed", seed, "--out", str(out)]) == 2
    one_line_error(capsys, "--seed must be an integer from 0 to 4294967295")
    assert not out.exists()


def test_huge_seed_in_a_config_file_or_sweep_is_one_line(no_run, capsys, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"seed = {2**64 - 1}\ndata_seed = 0\n")
    assert main(["run", "--config", str(cfg), "--out", str(tmp_path / "r.json")]) == 2
    one_line_error(capsys, "--seed must be")
    assert main(["sweep", "--seeds", str(2**64), "--dry-run", "--out", str(tmp_path / "s")]) == 2
    one_line_error(capsys, "seeds must be integers from 0 to")
    assert main(["sweep", "--data-seed", str(2**64), "--dry-run", "--out", str(tmp_path / "s")]) == 2
    one_line_error(capsys, "--data-seed must be")


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "1e999"])
def test_non_finite_bandwidth_is_refused_before_the_run(value, capsys, tmp_path):
    out = tmp_path / "r.json"
    assert main(["run", "--attack-opt", f"bandwidth={value}", *TINY, "--out", str(out)]) == 2
    one_line_error(capsys, "bandwidth must be scott, silverman or a positive number")
    assert not out.exists()


def test_no_numeric_option_takes_nan_or_infinity():
    """Every float option of every plugin, and ``bandwidth`` (a rule name or a number)."""
    from benchmark.options import build_plugin, option_fields
    from benchmark.plugins import ATTACKS, DEFENSES, VICTIMS

    cases = [("attack", ATTACKS, "ours", "bandwidth")]
    for kind, registry in (("attack", ATTACKS), ("defense", DEFENSES), ("victim", VICTIMS)):
        for name in registry.names():
            hints = typing.get_type_hints(registry[name])
            cases += [(kind, registry, name, f) for f in option_fields(registry[name]) if "float" in str(hints[f])]
    assert len(cases) > 20
    for kind, registry, name, field in cases:
        for value in ("nan", "inf", "-inf", "1e999", float("nan"), float("inf")):
            with pytest.raises(ConfigError, match=field):
                build_plugin(registry[name], {field: value}, kind)


@pytest.mark.parametrize("content", [b"\x80\x81\xfe\xff" * 64, bytes(range(256))])
@pytest.mark.parametrize("suffix", [".toml", ".yaml"])
def test_binary_config_file_is_one_line(content, suffix, no_run, capsys, tmp_path):
    cfg = tmp_path / f"c{suffix}"
    cfg.write_bytes(content)
    assert main(["run", "--config", str(cfg), "--out", str(tmp_path / "r.json")]) == 2
    err = one_line_error(capsys, str(cfg))
    assert "UTF-8" in err or "binary" in err
    assert main(["sweep", "--config", str(cfg), "--dry-run", "--out", str(tmp_path / "s")]) == 2
    one_line_error(capsys, str(cfg))


@pytest.mark.parametrize("text, message", [
    ('attack_options = "x"', "attack_options must be a table"),
    ("defense_options = [1, 2]", "defense_options must be a table"),
    ("victim_options = 3", "victim_options must be a table"),
    ("data_root = 5", "data_root must be a string"),
    ("substitute_arch = 5", "substitute_arch must be a string"),
    ("substitute_arch = [1]", "substitute_arch must be a string"),
    ("data_root = {a = 1}", "data_root must be a string"),
])
def test_config_fields_of_the_wrong_type_are_one_line(text, message, no_run, capsys, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(text + "\n")
    assert main(["run", "--config", str(cfg), "--out", str(tmp_path / "r.json")]) == 2
    one_line_error(capsys, message)
    if "options" in text:  # a sweep file too, with and without flags merged into the table
        for extra in ([], ["--attack-opt", "epochs=1", "--defense-opt", "size=1", "--victim-opt", "epochs=1"]):
            assert main(["sweep", "--config", str(cfg), *extra, "--dry-run", "--out", str(tmp_path / "s")]) == 2
            one_line_error(capsys, message.split(" must")[0])


@pytest.mark.parametrize("text, message", [
    ("1: 2\n", "setting names must be strings"),
    ("attack_options: {1: 2}\n", "key that is not a string"),
])
def test_yaml_config_of_the_wrong_shape_is_one_line(text, message, no_run, capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    assert main(["run", "--config", str(cfg), "--out", str(tmp_path / "r.json")]) == 2
    one_line_error(capsys, message)


def test_huge_values_are_quoted_short(capsys, tmp_path):
    """A string option given a huge list: the error quotes it shortened, never whole."""
    big = tmp_path / "big.toml"
    big.write_text('victim = "relu-mlp"\n[victim_options]\nlayers = [' + "1, " * 2_000_000 + "1]\n")
    small_yaml = tmp_path / "big.yaml"
    small_yaml.write_text("attack_options:\n  bandwidth: [" + "0.5, " * 20_000 + "0.5]\n")
    long_name = tmp_path / "name.toml"
    long_name.write_text(f'dataset = "{"x" * 1_000_000}"\n')
    for cfg, fragment in ((big, "bad value [1, 1, 1"), (small_yaml, "bad value [0.5, 0.5"), (long_name, "xxx")):
        code = main(["run", "--config", str(cfg), "--out", str(tmp_path / "r.json")])
        err = one_line_error(capsys, fragment)
        assert code == 2 and len(err) < 1100, len(err)
    assert not (tmp_path / "r.json").exists()


def test_show_shortens_any_value():
    from benchmark.errors import show

    assert "..." in show("x" * 1000) and len(show("x" * 1000)) <= 80
    assert len(show(list(range(10**6)))) <= 80 and len(show({"a": [[1] * 1000] * 1000})) <= 80
    assert len(show(10**5000)) <= 80 and show("a\nb").count("\n") == 0
    assert show(1.5) == "1.5" and show("scott") == "'scott'"


def test_sweep_of_too_many_seeds_is_refused_before_expanding(capsys, tmp_path):
    from benchmark.sweep import MAX_JOBS, build_spec, parse_seeds

    with pytest.raises(ConfigError, match=f"more than {MAX_JOBS} seeds"):
        parse_seeds("0-10000000")
    with pytest.raises(ConfigError, match=f"more than {MAX_JOBS} seeds"):
        parse_seeds(f"0-{2**32 - 1}")
    with pytest.raises(ConfigError, match=f"more than {MAX_JOBS}"):
        parse_seeds(",".join(map(str, range(MAX_JOBS + 1))))
    assert len(parse_seeds(f"0-{MAX_JOBS - 1}")) == MAX_JOBS
    with pytest.raises(ConfigError, match=r"jobs .*3 attacks x 1 defenses x 1 victims x 1 datasets x 5000 seeds"):
        build_spec({"attacks": "ours,knockoff,noise", "seeds": "0-4999"})
    assert main(["sweep", "--seeds", "0-10000000", "--dry-run", "--out", str(tmp_path / "s")]) == 2
    one_line_error(capsys, "seeds")
    assert not (tmp_path / "s").exists()


# ---- work lost at the end ------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["proc", "below a file"])
def test_unwritable_out_is_refused_before_any_work(where, no_run, capsys, tmp_path):
    if where == "proc":
        out = Path("/proc/stealbench-test/r.json")
    else:
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "sub" / "r.json"
    assert main(["run", *TINY, "--out", str(out)]) == 2
    one_line_error(capsys, "is not writable", "nothing was run")
    assert main(["sweep", "--seeds", "0", "--quiet", "--out", str(out.parent)]) == 2
    one_line_error(capsys, "not writable" if where == "proc" else "is a file")


def test_writable_check_leaves_nothing_behind(tmp_path):
    from benchmark.io import check_writable, check_writable_dir

    check_writable(tmp_path / "new" / "deeper" / "r.json")
    check_writable_dir(tmp_path / "sweep" / "s")
    (tmp_path / "kept").mkdir()
    check_writable(tmp_path / "kept" / "r.json")
    check_writable_dir(tmp_path / "kept")
    assert [p.name for p in tmp_path.iterdir()] == ["kept"] and not any((tmp_path / "kept").iterdir())


def test_non_finite_result_is_one_line_and_nothing_is_written(monkeypatch, capsys, tmp_path):
    from benchmark.result import Result

    def nan_run(cfg, progress=True):
        return Result(config=cfg.to_json(), scores={"acc": float("nan"), "clo": 0.5}, victim={}, defense={},
                      attack={}, environment={})

    monkeypatch.setattr(benchmark.runner, "run", nan_run)
    out = tmp_path / "out" / "r.json"
    assert main(["run", *TINY, "--out", str(out)]) == 2
    one_line_error(capsys, "scores.acc is not a finite number")
    assert not out.exists() and list(tmp_path.rglob("*")) == []  # no temporary file left either


def test_write_json_refuses_non_finite_numbers_and_keeps_the_old_file(tmp_path):
    from benchmark.io import write_json

    path = tmp_path / "r.json"
    write_json(path, {"a": 1.0})
    for bad in ({"a": [1.0, float("inf")]}, {"b": {"c": -math.inf}}, {"d": float("nan")}):
        with pytest.raises(StealBenchError, match="not a finite number"):
            write_json(path, bad)
    assert json.loads(path.read_text()) == {"a": 1.0} and os.listdir(tmp_path) == ["r.json"]


def test_non_finite_cached_victim_is_trained_again(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("STEALBENCH_CACHE", str(tmp_path))
    from benchmark.data import TASKS, DataRequest
    from benchmark.plugins import VICTIMS
    from benchmark.zoo import load_or_train, victim_key

    spec = VICTIMS["sdn-tiny"](epochs=1)
    task = TASKS["synthetic"](DataRequest(tmp_path))
    path = tmp_path / "victims" / f"{victim_key(spec, task, 0)}.pt"
    path.parent.mkdir()
    torch.manual_seed(0)
    state = spec.build(task.num_classes, task.input_shape).state_dict()
    bad = {k: (torch.full_like(v, float("nan")) if v.is_floating_point() else v) for k, v in state.items()}
    torch.save(bad, path)

    entry = load_or_train(spec, task, 0, progress=False)
    err = capsys.readouterr().err
    assert entry.cached is False and "non-finite" in err and "training it again" in err
    assert err.count("\n") == 1
    assert all(torch.isfinite(v).all() for v in entry.model.state_dict().values() if v.is_floating_point())
    reloaded = torch.load(path, weights_only=True)  # the cache entry was replaced by the good one
    assert all(torch.isfinite(v).all() for v in reloaded.values() if v.is_floating_point())
    again = load_or_train(spec, task, 0, progress=False)
    assert again.cached is True and capsys.readouterr().err == ""


def test_sweep_job_with_a_non_finite_result_is_recorded_as_failed(tmp_path):
    from benchmark.sweep import SweepSummary, build_spec, record

    job = build_spec({"seeds": "0"}).jobs()[0]
    summary = SweepSummary(total=1)
    outcome = record(job, {"ok": True, "result": {"scores": {"acc": float("nan")}}}, tmp_path, "local", summary)
    assert outcome["ok"] is False and summary.failed == 1 and summary.done == 0
    assert not job.result_path(tmp_path).exists()
    error = json.loads(job.error_path(tmp_path).read_text())["error"]
    assert error["type"] == "StealBenchError" and "scores.acc is not a finite number" in error["message"]
