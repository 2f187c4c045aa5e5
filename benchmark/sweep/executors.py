"""Where sweep jobs run: ``local`` (a process pool on the local machine) or ``ray`` (Ray tasks, on a
local Ray instance or a running cluster). Both run the same function, ``execute_job``, and hand
its outcome back to the driver, which writes the job's file (``benchmark.sweep.record``).

Threads: each job runs with ``torch.set_num_threads(cpus_per_job)``. PyTorch otherwise starts one
intra-op thread per core in every process, so N parallel jobs on N cores would run N*N threads
that fight over the cores (oversubscription) and run slower than N jobs of one thread each.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from benchmark.errors import ConfigError, StealBenchError
from benchmark.sweep.jobs import Job, default_workers, error_info

EXECUTORS = ("local", "ray")


def execute_job(config: dict[str, Any], threads: int) -> dict[str, Any]:
    """Run one job; never raises for a job's own failure (it is returned as the outcome)."""
    import torch

    torch.set_num_threads(max(1, threads))
    start = time.perf_counter()
    try:
        from benchmark.config import RunConfig
        from benchmark.runner import run

        result = run(RunConfig.from_dict(config, source="job"), progress=False)
        return {"ok": True, "result": result.to_json(), "seconds": time.perf_counter() - start}
    except (Exception, SystemExit) as exc:  # a job's failure is data, not the sweep's end
        return {"ok": False, "error": error_info(exc), "seconds": time.perf_counter() - start}


def _init_worker(threads: int) -> None:
    # Ctrl-C reaches the whole process group; only the driver handles it (it stops the workers),
    # so a worker never dies half-way through handing back a result.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch

    torch.set_num_threads(max(1, threads))


class LocalExecutor:
    """A ``ProcessPoolExecutor`` (spawn context: torch and fork do not mix). At most ``workers`` jobs
    are submitted at a time, so when a worker process dies (killed, out of memory) the jobs that were
    in flight are known: they are recorded as failed and a fresh pool runs the rest."""

    name = "local"

    def __init__(self, workers: int, cpus_per_job: int, fn=execute_job) -> None:
        import multiprocessing

        self.workers, self.threads, self.fn = workers, cpus_per_job, fn  # fn: a module-level function (tests)
        self._ctx = multiprocessing.get_context("spawn")
        self._pool: ProcessPoolExecutor | None = None

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=self._ctx, initializer=_init_worker,
                                   initargs=(self.threads,))

    def __enter__(self) -> LocalExecutor:
        self._pool = self._new_pool()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self._pool.shutdown(wait=True)
        else:
            self.abort()

    def abort(self) -> None:
        """Stop now: cancel queued jobs and terminate the running ones (their results are lost,
        never half-written: the driver writes files, and only whole ones)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        procs = list((getattr(pool, "_processes", None) or {}).values())
        for proc in procs:
            with contextlib.suppress(Exception):
                proc.terminate()
        for proc in procs:
            with contextlib.suppress(Exception):
                proc.join(timeout=10)
        pool.shutdown(wait=True, cancel_futures=True)  # the pool sees its workers gone and cleans up

    def run(self, jobs: list[Job]) -> Iterator[tuple[Job, dict[str, Any]]]:
        pending = iter(jobs)
        inflight: dict[Future, Job] = {}

        def top_up() -> None:
            while len(inflight) < self.workers:
                job = next(pending, None)
                if job is None:
                    return
                inflight[self._pool.submit(self.fn, job.config.to_json(), self.threads)] = job

        top_up()
        while inflight:
            done, _ = wait(inflight, return_when=FIRST_COMPLETED)
            if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                done, _ = wait(inflight)  # a dead worker breaks the whole pool: every in-flight job ends
                broken = True
            else:
                broken = False
            for fut in done:
                job = inflight.pop(fut)
                try:
                    outcome = fut.result()
                except BrokenProcessPool as exc:
                    outcome = {"ok": False, "error": {
                        "type": "WorkerDied",
                        "message": f"a worker process died while this job ran ({exc}); it (or a job running "
                                   f"beside it) may have been killed or run out of memory",
                        "traceback": ""}}
                except (Exception, SystemExit) as exc:  # e.g. a result that could not be sent back
                    outcome = {"ok": False, "error": error_info(exc)}
                yield job, outcome
            if broken:
                self.abort()
                self._pool = self._new_pool()
            top_up()


class RayExecutor:
    """Each job is one Ray task (``num_cpus=cpus_per_job``; ``num_gpus=1`` for a CUDA job). Joins
    the cluster at ``address`` when given (e.g. ``auto`` or ``ray://head:10001``), else starts a
    local Ray instance on the local machine. Ray places and runs the tasks; results come back to the
    driver as values, so the nodes need no shared folder for results."""

    name = "ray"

    def __init__(self, address: str | None, workers: int | None, cpus_per_job: int) -> None:
        try:
            import ray
        except ImportError:
            raise StealBenchError("--executor ray needs Ray: pip install 'stealbench[ray]'") from None
        self.ray, self.address, self.workers, self.cpus = ray, address, workers, cpus_per_job
        self._started = False
        self._refs: dict[Any, Job] = {}

    def __enter__(self) -> RayExecutor:
        ray = self.ray
        if not ray.is_initialized():
            env = {k: os.environ[k] for k in ("STEALBENCH_CACHE", "STEALBENCH_DATA") if k in os.environ}
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if env:
                kwargs["runtime_env"] = {"env_vars": env}
            if self.address:
                ray.init(address=self.address, **kwargs)
            else:
                ray.init(address="local", num_cpus=self.workers or os.cpu_count() or 1, **kwargs)
            self._started = True
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        if self._started:
            self.ray.shutdown()
            self._started = False

    def abort(self) -> None:
        for ref in list(self._refs):
            with contextlib.suppress(Exception):
                self.ray.cancel(ref, force=True)
        self._refs.clear()

    def run(self, jobs: list[Job]) -> Iterator[tuple[Job, dict[str, Any]]]:
        ray = self.ray
        task = ray.remote(execute_job)
        for job in jobs:
            gpus = 1 if job.config.device.startswith("cuda") else 0
            ref = task.options(num_cpus=self.cpus, num_gpus=gpus, name=job.id).remote(job.config.to_json(),
                                                                                      self.cpus)
            self._refs[ref] = job
        while self._refs:
            ready, _ = ray.wait(list(self._refs), num_returns=1)
            for ref in ready:
                job = self._refs.pop(ref)
                try:
                    outcome = ray.get(ref)
                except Exception as exc:  # the task itself died (worker crash, node lost, cancelled)
                    outcome = {"ok": False, "error": error_info(exc)}
                yield job, outcome


def make_executor(kind: str, workers: int | None = None, cpus_per_job: int | None = None, address: str | None = None,
                  jobs: list[Job] | None = None):
    jobs = jobs or []
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if cpus_per_job is not None and cpus_per_job < 1:
        raise ConfigError(f"--cpus-per-job must be >= 1, got {cpus_per_job}")
    if kind == "local":
        if address:
            raise ConfigError("--address is for --executor ray")
        workers = min(workers, max(1, len(jobs))) if workers else default_workers(len(jobs))  # no idle processes
        cpus = cpus_per_job or max(1, (os.cpu_count() or 1) // workers)
        return LocalExecutor(workers, cpus)
    if kind == "ray":
        for job in jobs:
            if job.config.device not in ("cpu", "cuda"):
                raise ConfigError(f"with --executor ray use --device cuda, not {job.config.device!r}: "
                                  f"Ray assigns each GPU job its GPU")
        return RayExecutor(address, workers, cpus_per_job or 1)
    raise ConfigError(f"--executor must be one of {', '.join(EXECUTORS)}, got {kind!r}")
