"""``evaluate()``: one call that scores a defense against an attack suite, for defense authors.

    >>> from benchmark import evaluate, summarize
    >>> runs = evaluate("jitter", attacks=["ours", "knockoff"], seeds=[0, 1], epochs=1)  # doctest: +SKIP
    >>> summarize(runs)                                                                   # doctest: +SKIP

The same runs as ``python -m benchmark run`` (each one goes through ``benchmark.runner.run``), one
row per (attack, seed) in a pandas DataFrame with the scores and the defense's cost. ``defense`` is
a registered name or a Defense instance (a plugin that is not registered can be evaluated as it is
being written). ``summarize`` gives each attack's mean with a 95% Student-t interval over the seeds,
and the defense's worst case (the attack with the highest mean ``clo``, then ``acc``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from benchmark.config import RunConfig
from benchmark.errors import ConfigError
from benchmark.options import plugin_options
from benchmark.plugins import ATTACKS, DEFENSES

#: the suite a defense meets when none is named, per victim kind
DEFAULT_ATTACKS = {"multi-exit": ("ours", "knockoff", "noise", "esa"), "relu-mlp": ("cryptanalytic",)}
SCORES = ("acc", "clo", "cc_ratio", "exit_accuracy", "fidelity", "accuracy_lost", "added_latency_ms")


def evaluate(defense: Any = "none", *, victim: str = "sdn-tiny", dataset: str = "synthetic",
             attacks: Sequence[str] | None = None, seeds: Iterable[int] = (0, 1, 2, 3, 4),
             budget: int | None = None, timing_profile: str = "flops", epochs: int | None = None,
             attack_options: dict[str, dict[str, Any]] | None = None, victim_options: dict[str, Any] | None = None,
             progress: bool = False, **settings: Any) -> pd.DataFrame:
    """Run every attack of the suite against ``victim`` behind ``defense``, once per seed.

    ``attack_options`` maps an attack name to its options; ``settings`` are any other RunConfig
    fields (``query_data``, ``device``, ``timing``, ...). Every setting is checked before the first
    run, so a typo costs nothing."""
    from benchmark.report import runs_frame
    from benchmark.runner import run

    instance = None
    if isinstance(defense, str):
        DEFENSES.get(defense)
        name, options = defense, {}
    elif hasattr(defense, "wrap") and hasattr(defense, "apply"):
        from benchmark.api.defense import defense_name

        instance, name, options = defense, defense_name(defense), {}
    else:
        raise ConfigError(f"defense must be a registered name or a Defense instance, got {type(defense).__name__}")
    from benchmark.plugins import VICTIMS

    kind = getattr(VICTIMS[victim], "kind", "multi-exit")
    suite = tuple(attacks) if attacks is not None else DEFAULT_ATTACKS[kind]
    if not suite:
        raise ConfigError("attacks: name at least one attack")
    for attack in suite:
        ATTACKS.get(attack)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ConfigError("seeds: name at least one seed")
    victim_options = dict(victim_options or {})
    if epochs is not None:
        victim_options["epochs"] = epochs
    configs = [RunConfig(attack=a, defense=name if instance is None else "none", victim=victim, dataset=dataset,
                         budget=budget, seed=s, timing_profile=timing_profile,
                         attack_options=dict((attack_options or {}).get(a, {})), defense_options=options,
                         victim_options=victim_options, **settings)
               for a in suite for s in seeds]
    results = []
    for cfg in configs:
        result = run(cfg, progress=progress, defense=instance).to_json()
        results.append((f"{cfg.attack}-s{cfg.seed}", result))
    frame = runs_frame(results)
    if instance is not None:
        frame["defense"] = name
        frame.attrs["defense_options"] = plugin_options(instance)
    return frame


def summarize(runs: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per attack: seeds, and for each score its mean and the half-width of a ``level`` Student-t
    interval over the seeds (NaN with one seed). The row ``worst case`` repeats the attack with the
    highest mean clo (ties broken by acc): the defense's verdict is its worst case."""
    from scipy import stats

    rows = []
    for attack, group in runs.groupby("attack", sort=False):
        row: dict[str, Any] = {"attack": attack, "seeds": int(group["seed"].nunique())}
        for key in SCORES:
            if key not in group:
                continue
            values = pd.to_numeric(group[key], errors="coerce").dropna()
            row[key] = float(values.mean()) if len(values) else float("nan")
            if len(values) > 1:
                sem = float(values.std(ddof=1)) / len(values) ** 0.5
                row[f"{key}_ci"] = float(stats.t.ppf(0.5 + level / 2, len(values) - 1) * sem)
            else:
                row[f"{key}_ci"] = float("nan")
        rows.append(row)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    worst = out.sort_values(["clo", "acc"], ascending=False, na_position="last").iloc[0].copy()
    worst["attack"] = f"worst case ({worst['attack']})"
    return pd.concat([out, worst.to_frame().T], ignore_index=True)
