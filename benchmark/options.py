"""Typed plugin options: every plugin is a frozen dataclass and its fields are its options.

``--defense-opt size=2.0`` strings are converted to the field's type here, with one-line errors
for unknown keys ("did you mean") and bad values.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from typing import Any

from benchmark.errors import ConfigError, one_line, show


def option_fields(cls: type) -> dict[str, dataclasses.Field]:
    """The user-settable fields of a plugin dataclass (those not starting with '_')."""
    return {f.name: f for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")}


def parse_kv(pairs: list[str] | None, what: str) -> dict[str, str]:
    """Parse ['a=1', 'b=x'] into {'a': '1', 'b': 'x'}."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{what} option {show(pair)} is not of the form key=value")
        out[key.strip()] = value.strip()
    return out


def _convert(value: Any, tp: Any, name: str, owner: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        is_null = value is None or (isinstance(value, str) and value.lower() in ("none", "null", ""))
        if is_null and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, name, owner)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{owner}: bad value {show(value)} for {name}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"{owner}: {name} must be one of {', '.join(map(str, args))}, got {show(value)}")
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if not isinstance(value, (str, int)):
                raise ValueError
            low = str(value).lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if tp is int:
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise ValueError
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if tp is float:
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise ValueError
            out = float(value)
            if not math.isfinite(out):  # nan, inf: no option of a plugin means them
                raise ValueError
            return out
        if tp is str:
            if not isinstance(value, (str, int, float)):
                raise ValueError  # a list or table given for a string option
            return str(value)
        if origin is tuple:
            if not isinstance(value, (list, tuple, str, int, float)):
                raise ValueError
            items = value if isinstance(value, (list, tuple)) else [v for v in str(value).split(",") if v]
            elem = args[0] if args else str
            return tuple(_convert(v, elem, name, owner) for v in items)
    except (TypeError, ValueError, OverflowError):
        expected = getattr(tp, "__name__", tp)
        raise ConfigError(f"{owner}: bad value {show(value)} for {name} (expected {expected})") from None
    return value


def build_plugin(cls: type, raw: dict[str, Any], what: str) -> Any:
    """Instantiate plugin ``cls`` from raw (string or typed) options, validating each one."""
    owner = f"{what} {getattr(cls, 'name', cls.__name__)!r}"
    fields = option_fields(cls)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{owner}: options must be a table of key = value, got {show(raw)}")
    for key, value in raw.items():
        if not isinstance(key, str) or key not in fields:
            close = difflib.get_close_matches(key, fields, n=1) if isinstance(key, str) else []
            hint = f"did you mean {close[0]!r}?" if close else f"options: {', '.join(fields) or 'none'}"
            raise ConfigError(f"{owner} has no option {show(key)}; {hint}")
        kwargs[key] = _convert(value, hints[key], key, owner)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigError(f"{owner}: {one_line(exc) or type(exc).__name__}") from exc


def plugin_options(obj: Any) -> dict[str, Any]:
    """The option values of a plugin instance, JSON-ready."""
    out = {}
    for name in option_fields(type(obj)):
        value = getattr(obj, name)
        out[name] = list(value) if isinstance(value, tuple) else value
    return out
