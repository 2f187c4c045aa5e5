"""A small generic plugin registry (one instance each for attacks, defenses, victims).

Plugins register with a decorator; duplicate names are an error; unknown names are answered with a
"did you mean" or the list of known names. Third-party plugins come in through the entry-point
group ``stealbench.<kind>`` (e.g. ``stealbench.defenses``), loaded on first lookup.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Generic, TypeVar

from benchmark.errors import StealBenchError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps plugin names to plugin classes, with entry-point discovery."""

    def __init__(self, kind: str, builtin: str | None = None, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.builtin = builtin  # package whose import registers the in-tree plugins
        self.group = entry_point_group or f"stealbench.{kind}s"
        self._items: dict[str, T] = {}
        self._entry_points_loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@DEFENSES.register("jitter")``. Sets ``obj.name`` to the registered name."""

        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        if not name or name != name.strip() or " " in name:
            raise StealBenchError(f"invalid {self.kind} name {name!r}")
        if name in self._items and self._items[name] is not obj:
            raise StealBenchError(f"duplicate {self.kind} name {name!r}: already registered by "
                                  f"{_where(self._items[name])}")
        self._items[name] = obj
        with contextlib.suppress(AttributeError, TypeError):
            obj.name = name  # type: ignore[attr-defined]

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        if self.builtin:
            importlib.import_module(self.builtin)
        for ep in metadata.entry_points(group=self.group):
            if ep.name in self._items:
                continue
            try:
                obj = ep.load()
            except Exception as exc:  # a broken plugin must not break the suite
                raise StealBenchError(f"{self.kind} plugin {ep.name!r} ({ep.value}) failed to load: "
                                      f"{type(exc).__name__}: {exc}") from exc
            if ep.name not in self._items:  # the module may have registered itself on import
                self.add(ep.name, obj)

    def get(self, name: str) -> T:
        self._load_entry_points()
        if name in self._items:
            return self._items[name]
        close = difflib.get_close_matches(name, self._items, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(self.names())}"
        raise StealBenchError(f"unknown {self.kind} {name!r}; {hint}")

    __getitem__ = get

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load_entry_points()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())


def _where(obj: object) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"
