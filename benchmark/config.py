"""RunConfig: every setting of one run, from CLI flags or a TOML/YAML file."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from benchmark.errors import ConfigError, one_line, show

TIMINGS = ("simulated", "measured")
PROFILES = ("calibrated", "flops")
#: the largest --seed / data_seed: every random generator the suite seeds (torch, numpy) takes it,
#: with room for the offsets and multipliers derived seeds add
MAX_SEED = 2**32 - 1
OPTION_TABLES = ("attack_options", "defense_options", "victim_options")


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
            raise ConfigError(f"--timing must be one of {', '.join(TIMINGS)}, got {show(self.timing)}")
        if self.timing_profile not in PROFILES:
            raise ConfigError(f"--timing-profile must be one of {', '.join(PROFILES)}, "
                              f"got {show(self.timing_profile)}")
        if self.budget is not None and self.budget < 1:
            raise ConfigError(f"--budget must be a positive number of queries, got {show(self.budget)}")
        for name in ("seed", "data_seed"):
            value = getattr(self, name)
            if not 0 <= value <= MAX_SEED:
                raise ConfigError(f"--{name.replace('_', '-')} must be an integer from 0 to {MAX_SEED}, "
                                  f"got {show(value)}")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"--device must be cpu or cuda[:N], got {show(self.device)}")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(obj: dict[str, Any], source: str = "config") -> RunConfig:
        names = {f.name for f in dataclasses.fields(RunConfig)}
        for key in obj:
            if not isinstance(key, str) or key not in names:
                close = difflib.get_close_matches(key, names, n=1) if isinstance(key, str) else []
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"{source}: unknown setting {show(key)}{hint}")
        for key in OPTION_TABLES:
            if key in obj:
                check_options_table(obj[key], key, source)
        types = {"budget": (int, type(None)), "seed": int, "data_seed": int, "download": bool}
        for key, tp in types.items():
            if key in obj and (not isinstance(obj[key], tp) or isinstance(obj[key], bool) is not (tp is bool)):
                raise ConfigError(f"{source}: {key} has the wrong type ({type(obj[key]).__name__}): "
                                  f"{show(obj[key])}")
        for key in ("attack", "defense", "victim", "dataset", "query_data", "timing", "timing_profile", "device"):
            if key in obj and not isinstance(obj[key], str):
                raise ConfigError(f"{source}: {key} must be a string, got {type(obj[key]).__name__} "
                                  f"{show(obj[key])}")
        for key in ("substitute_arch", "data_root"):
            if key in obj and obj[key] is not None and not isinstance(obj[key], str):
                raise ConfigError(f"{source}: {key} must be a string, got {type(obj[key]).__name__} "
                                  f"{show(obj[key])}")
        return RunConfig(**obj)


def check_options_table(value: Any, key: str, source: str) -> dict[str, Any]:
    """``attack_options`` and the like: a table whose keys are strings."""
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: {key} must be a table of key = value, got {type(value).__name__} "
                          f"{show(value)}")
    for name in value:
        if not isinstance(name, str):
            raise ConfigError(f"{source}: {key} has a key that is not a string: {show(name)}")
    return value


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Settings from a TOML (``.toml``) or YAML (``.yaml``/``.yml``) file, as a dict. The file must
    be UTF-8 text; anything else is a one-line ConfigError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start}); give a TOML or YAML "
                          f"file") from None
    if "\x00" in text:
        raise ConfigError(f"config file {path} is binary (it holds NUL bytes); give a TOML or YAML file")
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            obj = yaml.safe_load(text)
            obj = {} if obj is None else obj
        else:
            obj = tomllib.loads(text)
    except Exception as exc:
        raise ConfigError(f"config file {path} does not parse: {one_line(exc) or type(exc).__name__}") from exc
    if not isinstance(obj, dict):
        raise ConfigError(f"config file {path} must hold a table of settings, got {type(obj).__name__}")
    for key in obj:
        if not isinstance(key, str):
            raise ConfigError(f"config file {path}: setting names must be strings, got {show(key)}")
    return obj
