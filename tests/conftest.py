import os

import pytest
import torch

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
