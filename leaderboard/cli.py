"""``python -m leaderboard validate|render|verify|submit``.

Exit status: 0 all good; 1 the check found problems (each printed as one line naming its file);
2 a usage error (one line, ``error: ...``); 130 interrupted. Never a traceback for bad input.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import time
from pathlib import Path

from benchmark.cli import add_run_flags, dispatch
from benchmark.errors import StealBenchError
from leaderboard import ENTRIES, TABLE


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        raise StealBenchError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m leaderboard", description="The StealBench leaderboard: entries, table, checks.")
    p.add_argument("--entries", default=str(ENTRIES), help="folder of entries (default: leaderboard/entries)")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    v = sub.add_parser("validate", help="check every entry (schema, ranges, registry names, duplicates)")
    v.add_argument("files", nargs="*", help="only these entry files (default: all)")

    r = sub.add_parser("render", help="write the table leaderboard/LEADERBOARD.md from the entries")
    r.add_argument("--check", action="store_true", help="write nothing; fail if the table is not up to date")
    r.add_argument("--out", default=str(TABLE), help="the table file (default: leaderboard/LEADERBOARD.md)")

    ve = sub.add_parser("verify", help="re-run entries and fail if a score differs beyond the tolerance")
    ve.add_argument("files", nargs="*", help="only these entry files (default: all)")
    ve.add_argument("--sample", type=int, help="re-run N entries drawn at random (with --sample-seed)")
    ve.add_argument("--sample-seed", dest="sample_seed", type=int, default=0, help="seed of the draw (default 0)")
    ve.add_argument("--cheap", type=float, metavar="SECONDS",
                    help="re-run the entries whose recorded attack took at most SECONDS (with --sample: plus N others)")
    ve.add_argument("--exact", action="store_true", help="require every compared number to be bit-identical, also "
                                                         "where the numeric environment is not reproduced")
    ve.add_argument("--allow-unverified", dest="allow_unverified", action="store_true",
                    help="exit 0 even if some entries could not be re-run in their recorded numeric environment "
                         "here (each is still listed as UNVERIFIED and checked within tolerance)")
    ve.add_argument("--jobs", type=int, default=1, help="entries re-run in parallel (processes; default 1)")

    rs = sub.add_parser("resubmit", help="run entries' configurations again under the leaderboard's numeric "
                                         "environment and replace them (legacy entries: all without one)")
    rs.add_argument("files", nargs="*", help="these entry files (default: every entry recorded without a numeric "
                                             "environment)")
    rs.add_argument("--jobs", type=int, default=1, help="entries re-run in parallel (default 1)")

    s = sub.add_parser("submit", help="run a configuration and write it as a new entry (never overwrites)")
    s.add_argument("--from-result", dest="from_result", help="file this result JSON (from `python -m benchmark "
                                                              "run`/`sweep`) instead of running")
    add_run_flags(s, timing=("simulated",), profiles=("flops",), profile_default="flops",
                  profile_help="always flops: machine-independent, so the entry can be re-run exactly",
                  budget_help="query budget (default: the attack's; recorded explicitly)")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def entries_dir(args: argparse.Namespace, need_entries: bool = True) -> Path:
    """``--entries``, which must be a folder (holding at least one entry, with ``need_entries``)."""
    from leaderboard.store import entry_files

    root = Path(args.entries)
    if not root.is_dir():
        raise StealBenchError(f"--entries {args.entries}: not a folder of entries")
    if need_entries and not entry_files(root):
        raise StealBenchError(f"--entries {args.entries}: no entries (*.json) in this folder")
    return root


def cmd_validate(args: argparse.Namespace) -> int:
    from leaderboard.validate import validate_dir

    entries_dir(args, need_entries=not args.files)
    n, problems = validate_dir(Path(args.entries), [Path(f) for f in args.files] or None)
    for line in problems:
        print(line)
    files = {line.split(": ", 1)[0] for line in problems}
    if problems:
        print(f"validate: {len(problems)} problems in {len(files)} files ({n} entries checked)", file=sys.stderr)
        return 1
    print(f"validate: {n} entries, all valid")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from benchmark.io import atomic_write
    from leaderboard.render import render
    from leaderboard.store import load_entries, show
    from leaderboard.validate import validate_entries

    entries = load_entries(entries_dir(args))
    problems = validate_entries(entries)
    if problems:
        for line in problems:
            print(line)
        print(f"render: {len(problems)} problems; fix them (python -m leaderboard validate) before rendering",
              file=sys.stderr)
        return 1
    text = render(entries)
    out = Path(args.out)
    if args.check:
        current = out.read_text() if out.exists() else None
        if current != text:
            why = "does not exist" if current is None else "is not what the entries render to"
            print(f"{show(out)}: {why}; run `python -m leaderboard render` and commit the result")
            return 1
        print(f"render --check: {show(out)} is up to date ({len(entries)} entries)")
        return 0
    atomic_write(out, lambda fh: fh.write(text.encode()))
    print(f"{show(out)} written ({len(entries)} entries)")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from leaderboard.store import entry_files
    from leaderboard.verify import select, verify_many

    if args.sample is not None and args.sample < 1:
        raise StealBenchError("--sample must be a positive number of entries")
    if args.cheap is not None and not (math.isfinite(args.cheap) and args.cheap >= 0):
        raise StealBenchError(f"--cheap must be a finite number of seconds >= 0, not {args.cheap!r}")
    if args.jobs < 1:
        raise StealBenchError("--jobs must be at least 1")
    files = [Path(f) for f in args.files] if args.files else entry_files(entries_dir(args))
    for f in files:
        if not f.is_file():
            raise StealBenchError(f"{f}: no such entry file")
    chosen = select(files, args.sample, args.sample_seed, args.cheap)
    if not chosen:
        raise StealBenchError(f"no entry selected (of {len(files)}): --cheap {args.cheap:g} s matches none and no "
                              f"--sample was given")
    tol = "bit-identical for every entry" if args.exact else \
        "bit-identical where the numeric environment is reproduced, else per-metric tolerances"
    print(f"verify: re-running {len(chosen)} of {len(files)} entries ({tol}; {args.jobs} job(s))", flush=True)
    start = time.perf_counter()
    outcomes = verify_many(chosen, exact=args.exact, jobs=args.jobs, report=lambda line: print(line, flush=True))
    took = time.perf_counter() - start
    count = {s: sum(o.status == s for o in outcomes) for s in ("ok", "unverified", "fail")}
    bad = count["fail"] or (count["unverified"] and not args.allow_unverified)
    line = (f"verify: {len(outcomes)} entries in {took / 60:.1f} min: {count['ok']} ok (numeric environment "
            f"reproduced, bit-identical), {count['unverified']} unverified here (checked within tolerance), "
            f"{count['fail']} failed")
    if count["unverified"] and not args.allow_unverified:
        line += "; unverified entries fail verify unless --allow-unverified"
    print(line, file=sys.stderr if bad else sys.stdout)
    return 1 if bad else 0


def cmd_submit(args: argparse.Namespace) -> int:
    from leaderboard.store import show
    from leaderboard.submit import import_result, submit

    entries = Path(args.entries)
    if args.from_result:
        path = import_result(Path(args.from_result), entries)
    else:
        from benchmark.cli import config_from_args
        from leaderboard.submit import uncommitted_code

        dirty = uncommitted_code()
        if dirty:
            print(f"warning: uncommitted changes in {', '.join(dirty[:3])}{' ...' if len(dirty) > 3 else ''}; the "
                  f"entry records the last commit, which does not contain them (commit first)", file=sys.stderr)
        path = submit(config_from_args(args), entries, progress=not args.quiet)
    print(f"entry written to {show(path)}; next: python -m leaderboard render, then commit both")
    return 0


def cmd_resubmit(args: argparse.Namespace) -> int:
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from leaderboard.child import stop_all
    from leaderboard.store import entry_files, read_entry, show
    from leaderboard.submit import resubmit
    from leaderboard.validate import validate_dir

    if args.jobs < 1:
        raise StealBenchError("--jobs must be at least 1")
    root = entries_dir(args)
    files = [Path(f) for f in args.files] or [
        p for p in entry_files(root) if not isinstance(((read_entry(p).data or {}).get("environment") or {})
                                                      .get("numeric"), dict)]
    for f in files:
        if not f.is_file():
            raise StealBenchError(f"{f}: no such entry file")
    _, problems = validate_dir(root, files)  # here: plugin registries load once, before the threads
    if problems:
        for line in problems:
            print(line)
        return 1
    print(f"resubmit: {len(files)} entries ({args.jobs} job(s))", flush=True)
    failed = 0
    pool = ThreadPoolExecutor(max_workers=args.jobs)
    try:
        futures = {pool.submit(resubmit, f, root): f for f in files}
        for future in as_completed(futures):
            try:
                print(f"ok    {show(futures[future])} -> {show(future.result())}", flush=True)
            except StealBenchError as exc:
                failed += 1
                print(f"FAIL  {show(futures[future])}: {exc}", flush=True)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        stop_all()
        raise
    pool.shutdown()
    print(f"resubmit: {len(files) - failed} replaced, {failed} failed; next: python -m leaderboard render, then "
          f"commit both", file=sys.stderr if failed else sys.stdout)
    return 1 if failed else 0


def _terminate(signum, frame):  # SIGTERM unwinds like Ctrl-C, so temporary files are cleaned up
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    handlers = {"validate": cmd_validate, "render": cmd_render, "verify": cmd_verify, "submit": cmd_submit,
                "resubmit": cmd_resubmit}
    return dispatch(build_parser(), handlers, argv, "interrupted; no entry was half-written")
