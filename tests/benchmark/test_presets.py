"""Presets for the paper's rows: every Table 1 and Table 3 configuration is one valid preset."""

from __future__ import annotations

import pytest

from benchmark.config import RunConfig
from benchmark.data import QUERY_SETS, TASKS
from benchmark.errors import StealBenchError
from benchmark.options import build_plugin
from benchmark.plugins import VICTIMS
from benchmark.presets import PRESET_DOCS, PRESETS, apply_preset

# the (backbone, dataset) pairs of paper_table1.csv and the (extracted, victim) pairs of
# paper_table3_cross_arch.csv, spelled as in those files
TABLE1 = [(b, d) for b in ("VGG", "ResNet", "MobileNet") for d in ("CIFAR10", "GTSRB", "SVHN", "FMNIST")]
TABLE3 = [(e, v) for e in ("VGG", "ResNet", "MobileNet") for v in ("VGG", "ResNet", "MobileNet")]
BACKBONE = {"VGG": "vgg16", "ResNet": "resnet56", "MobileNet": "mobilenet"}
DATASET = {"CIFAR10": "cifar10", "GTSRB": "gtsrb", "SVHN": "svhn", "FMNIST": "fashionmnist"}


@pytest.mark.parametrize(("backbone", "dataset"), TABLE1)
def test_table1_rows(backbone, dataset):
    settings = apply_preset(f"paper:{BACKBONE[backbone]}-{DATASET[dataset]}")
    assert settings["victim"] == f"sdn-{BACKBONE[backbone]}" == settings["substitute_arch"]
    assert settings["dataset"] == DATASET[dataset] and settings["query_data"] == "tinyimagenet"
    assert "exits" not in settings["victim_options"]  # SDN's own exits
    spec = build_plugin(VICTIMS[settings["victim"]], settings["victim_options"], "victim")
    assert spec.augment == ("crop" if dataset in ("GTSRB", "SVHN") else "crop+flip")


@pytest.mark.parametrize(("extracted", "victim"), TABLE3)
def test_table3_rows(extracted, victim):
    settings = apply_preset(f"paper:table3:{BACKBONE[victim]}-by-{BACKBONE[extracted]}")
    assert settings["victim"] == f"sdn-{BACKBONE[victim]}"
    assert settings["substitute_arch"] == f"sdn-{BACKBONE[extracted]}"
    assert settings["dataset"] == "cifar10" and settings["query_data"] == "tinyimagenet"
    spec = build_plugin(VICTIMS[settings["victim"]], settings["victim_options"], "victim")
    assert spec.exits == 4


def test_every_preset_is_a_valid_run_config():
    assert len(PRESETS) == len(TABLE1) + len(TABLE3) + 1 and set(PRESET_DOCS) == set(PRESETS)  # + cpu-fashionmnist
    for name in PRESETS:
        settings = apply_preset(name)
        config = RunConfig.from_dict(settings, source=f"preset {name}")
        assert config.victim in VICTIMS and config.substitute_arch in VICTIMS
        assert config.dataset in TASKS and config.query_data in QUERY_SETS


def test_apply_preset_returns_a_copy():
    a = apply_preset("paper:vgg16-svhn")
    a["victim_options"]["augment"] = "none"
    assert apply_preset("paper:vgg16-svhn")["victim_options"]["augment"] == "crop"


def test_unknown_presets_are_one_line_errors():
    with pytest.raises(StealBenchError, match=r"did you mean 'paper:vgg16-cifar10'\?"):
        apply_preset("paper:vgg-cifar10")
    with pytest.raises(StealBenchError) as err:
        apply_preset("table1")
    assert "\n" not in str(err.value) and "paper:<backbone>-<dataset>" in str(err.value)


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["vgg16", "resnet56", "mobilenet"])
def test_short_paper_run_on_real_format_files(backbone, tmp_path):
    """`run --preset paper:<backbone>-fashionmnist --epochs 1` end to end on CPU, on small
    FashionMNIST idx files and TinyImageNet JPEG folders (minutes: calibration and FLOP counting)."""
    import json
    import os
    import struct
    import subprocess
    import sys

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 400), ("t10k", 200)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x0803, n, 28, 28) + x.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x0801, n) + y.tobytes())
    base = tmp_path / "data" / "tiny-imagenet-200"
    wnids = [f"n{i:08d}" for i in range(10)]
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    ann = []
    for k, wnid in enumerate(wnids):
        folder = base / "train" / wnid / "images"
        folder.mkdir(parents=True)
        for i in range(25):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"{wnid}_{i}.JPEG")
        val_image = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
        val_image.save(base / "val" / "images" / f"val_{k}.JPEG")
        ann.append(f"val_{k}.JPEG\t{wnid}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(ann) + "\n")
    out = tmp_path / "result.json"
    env = {**os.environ, "STEALBENCH_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "benchmark", "run", "--preset", f"paper:{backbone}-fashionmnist", "--data-root",
           str(tmp_path / "data"), "--epochs", "1", "--budget", "250", "--attack-opt", "epochs=1", "--quiet",
           "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["config"]["victim"] == f"sdn-{backbone}" and result["config"]["query_data"] == "tinyimagenet"
    assert result["scores"]["queries"] == 250 and 0.0 <= result["scores"]["acc"] <= 1.0


def test_cpu_fashionmnist_preset_uses_real_data_at_cpu_size():
    """The two-core Fashion-MNIST preset: real task, real MNIST queries, a subset-trained sdn-tiny."""
    settings = apply_preset("paper:cpu-fashionmnist")
    assert settings["dataset"] == "fashionmnist" and settings["query_data"] == "mnist"
    assert settings["victim"] == settings["substitute_arch"] == "sdn-tiny"
    assert settings["victim_options"] == {"train_subset": 10_000}
    assert "Fashion-MNIST" in PRESET_DOCS["paper:cpu-fashionmnist"]


def _paper_gpu():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "paper_gpu.py"
    spec = importlib.util.spec_from_file_location("paper_gpu", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paper_gpu_script_builds_each_backbones_table_command(tmp_path, capsys):
    """The GPU script's command per backbone: the paper preset, real MNIST queries, the paper's rows."""
    import argparse

    mod = _paper_gpu()
    args = argparse.Namespace(device="cuda", seeds="0-1", victim_epochs=15, results=tmp_path, attacks=None,
                              tiny=False, timing_profile="calibrated")
    cmd = mod.compare_args("resnet56", args)
    flags = dict(zip(cmd[::2], cmd[1::2], strict=False))
    assert flags["--preset"] == "paper:resnet56-fashionmnist" and flags["--query-data"] == "mnist"
    assert flags["--paper-backbone"] == "ResNet" and flags["--paper-dataset"] == "FMNIST"
    assert "epochs=15" in cmd and "train_subset=200" not in cmd
    assert mod.main(["--backbones", "vgg19"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "vgg19" in err


@pytest.mark.slow
def test_paper_gpu_script_tiny_on_cpu(tmp_path):
    """`benchmarks/paper_gpu.py --tiny` end to end on a CPU (real Fashion-MNIST files; minutes)."""
    from benchmark.datasets.mnist import SYSTEM_FASHIONMNIST, idx_files

    if idx_files(SYSTEM_FASHIONMNIST) is None:
        pytest.skip("needs the Debian package dataset-fashion-mnist")
    mod = _paper_gpu()
    out = tmp_path / "all.md"
    assert mod.main(["--device", "cpu", "--tiny", "--backbones", "mobilenet", "--attacks", "ours,noise",
                     "--results", str(tmp_path), "--out", str(out)]) == 0
    text = out.read_text()
    assert "SDN mobilenet on Fashion-MNIST" in text and "| ours |" in text and "| noise |" in text
    assert "MobileNet / FMNIST" in text
