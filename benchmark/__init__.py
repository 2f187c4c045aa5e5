"""StealBench: model-stealing attacks against defended victims, both sides scored.

``from benchmark import evaluate`` scores a defense against an attack suite (``benchmark.suite``);
the command line is ``python -m benchmark``; the plugin contracts are in ``benchmark.api``."""

import importlib

from benchmark.environment import drop_unrunnable_blas_core

drop_unrunnable_blas_core()  # before anything loads NumPy's OpenBLAS


def __getattr__(name: str):
    if name in ("evaluate", "summarize"):
        return getattr(importlib.import_module("benchmark.suite"), name)
    raise AttributeError(f"module 'benchmark' has no attribute {name!r}")
