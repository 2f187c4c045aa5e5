"""The contracts every plugin implements or uses, in one place.

- victims: :class:`~benchmark.api.victim.MultiExitNet`, :class:`~benchmark.api.victim.VictimSpec`
- attacks: :class:`~benchmark.api.attack.Attack`, :class:`~benchmark.api.attack.AttackContext`,
  :class:`~benchmark.api.attack.StolenModel`
- defenses: :class:`~benchmark.api.defense.Defense`
- the service an attack talks to: :class:`~benchmark.oracle.Oracle`, :class:`~benchmark.oracle.BlackBox`,
  :class:`~benchmark.oracle.Response`
- registries, options, errors, data, configuration and results: ``benchmark.plugins``,
  ``benchmark.options``, ``benchmark.errors``, ``benchmark.data``, ``benchmark.config``, ``benchmark.result``

Plugins import from here (or the modules named); the core never imports a plugin: in-tree plugins
are found by the registries, which import the plugin packages by name on first lookup.
"""

import importlib

_WHERE = {
    "Attack": "benchmark.api.attack", "AttackContext": "benchmark.api.attack", "StolenModel": "benchmark.api.attack",
    "Defense": "benchmark.api.defense", "DefendedOracle": "benchmark.api.defense",
    "MultiExitNet": "benchmark.api.victim", "VictimSpec": "benchmark.api.victim", "ExitOutput": "benchmark.api.victim",
    "NEVER": "benchmark.api.victim",
    "BlackBox": "benchmark.oracle", "Oracle": "benchmark.oracle", "Response": "benchmark.oracle",
    "ATTACKS": "benchmark.plugins", "DEFENSES": "benchmark.plugins", "VICTIMS": "benchmark.plugins",
    "Registry": "benchmark.registry", "RunConfig": "benchmark.config", "Split": "benchmark.data",
    "TaskData": "benchmark.data", "ConfigError": "benchmark.errors", "StealBenchError": "benchmark.errors",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    """``from benchmark.api import Defense``: names resolve on first use, so that importing one
    contract module never drags in the others (the oracle and the victim contract import each other's
    neighbours)."""
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
