"""Running a sweep: plan the jobs that are not done, hand them to an executor, write each result
(or failure) atomically as it arrives, and summarise."""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.errors import StealBenchError
from benchmark.io import write_json
from benchmark.sweep.jobs import STATE_DONE, STATE_FAILED, STATE_TODO, Job, error_info, failure_record, job_state
from benchmark.sweep.spec import Entry


@contextlib.contextmanager
def sweep_lock(out_dir: Path) -> Iterator[None]:
    """Only one sweep writes into a folder at a time (a second one is refused, not queued)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".sweep.lock", "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StealBenchError(f"another sweep is writing to {out_dir}; wait for it or use another --out") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass
class SweepSummary:
    total: int
    skipped: int = 0  # already done before this invocation
    done: int = 0  # finished now
    failed: int = 0  # failed now
    skipped_failed: int = 0  # failed before, not retried
    seconds: float = 0.0
    ran: list[str] = field(default_factory=list)  # ids of the jobs executed now
    failures: list[str] = field(default_factory=list)

    @property
    def complete(self) -> int:
        return self.skipped + self.done

    def line(self) -> str:
        parts = [f"{self.complete}/{self.total} jobs complete ({self.done} now, {self.skipped} already done)"]
        if self.failed or self.skipped_failed:
            parts.append(f"{self.failed + self.skipped_failed} failed")
        return ", ".join(parts) + f" in {self.seconds:.1f} s"


class Progress:
    """tqdm bar: jobs done / failed / left (a no-op when quiet)."""

    def __init__(self, total: int, initial: int, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc="sweep", unit="job", dynamic_ncols=True)
        self.total, self.done, self.failed = total, initial, 0
        self._post()

    def _post(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix(done=self.done, failed=self.failed, left=self.total - self.done - self.failed,
                                 refresh=False)

    def update(self, ok: bool) -> None:
        if ok:
            self.done += 1
        else:
            self.failed += 1
        if self.bar is not None:
            self.bar.update(1)
        self._post()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def plan(jobs: list[Job], out_dir: Path, retry_failed: bool = True) -> tuple[list[Job], dict[str, str]]:
    """The jobs still to run, and the state of every job."""
    states = {job.id: job_state(job, out_dir) for job in jobs}
    todo = [j for j in jobs if states[j.id] == STATE_TODO or (retry_failed and states[j.id] == STATE_FAILED)]
    return todo, states


def run_sweep(jobs: list[Job], out_dir: str | Path, executor: str = "local", workers: int | None = None,
              cpus_per_job: int | None = None, address: str | None = None, retry_failed: bool = True,
              progress: bool = True, on_result: Callable[[Job, dict], None] | None = None) -> SweepSummary:
    """Run the jobs not yet done under ``out_dir`` on the chosen executor, writing one file per job
    as each finishes. KeyboardInterrupt stops the workers and propagates; every file already written
    is complete, and re-running the same sweep picks up where this one stopped."""
    from benchmark.sweep.executors import make_executor

    out_dir = Path(out_dir)
    start = time.perf_counter()
    with sweep_lock(out_dir):
        todo, states = plan(jobs, out_dir, retry_failed)
        summary = SweepSummary(total=len(jobs), skipped=sum(s == STATE_DONE for s in states.values()))
        todo_ids = {j.id for j in todo}
        summary.failures = [i for i, s in states.items() if s == STATE_FAILED and i not in todo_ids]
        summary.skipped_failed = len(summary.failures)
        runner = make_executor(executor, workers=workers, cpus_per_job=cpus_per_job, address=address, jobs=todo)
        write_json(out_dir / "sweep.json", {"jobs": [j.id for j in jobs], "executor": executor,
                                            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        bar = Progress(len(jobs), summary.skipped, progress)
        bar.failed = summary.skipped_failed
        try:
            if todo:
                with runner:
                    for job, outcome in runner.run(todo):
                        outcome = record(job, outcome, out_dir, executor, summary)
                        if on_result is not None:
                            on_result(job, outcome)
                        bar.update(outcome["ok"])
        finally:
            bar.close()
            summary.seconds = time.perf_counter() - start
    return summary


def record(job: Job, outcome: dict[str, Any], out_dir: Path, executor: str,
           summary: SweepSummary) -> dict[str, Any]:
    """Write a finished job's file (atomically): its result, or its error record. A result JSON
    cannot hold (NaN or infinity in it) makes the job failed, with that error; returns the outcome."""
    summary.ran.append(job.id)
    if outcome["ok"]:
        try:
            write_json(job.result_path(out_dir), outcome["result"])
        except StealBenchError as exc:
            outcome = {"ok": False, "error": error_info(exc)}
    if outcome["ok"]:
        with contextlib.suppress(FileNotFoundError):
            job.error_path(out_dir).unlink()
        summary.done += 1
    else:
        write_json(job.error_path(out_dir), failure_record(job, outcome["error"], executor))
        summary.failed += 1
        summary.failures.append(job.id)
    return outcome


def describe(jobs: Iterable[Job], out_dir: Path) -> str:
    """A table of the jobs and their state (``sweep --dry-run``)."""
    import pandas as pd

    rows = [(j.id, Entry(j.config.attack, j.config.attack_options).label,
             Entry(j.config.defense, j.config.defense_options).label,
             Entry(j.config.victim, j.config.victim_options).label, j.config.dataset, j.config.seed,
             job_state(j, out_dir)) for j in jobs]
    frame = pd.DataFrame(rows, columns=["job", "attack", "defense", "victim", "dataset", "seed", "state"])
    return frame.to_markdown(index=False)
