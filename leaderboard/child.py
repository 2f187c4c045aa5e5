"""``python -m leaderboard.child REQUEST RESULT``: run one configuration in a process of its own.

``submit`` and ``verify`` start this module with the numeric environment pinned by environment
variables (``benchmark.environment.pins``): the BLAS kernels and thread counts are chosen when the
libraries load, so they can only be set for a fresh process. REQUEST is a JSON file
``{"config": {...}, "threads": N, "progress": bool}``; RESULT receives the run's result JSON
(whose ``environment.numeric`` says which kernels were in use), or ``{"error": "..."}`` with exit
status 1. Victims come from the leaderboard zoo of this thread count and numeric environment, so a
victim trained with other kernels is never reused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def leaderboard_cache(threads: int, numeric: str | None = None) -> Iterator[Path]:
    """Victims for leaderboard runs live in their own zoo, one per torch thread count and numeric
    environment (``numeric``: a tag of its kernels, see :func:`zoo_tag`): a victim trained with
    a different number of threads or other kernels (or by hand) can differ in the last float bits,
    so submit and verify share victims trained exactly the way the entry says."""
    from benchmark.paths import cache_dir

    path = cache_dir() / (f"leaderboard-t{threads}" + (f"-{numeric}" if numeric else ""))
    old = os.environ.get("STEALBENCH_CACHE")
    os.environ["STEALBENCH_CACHE"] = str(path)
    try:
        yield path
    finally:
        if old is None:
            os.environ.pop("STEALBENCH_CACHE", None)
        else:
            os.environ["STEALBENCH_CACHE"] = old


def zoo_tag(numeric: dict) -> str:
    from benchmark.environment import key

    text = json.dumps(key(numeric), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


#: child processes under way (``stop_all`` ends them when the parent is interrupted)
RUNNING: set = set()


def stop_all() -> None:
    for proc in list(RUNNING):
        proc.kill()


def run_child(config: dict, threads: int, pins: dict[str, str | None] | None, progress: bool = False) -> dict:
    """Run ``config`` in a fresh process whose environment has ``pins`` applied (a value of None
    unsets the variable; ``pins=None`` leaves this process's environment as it is); returns the
    result JSON. Raises ``StealBenchError`` (one line) if the run failed."""
    import os
    import subprocess
    import tempfile
    from pathlib import Path

    from benchmark.errors import StealBenchError
    from benchmark.io import write_json
    from leaderboard.store import read_entry

    env = dict(os.environ)
    for name, value in (pins or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    root = Path(__file__).resolve().parent.parent
    env["PYTHONPATH"] = os.pathsep.join([str(root), *filter(None, [env.get("PYTHONPATH")])])
    with tempfile.TemporaryDirectory(prefix="stealbench-run-") as tmp:
        request, result = Path(tmp) / "request.json", Path(tmp) / "result.json"
        write_json(request, {"config": config, "threads": int(threads), "progress": progress})
        with subprocess.Popen([sys.executable, "-m", "leaderboard.child", str(request), str(result)], env=env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=None if progress else subprocess.PIPE, text=True) as proc:
            RUNNING.add(proc)
            try:
                _out, err = proc.communicate()
            except BaseException:  # interrupted: the run ends with us
                proc.kill()
                raise
            finally:
                RUNNING.discard(proc)
        data = read_entry(result).data if result.exists() else None
        if proc.returncode != 0 or data is None or "error" in data:
            if data is not None and isinstance(data.get("error"), str):
                raise StealBenchError(data["error"])
            tail = ((err or "").strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
            raise StealBenchError(f"re-run crashed: {tail}")
        return data


def main(argv: list[str]) -> int:
    from benchmark.io import write_json

    request_path, result_path = argv
    try:
        import torch

        from benchmark.config import RunConfig
        from benchmark.environment import numeric_environment
        from benchmark.errors import StealBenchError
        from benchmark.runner import run

        with open(request_path) as fh:
            request = json.load(fh)
        cfg = RunConfig.from_dict(request["config"], source="config")
        threads = int(request["threads"])
        torch.set_num_threads(threads)
        with leaderboard_cache(threads, zoo_tag(numeric_environment())):
            result = run(cfg, progress=bool(request.get("progress"))).to_json()
    except StealBenchError as exc:
        write_json(result_path, {"error": f"re-run failed: {exc}"})
        return 1
    except Exception as exc:  # a plugin's bug is a failed run, reported in one line
        first = (str(exc).splitlines() or [""])[0]
        write_json(result_path, {"error": f"re-run crashed: {type(exc).__name__}: {first}"})
        return 1
    write_json(result_path, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
