"""The one path every run takes (DESIGN.md): config -> victim -> service (oracle + defense + honest
traffic) -> attack in its own process -> scores -> Result. Everything the user can get wrong is
validated before any heavy work."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch

from benchmark import energy
from benchmark.api.attack import Attack, AttackContext
from benchmark.api.defense import Defense, defense_name
from benchmark.closeness import split_query_heldout
from benchmark.config import RunConfig
from benchmark.data import QUERY_SETS, TASKS, DataRequest
from benchmark.errors import ConfigError
from benchmark.metrics import compare, exit_accuracy, run_early_exit
from benchmark.options import build_plugin, plugin_options
from benchmark.oracle import OwnerResources, VictimOracle
from benchmark.paths import data_dir
from benchmark.plugins import ATTACKS, DEFENSES, VICTIMS
from benchmark.result import Result, environment
from benchmark.service.attacker import run_attack
from benchmark.service.server import Service, carve_honest
from benchmark.timing import MeasuredTiming, SimulatedTiming, flops_profile
from benchmark.zoo import latency_profile, load_or_train

INPUT_SHAPE = (3, 32, 32)


def check_device(device: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA device is available")


def run(cfg: RunConfig, progress: bool = True, inspect: Callable[[dict], None] | None = None,
        defense: Defense | None = None, attack: Attack | None = None) -> Result:
    """Run one configuration. ``inspect`` (analysis scripts; multi-exit runs) is called once the attack is
    done with ``victim``, ``stolen`` (the attack's StolenModel), ``task`` and ``query``. ``defense``, if
    given, is used instead of ``cfg.defense`` (an instance, e.g. an unregistered plugin being written);
    ``attack`` likewise (its class must be importable: it runs in its own process)."""
    spec = build_plugin(VICTIMS[cfg.victim], cfg.victim_options, "victim")
    if getattr(spec, "kind", "multi-exit") == "relu-mlp":
        from benchmark.exact import run_exact

        return run_exact(cfg, progress, defense)
    if attack is None:
        attack = build_plugin(ATTACKS[cfg.attack], cfg.attack_options, "attack")
    if defense is None:
        defense = build_plugin(DEFENSES[cfg.defense], cfg.defense_options, "defense")
    if cfg.substitute_arch in (None, cfg.victim):
        substitute = spec
    else:
        substitute = build_plugin(VICTIMS[cfg.substitute_arch], {}, "substitute")
    budget = cfg.budget if cfg.budget is not None else attack.default_budget
    attack.check_budget(budget)
    check_device(cfg.device)
    task_loader, query_loader = TASKS[cfg.dataset], QUERY_SETS[cfg.query_data]

    req = DataRequest(Path(cfg.data_root) if cfg.data_root else data_dir(), cfg.download, cfg.data_seed,
                      INPUT_SHAPE)
    task = task_loader(req)
    query, query_heldout = split_query_heldout(query_loader(req))  # the attack never sees the held-out tail
    entry = load_or_train(spec, task, cfg.seed, cfg.device, progress)
    victim = entry.model
    if cfg.timing_profile == "flops":
        profile = flops_profile(victim.exit_flops())
    else:
        profile = latency_profile(entry, cfg.device)
    test, honest = carve_honest(task.test, cfg.data_seed)
    owner = OwnerResources(victim, dataclasses.replace(task, test=test.subset(0)), cfg.device, entry.path.stem)
    oracle = VictimOracle(victim, make_timing(cfg.timing, profile, cfg.seed), budget + 2 * len(honest), owner=owner)
    service = Service(oracle, defense, cfg.seed, budget, honest, attacker_accounts=int(getattr(attack, "accounts", 1)),
                      exit_flops=victim.exit_flops())

    ctx = AttackContext(seed=cfg.seed, device=cfg.device, substitute=substitute, progress=progress)
    stolen, attack_seconds = run_attack(service, attack, query, budget, ctx, cfg.device)
    service.finish()

    if inspect is not None:
        inspect({"victim": victim, "stolen": stolen, "task": task, "query": query})
    scores = compare(victim, stolen.model, test, cfg.device, query_heldout)
    if stolen.inferred_exits is not None:
        true = run_early_exit(victim, type(query)(query.x[stolen.query_index], query.y[stolen.query_index]),
                              cfg.device).exits
        k_inferred = int(stolen.details.get("estimated_exits", stolen.model.num_exits))
        scores.update(exit_accuracy(true, stolen.inferred_exits, victim.num_exits, k_inferred))
    else:
        scores.update({"exit_accuracy": None, "exit_accuracy_baseline": None})
    scores["queries"] = service.used
    scores["attack_seconds"] = attack_seconds
    scores.update(energy_scores(victim, stolen.model, test, cfg.device))

    return Result(
        config=cfg.to_json(),
        scores=scores,
        victim={"name": cfg.victim, "options": plugin_options(spec), "dataset": task.name,
                "num_exits": victim.num_exits, "exit_flops": victim.exit_flops(),
                "thresholds": victim.thresholds.tolist(), "latency_profile": profile.to_json(),
                "cached": entry.cached, "train_seconds": entry.train_seconds},
        defense={"name": defense_name(defense), "acts_on": defense.acts_on, "options": plugin_options(defense),
                 "cost": service.cost()},
        attack={"name": attack.name if attack.name != "attack" else type(attack).__name__,
                "options": plugin_options(attack), "details": stolen.details,
                "substitute_arch": substitute.name, "stolen_exit_flops": stolen.model.exit_flops()},
        environment=environment(cfg.device),
    )


def make_timing(kind: str, profile, seed: int):
    return SimulatedTiming(profile, seed) if kind == "simulated" else MeasuredTiming(profile)


def energy_scores(victim, stolen, test, device: str, n: int = 512) -> dict:
    """Joules per sample of early-exit inference, victim and stolen (null with a reason if no counter)."""
    x = test.images(slice(0, n), device)
    per_sample, reading = {}, None
    for who, model in (("victim", victim), ("stolen", stolen)):
        reading = energy.measure(lambda m=model: m.early_exit(x), len(x), device)
        per_sample[who] = reading.joules_per_sample
    return {"energy_j_per_sample": per_sample, "energy_source": reading.source, "energy_reason": reading.reason}
