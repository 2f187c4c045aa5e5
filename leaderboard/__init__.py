"""The StealBench leaderboard: one schema-versioned JSON per entry under ``leaderboard/entries/``,
a rendered table ``leaderboard/LEADERBOARD.md`` and ``python -m leaderboard`` to validate, render,
verify (re-run) and submit entries. See the README, section Leaderboard.

Modules: ``store`` (where entries live, how they are named and loaded), ``schema`` (what one entry
must hold), ``validate`` (the whole folder), ``render`` (the table), ``verify`` (re-run and compare),
``submit`` (run a configuration and write a new entry), ``child`` (one run in a process of its own, with
the numeric environment pinned: ``benchmark.environment``), ``cli``. See also docs/leaderboard.md.
"""

from pathlib import Path

import benchmark  # noqa: F401  (drops an OPENBLAS_CORETYPE the CPU cannot run, before NumPy loads)

ROOT = Path(__file__).resolve().parent
ENTRIES = ROOT / "entries"
TABLE = ROOT / "LEADERBOARD.md"
