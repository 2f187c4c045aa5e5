"""The one path every run takes (docs/design.md): config -> victim -> deployment (oracle + defense +
budget + honest traffic in one ``Service``) -> attack in its own process (``run``) or over HTTP
(``serve``) -> scores -> Result. Each victim family brings two parts (``Family``): how its
deployment is built (``deploy`` here for multi-exit victims, ``benchmark.exact.deploy`` for
relu-mlp victims) and how a stolen model is scored (``score``; ``benchmark.exact.judge``).
Everything the user can get wrong is validated before any heavy work."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmark import energy, exact
from benchmark.api.attack import Attack, AttackContext, StolenModel
from benchmark.api.defense import Defense, defense_name
from benchmark.closeness import split_query_heldout
from benchmark.config import RunConfig
from benchmark.data import QUERY_SETS, TASKS, DataRequest, Split
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
#: victim options that set the owner's output rule, not the network: the attacker's substitute of
#: the victim's family is built without them (``exit_rule=per-class`` builds another module type,
#: whose extra buffer a substitute neither has nor could learn)
OUTPUT_RULE_OPTIONS = ("exit_rule", "exit_mix")


def check_device(device: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA device is available")


@dataclasses.dataclass(frozen=True)
class Deployment:
    """One defended deployment, built and checked, ready to serve: what ``run`` and ``serve`` share.
    ``service`` is the live part (its counters move as it answers); the rest is fixed."""

    cfg: RunConfig
    spec: Any  # the victim family's spec
    substitute: Any  # the spec the attacker's substitute is built from
    defense: Defense
    budget: int
    accounts: int
    task: Any
    query: Split
    query_heldout: Split
    entry: Any  # the zoo entry (model, path, cached, train_seconds)
    victim: Any
    profile: Any
    test: Split  # the scoring part of the test split
    honest: Split  # the honest user's part
    service: Service

    @property
    def device(self) -> str:
        return self.cfg.device


def substitute_spec(cfg: RunConfig, spec: Any) -> Any:
    """The spec the attacker's substitute is built from: ``--substitute-arch`` with its defaults, else
    the victim's own spec without the owner's output rule (``OUTPUT_RULE_OPTIONS``)."""
    if cfg.substitute_arch not in (None, cfg.victim):
        return build_plugin(VICTIMS[cfg.substitute_arch], {}, "substitute")
    arch = {k: v for k, v in cfg.victim_options.items() if k not in OUTPUT_RULE_OPTIONS}
    return spec if arch == cfg.victim_options else build_plugin(VICTIMS[cfg.victim], arch, "victim")


def deploy(cfg: RunConfig, defense: Defense | None = None, attack: Attack | None = None,
           progress: bool = True, accounts: int = 1) -> Deployment:
    """Validate ``cfg``, load the victim, task and query data, and stand up the defended service
    (profile, honest split, VictimOracle, Service). Without ``attack`` (``serve``), ``cfg.budget`` is
    required and the service holds ``accounts`` attacker accounts. Multi-exit victims (their family's part)."""
    spec = build_plugin(VICTIMS[cfg.victim], cfg.victim_options, "victim")
    if getattr(spec, "kind", "multi-exit") == "relu-mlp":
        raise ConfigError(f"victim {cfg.victim!r} is a ReLU MLP (exact extraction): it has no service deployment; "
                          f"use `run`")
    if cfg.dataset == "mnist" and cfg.query_data == "mnist":
        raise ConfigError("--dataset mnist and --query-data mnist are the same 5,000 images; pick another query set")
    if defense is None:
        defense = build_plugin(DEFENSES[cfg.defense], cfg.defense_options, "defense")
    substitute = substitute_spec(cfg, spec)
    if attack is not None:
        budget = cfg.budget if cfg.budget is not None else attack.default_budget
        attack.check_budget(budget)
        accounts = int(getattr(attack, "accounts", 1))
    elif cfg.budget is None:
        raise ConfigError("--budget is required: the service needs a query budget")
    else:
        budget = cfg.budget
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
    service = Service(oracle, defense, cfg.seed, budget, honest, attacker_accounts=accounts,
                      exit_flops=victim.exit_flops())
    return Deployment(cfg, spec, substitute, defense, budget, accounts, task, query, query_heldout, entry, victim,
                      profile, test, honest, service)


@dataclasses.dataclass(frozen=True)
class Family:
    """What a victim family brings to the one run path: ``prepare`` checks the attack against the
    victim (and may hand it public facts), ``deploy`` builds the victim and its defended service,
    ``score`` judges what the attack returned and builds the Result."""

    deploy: Callable[..., Any]  # (cfg, defense, attack, progress) -> a deployment
    score: Callable[..., Result]  # (deployment, stolen, attack name, attack options, attack seconds)
    prepare: Callable[[RunConfig, Any, Attack], Attack] = lambda cfg, spec, attack: attack


def _families() -> dict[str, Family]:
    return {"multi-exit": Family(deploy, score),
            "relu-mlp": Family(exact.deploy, exact.judge, exact.prepare)}


def run(cfg: RunConfig, progress: bool = True, inspect: Callable[[dict], None] | None = None,
        defense: Defense | None = None, attack: Attack | None = None) -> Result:
    """Run one configuration, any victim family. ``inspect`` (analysis scripts) is called once the
    attack is done with ``victim``, ``stolen`` (the attack's StolenModel), ``task`` and ``query``.
    ``defense``, if given, is used instead of ``cfg.defense`` (an instance, e.g. an unregistered
    plugin being written); ``attack`` likewise (its class must be importable: it runs in its own
    process)."""
    spec = build_plugin(VICTIMS[cfg.victim], cfg.victim_options, "victim")
    family = _families()[getattr(spec, "kind", "multi-exit")]
    if attack is None:
        attack = build_plugin(ATTACKS[cfg.attack], cfg.attack_options, "attack")
    attack = family.prepare(cfg, spec, attack)
    d = family.deploy(cfg, defense, attack, progress)

    ctx = AttackContext(seed=cfg.seed, device=d.device, substitute=d.substitute, progress=progress)
    stolen, attack_seconds = run_attack(d.service, attack, d.query, d.budget, ctx, d.device)
    d.service.finish()

    if inspect is not None:
        inspect({"victim": d.victim, "stolen": stolen, "task": getattr(d, "task", None), "query": d.query})
    return family.score(d, stolen, attack.name if attack.name != "attack" else type(attack).__name__,
                        plugin_options(attack), attack_seconds)


def score(d: Deployment, stolen: StolenModel, attack_name: str, attack_options: dict,
          attack_seconds: float) -> Result:
    """The judge: the honest user finishes (``service.finish``), the substitute is scored against the
    victim on the scoring split and the held-out query tail, and the Result is built."""
    cfg, victim, service = d.cfg, d.victim, d.service
    service.finish()
    scores = compare(victim, stolen.model, d.test, cfg.device, d.query_heldout)
    if stolen.inferred_exits is not None:
        query = d.query
        true = run_early_exit(victim, type(query)(query.x[stolen.query_index], query.y[stolen.query_index]),
                              cfg.device).exits
        k_inferred = int(stolen.details.get("estimated_exits", stolen.model.num_exits))
        scores.update(exit_accuracy(true, stolen.inferred_exits, victim.num_exits, k_inferred))
    else:
        scores.update({"exit_accuracy": None, "exit_accuracy_baseline": None})
    scores["queries"] = service.used
    scores["attack_seconds"] = attack_seconds
    scores.update(energy_scores(victim, stolen.model, d.test, cfg.device))

    return Result(
        config=cfg.to_json(),
        scores=scores,
        victim={"name": cfg.victim, "options": plugin_options(d.spec), "dataset": d.task.name,
                "num_exits": victim.num_exits, "exit_flops": victim.exit_flops(),
                "thresholds": victim.thresholds.tolist(), "latency_profile": d.profile.to_json(),
                "cached": d.entry.cached, "train_seconds": d.entry.train_seconds},
        defense={"name": defense_name(d.defense), "acts_on": d.defense.acts_on, "options": plugin_options(d.defense),
                 "cost": service.cost()},
        attack={"name": attack_name, "options": attack_options, "details": stolen.details,
                "substitute_arch": d.substitute.name, "stolen_exit_flops": stolen.model.exit_flops()},
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
