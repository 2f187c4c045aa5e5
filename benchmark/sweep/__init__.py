"""Sweeps: the attack x defense x victim x dataset x seed grid, one job per cell, resumable.

The package: ``spec`` (the grid), ``jobs`` (one cell each), ``executors`` (a local process pool
or Ray), ``driver`` (runs them, writes the files).

A sweep is a list of jobs; each job is one ``RunConfig`` and writes the same JSON as ``run --out``
to ``DIR/<job id>.json``. The job id is deterministic (the cell's names plus a hash of its whole
configuration), so re-running the same sweep finds the files it already wrote and skips them. A
failed job writes ``DIR/<job id>.error.json`` instead (its error and traceback) and the others go on;
re-running retries it (unless ``retry_failed`` is off) and removes the error file once it succeeds.

Only the driver (this process) writes result files, each atomically (``benchmark.io.write_json``),
so workers on other machines need no shared folder and an interrupted sweep leaves only complete
files. Entry syntax (``--attacks``, ``--defenses``, ``--victims``): comma-separated entries, each
``NAME[:KEY=VALUE[:KEY=VALUE...]]``, e.g. ``none,jitter:size=2:keyed=true,padding``; sweep files
(TOML/YAML) may also give an entry as a table ``{name = "jitter", size = 2}``.
"""

from benchmark.sweep.driver import SweepSummary, describe, plan, record, run_sweep
from benchmark.sweep.jobs import (
    STATE_DONE,
    STATE_FAILED,
    STATE_TODO,
    Job,
    canonical,
    default_workers,
    error_info,
    failure_record,
    job_id,
    job_state,
)
from benchmark.sweep.spec import AXES, MAX_JOBS, Entry, SweepSpec, build_spec, check_spec, parse_seeds

__all__ = ["AXES", "MAX_JOBS", "STATE_DONE", "STATE_FAILED", "STATE_TODO", "Entry", "Job", "SweepSpec", "SweepSummary",
           "build_spec", "canonical", "check_spec", "default_workers", "describe", "error_info", "failure_record",
           "job_id", "job_state", "parse_seeds", "plan", "record", "run_sweep"]
