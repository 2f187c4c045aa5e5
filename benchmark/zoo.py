"""The victim zoo, one for every victim family: trained victims cached on disk as state dicts,
keyed by name, dataset, seed and hyper-parameters, so a second run does not train again. Each
family keys its victims (``victim_key`` for multi-exit victims; ``relu-mlp`` victims by their
layer sizes and training settings) and trains them its own way; the cache step is one
(``load_or_fit``: the lock, loading, the checks, saving). Loading uses ``weights_only=True``;
a cache file that does not load is a one-line error, never a silent retrain over it. A cache file
that loads but holds NaN or infinite weights or thresholds (a run could only end in non-finite
scores) is trained again and replaced, with one line on stderr saying so."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmark.api.victim import MultiExitNet, VictimSpec
from benchmark.data import Split, TaskData
from benchmark.errors import ConfigError, StealBenchError
from benchmark.io import file_lock, save_torch, write_json
from benchmark.options import plugin_options
from benchmark.paths import cache_dir
from benchmark.timing import LatencyProfile, calibrate

FORCE_RETRAIN = False  # set by ``run --retrain``


@dataclass(frozen=True)
class ZooEntry:
    model: MultiExitNet
    path: Path
    cached: bool  # True when loaded rather than trained
    train_seconds: float


def victim_key(spec: VictimSpec, task: TaskData, seed: int) -> str:
    """``<name>-<dataset>-s<seed>-<digest of the options, input shape and classes>``. ``train_subset``
    enters the digest only when set, so victims trained on the whole split keep the keys they had
    before the option existed, and a subset-trained victim never shares a key with a full one."""
    options = plugin_options(spec)
    if options.get("train_subset") is None:
        options.pop("train_subset", None)
    if options.get("exit_rule") == "owner":  # the default rule keeps the keys from before the option
        options.pop("exit_rule")
    if not options.get("exit_mix", 1):
        options.pop("exit_mix")
    opts = json.dumps({"options": options, "shape": task.input_shape,
                       "classes": task.num_classes, "format": 1}, sort_keys=True)
    digest = hashlib.sha256(opts.encode()).hexdigest()[:12]
    return f"{spec.name}-{task.name}-s{seed}-{digest}"


def training_split(train: Split, subset: int | None, seed: int) -> Split:
    """The images the victim is trained on: all of ``train``, or a random ``subset`` of them drawn
    with ``seed`` (kept in their original order). A subset larger than the split is a one-line error."""
    if subset is None:
        return train
    if subset > len(train):
        raise ConfigError(f"victim option train_subset={subset} exceeds the {len(train)} images of the "
                          f"training split")
    gen = torch.Generator().manual_seed(104_729 * (seed + 1))
    rows = torch.randperm(len(train), generator=gen)[:subset].sort().values
    return Split(train.x[rows], train.y[rows])


def load_or_train(spec: VictimSpec, task: TaskData, seed: int, device: str = "cpu",
                  progress: bool = True, retrain: bool = False) -> ZooEntry:
    """The trained multi-exit victim (thresholds set), from the cache or trained now and cached."""
    train = training_split(task.train, getattr(spec, "train_subset", None), seed)
    key = victim_key(spec, task, seed)
    path = cache_dir() / "victims" / f"{key}.pt"

    def make() -> MultiExitNet:
        torch.manual_seed(seed)  # a retrain after a bad cache file starts as a first training does
        return spec.build(task.num_classes, task.input_shape)

    def fit(model: MultiExitNet) -> None:
        spec.train(model.to(device), dataclasses.replace(task, train=train), seed, device, progress)

    meta = {"key": key, "victim": spec.name, "dataset": task.name, "seed": seed, "options": plugin_options(spec),
            "train_images": len(train)}
    model, cached, seconds = load_or_fit(path, make, fit, meta, spec.name, retrain)
    return ZooEntry(model.to(device).eval(), path, cached, seconds)


def load_or_fit(path: Path, make: Callable[[], torch.nn.Module], fit: Callable[[torch.nn.Module], None],
                meta: dict, name: str, retrain: bool = False) -> tuple[torch.nn.Module, bool, float]:
    """The zoo's cache step, for every family: under ``path``'s lock (parallel jobs never train the
    same victim twice), the weights in ``path`` loaded into ``make()``, or, if there are none (or
    ``retrain``, or they hold non-finite values), ``fit`` run on a fresh ``make()`` and the result
    saved with ``meta`` and its ``train_seconds`` beside it. Returns (model, cached, train seconds)."""
    with file_lock(path.with_suffix(".lock")):
        model = make()
        if path.exists() and not (retrain or FORCE_RETRAIN):
            load_state(model, path)
            bad = non_finite_tensors(model)
            if not bad:
                return model, True, 0.0
            print(f"warning: cached victim {path} has non-finite values ({', '.join(bad[:3])}"
                  f"{', ...' if len(bad) > 3 else ''}); training it again", file=sys.stderr)
            model = make()
        start = time.perf_counter()
        fit(model)
        seconds = time.perf_counter() - start
        bad = non_finite_tensors(model)
        if bad:
            raise StealBenchError(f"training victim {name!r} gave non-finite values ({', '.join(bad[:3])}); "
                                  f"not cached; try other victim options (e.g. a smaller lr)")
        save_torch(path, {k: v.detach().cpu() for k, v in model.state_dict().items()})
        write_json(path.with_suffix(".json"), {**meta, "train_seconds": seconds})
        return model, False, seconds


def non_finite_tensors(model: torch.nn.Module) -> list[str]:
    """Names of the model's floating-point parameters and buffers holding NaN or infinity."""
    return [name for name, t in model.state_dict().items()
            if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def load_state(model: torch.nn.Module, path: Path) -> None:
    """Load weights only; any failure is a one-line StealBenchError naming the file."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError("not a state dict")
        model.load_state_dict(state)
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StealBenchError(f"cached victim {path} is unreadable ({msg[:120]}); delete it to retrain "
                              f"or pass --retrain") from exc


def latency_profile(entry: ZooEntry, device: str) -> LatencyProfile:
    """The victim's calibrated per-exit latency profile on the local machine and device type, measured
    once and cached beside the weights (so warm runs replay the same simulated timings). A profile
    that ``calibrate`` could not measure reliably is kept with ``reliable: false`` (in the cache and
    so in every result's ``victim.latency_profile``), and each run that uses it says so in one line."""
    dev = torch.device(device).type
    path = entry.path.with_name(entry.path.stem + f".latency-{dev}.json")
    if path.exists():
        try:
            cached = LatencyProfile.from_json(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError) as exc:
            raise StealBenchError(f"cached latency profile {path} is unreadable ({exc}); delete it") from exc
        problem = profile_problem(cached, entry.model.num_exits)
        if problem is None:
            if cached.reliable is False:
                print(f"warning: cached latency profile {path} was marked unreliable when it was calibrated "
                      f"(exits not separated or the machine busy); delete it to calibrate again", file=sys.stderr)
            return cached
        print(f"warning: cached latency profile {path} {problem}; calibrating again", file=sys.stderr)
    profile = calibrate(entry.model)
    write_json(path, profile.to_json())
    return profile


def profile_problem(profile: LatencyProfile, num_exits: int) -> str | None:
    """Why a cached latency profile cannot serve a victim of ``num_exits`` exits (None if it can):
    one finite, positive centre and spread per exit."""
    if len(profile.mean) != num_exits or len(profile.std) != num_exits:
        return f"has {len(profile.mean)} exits, the victim {num_exits}"
    values = [*profile.mean, *profile.std]
    if not all(math.isfinite(v) and v > 0 for v in values):
        return "holds non-finite or non-positive values"
    return None
