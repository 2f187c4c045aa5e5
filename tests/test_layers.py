"""The layering rule: contracts and the core (``benchmark/``) at the bottom, plugins above, the
leaderboard on top; nothing imports upward and no module imports itself round a circle.

Every import counts, also one inside a function: a lazy import is still a dependency."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("benchmark", "attacks", "defenses", "victims", "leaderboard")
PLUGINS = ("attacks", "defenses", "victims")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Project modules ``path`` imports (absolute and relative, at any depth of the file)."""
    tree = ast.parse(path.read_text(), str(path))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m.split(".")[0] in PACKAGES}


def graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    modules = {module_name(p): p for p in files}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in imports_of(path):
            # resolve "pkg.mod.Name" to the module "pkg.mod"
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        edges[name] = targets
    return edges


def upward(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, targets in edges.items():
        top = src.split(".")[0]
        for dst in targets:
            dtop = dst.split(".")[0]
            if top == "benchmark" and dtop != "benchmark":
                bad.append(f"{src} -> {dst}")
            if top in PLUGINS and dtop == "leaderboard":
                bad.append(f"{src} -> {dst}")
    return sorted(bad)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_core_never_imports_a_plugin_or_the_leaderboard():
    assert upward(graph()) == []


def test_no_import_cycles():
    # a package's __init__ importing its own plugin modules is how registration works; a module
    # importing its package back is then a circle through __init__, so package inits are left out
    edges = {k: {d for d in v if not _is_package(d)} for k, v in graph().items() if not _is_package(k)}
    assert cycles(edges) == []


def _is_package(name: str) -> bool:
    return (ROOT / name.replace(".", "/") / "__init__.py").exists()


def test_the_checks_see_an_upward_import_and_a_circle():
    edges = {"benchmark.runner": {"attacks.ours"}, "attacks.ours": {"benchmark.oracle"},
             "benchmark.sweep": {"benchmark.executors"}, "benchmark.executors": {"benchmark.sweep"}}
    assert upward(edges) == ["benchmark.runner -> attacks.ours"]
    assert cycles(edges) == [["benchmark.executors", "benchmark.sweep"]]


def test_every_module_imports_on_its_own():
    """Each product module imports first in a clean state (no circular-import failure that a
    lucky import order would hide)."""
    import subprocess
    import sys

    names = sorted(n for n in graph() if not n.endswith("__main__"))
    code = (
        "import importlib, sys\n"
        f"names = {names!r}\n"
        "bad = []\n"
        "for name in names:\n"
        "    for m in [m for m in sys.modules if m.split('.')[0] in {PACKAGES!r}]:\n"
        "        del sys.modules[m]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        bad.append(f'{name}: {type(exc).__name__}: {exc}')\n"
        "print('\\n'.join(bad))\n"
    ).replace("{PACKAGES!r}", repr(set(PACKAGES)))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == ""
