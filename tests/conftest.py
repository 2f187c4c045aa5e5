import os
import sys
from pathlib import Path

import pytest

# isort: off
import benchmark  # noqa: F401  (before torch and NumPy: drops an OPENBLAS_CORETYPE the CPU cannot run)
import torch
# isort: on

# The test folders mirror the packages (tests/benchmark, tests/attacks, ...) and import the shared
# modules of this folder (helpers, service_plugins) by name, also in the attack processes started with
# ``spawn``, which inherit sys.path: this folder goes on sys.path, and the repository root ahead of it,
# so that a test folder named like a package (no __init__.py) never stands in for the package itself.
TESTS = Path(__file__).resolve().parent
for _path in (TESTS, TESTS.parent):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Every test run gets its own cache folder (never the user's ~/.cache/stealbench)."""
    path = tmp_path_factory.mktemp("stealbench-cache")
    old = os.environ.get("STEALBENCH_CACHE")
    os.environ["STEALBENCH_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("STEALBENCH_CACHE", None)
    else:
        os.environ["STEALBENCH_CACHE"] = old
