"""RunConfig: every setting of one run, from CLI flags or a TOML/YAML file."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from benchmark.errors import ConfigError

TIMINGS = ("simulated", "measured")
PROFILES = ("calibrated", "flops")


@dataclass(frozen=True)
class RunConfig:
    attack: str = "ours"
    defense: str = "none"
    victim: str = "sdn-tiny"
    dataset: str = "synthetic"
    query_data: str = "synthetic-ood"
    budget: int | None = None  # None: the attack's default budget
    seed: int = 0
    data_seed: int = 0
    timing: str = "simulated"
    timing_profile: str = "calibrated"
    device: str = "cpu"
    substitute_arch: str | None = None  # None: the victim's family
    data_root: str | None = None
    download: bool = False
    attack_options: dict[str, Any] = field(default_factory=dict)
    defense_options: dict[str, Any] = field(default_factory=dict)
    victim_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.timing not in TIMINGS:
            raise ConfigError(f"--timing must be one of {', '.join(TIMINGS)}, got {self.timing!r}")
        if self.timing_profile not in PROFILES:
            raise ConfigError(f"--timing-profile must be one of {', '.join(PROFILES)}, got {self.timing_profile!r}")
        if self.budget is not None and self.budget < 1:
            raise ConfigError(f"--budget must be a positive number of queries, got {self.budget}")
        if self.seed < 0 or self.data_seed < 0:
            raise ConfigError("seeds must be non-negative")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"--device must be cpu or cuda[:N], got {self.device!r}")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(obj: dict[str, Any], source: str = "config") -> RunConfig:
        names = {f.name for f in dataclasses.fields(RunConfig)}
        for key in obj:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"{source}: unknown setting {key!r}{hint}")
        for key in ("attack_options", "defense_options", "victim_options"):
            if key in obj and not isinstance(obj[key], dict):
                raise ConfigError(f"{source}: {key} must be a table of key = value")
        types = {"budget": (int, type(None)), "seed": int, "data_seed": int, "download": bool}
        for key, tp in types.items():
            if key in obj and (not isinstance(obj[key], tp) or isinstance(obj[key], bool) is not (tp is bool)):
                raise ConfigError(f"{source}: {key} has the wrong type ({type(obj[key]).__name__})")
        for key in ("attack", "defense", "victim", "dataset", "query_data", "timing", "timing_profile", "device"):
            if key in obj and not isinstance(obj[key], str):
                raise ConfigError(f"{source}: {key} must be a string")
        return RunConfig(**obj)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Settings from a TOML (``.toml``) or YAML (``.yaml``/``.yml``) file, as a dict."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            obj = yaml.safe_load(text) or {}
        else:
            obj = tomllib.loads(text)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"config file {path} does not parse: {first}") from exc
    if not isinstance(obj, dict):
        raise ConfigError(f"config file {path} must hold a table of settings")
    return obj
