"""Command line: ``python -m benchmark run|serve|list|victims info ...``.

Every user error ends as one line on stderr and exit status 2, never a traceback; results are
written atomically, so an interrupted run leaves nothing half-written.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from benchmark.errors import StealBenchError, one_line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        raise StealBenchError(f"{self.prog}: {message}")


MAX_ACCOUNTS = 10_000  # serve --accounts
RUN_FLAGS = ("attack", "defense", "victim", "dataset", "query_data", "budget", "seed", "timing", "timing_profile",
             "device", "substitute_arch", "data_root", "download")


def add_run_flags(p: argparse.ArgumentParser, *, timing: tuple[str, ...] = ("simulated", "measured"),
                  profiles: tuple[str, ...] = ("calibrated", "flops"), profile_default: str | None = None,
                  profile_help: str = "simulated timing: latency profile measured on the local machine or derived "
                                      "from FLOPs",
                  budget_help: str = "query budget (default: the attack's)") -> None:
    """The flags that describe one run (``run``, and ``python -m leaderboard submit``)."""
    p.add_argument("--config", help="TOML or YAML file of settings (flags override it)")
    p.add_argument("--preset", help="a named configuration, e.g. paper:vgg16-cifar10")
    for name in ("attack", "defense", "victim", "dataset"):
        p.add_argument(f"--{name}")
    p.add_argument("--query-data", dest="query_data")
    p.add_argument("--budget", type=int, help=budget_help)
    p.add_argument("--seed", type=int)
    p.add_argument("--timing", choices=timing)
    p.add_argument("--timing-profile", dest="timing_profile", choices=profiles, default=profile_default,
                   help=profile_help)
    p.add_argument("--device", help="cpu (default) or cuda[:N]")
    p.add_argument("--substitute-arch", dest="substitute_arch", help="attacker's backbone family (default: victim's)")
    p.add_argument("--data-root", dest="data_root")
    p.add_argument("--download", action="store_true", default=None, help="allow torchvision to download data")
    p.add_argument("--epochs", type=int, help="victim training epochs (shortcut for --victim-opt epochs=N)")
    for kind in ("attack", "defense", "victim"):
        p.add_argument(f"--{kind}-opt", dest=f"{kind}_opt", action="append", default=[], metavar="KEY=VALUE",
                       help=f"{kind} option (repeatable); see `list`")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m benchmark", description="StealBench: model-stealing attacks vs defenses.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    r = sub.add_parser("run", help="run one attack against one defended victim and score it")
    add_run_flags(r)
    r.add_argument("--out", help="result JSON path (default: results/<time>-<attack>-<defense>-<victim>.json)")
    r.add_argument("--retrain", action="store_true", help="train the victim again even if cached")
    r.add_argument("--quiet", action="store_true", help="no progress bars")

    sv = sub.add_parser("serve", help="serve one defended victim over HTTP on localhost to an attack written "
                                      "elsewhere; a POSTed substitute is scored like `run` (docs/service.md)")
    sv.add_argument("--config", help="TOML or YAML file of settings (flags override it)")
    for name in ("defense", "victim", "dataset"):
        sv.add_argument(f"--{name}")
    sv.add_argument("--query-data", dest="query_data", help="query set whose held-out tail scores closeness")
    sv.add_argument("--budget", type=int, help="query budget, shared by the attacker's accounts (required)")
    sv.add_argument("--accounts", type=int, default=1,
                    help="attacker accounts a client may open, sharing the budget (default 1)")
    sv.add_argument("--seed", type=int)
    sv.add_argument("--data-seed", dest="data_seed", type=int)
    sv.add_argument("--timing", choices=("simulated", "measured"),
                    help="measured: real per-sample wall clock, and each answer is held until its defended "
                         "latency has passed (see --sleep)")
    sv.add_argument("--timing-profile", dest="timing_profile", choices=("calibrated", "flops"))
    sv.add_argument("--sleep", action="store_true",
                    help="hold each answer until the defended latency has passed since the request arrived "
                         "(always on with --timing measured)")
    sv.add_argument("--device", help="cpu (default) or cuda[:N]")
    sv.add_argument("--data-root", dest="data_root")
    sv.add_argument("--download", action="store_true", default=None, help="allow torchvision to download data")
    sv.add_argument("--epochs", type=int, help="victim training epochs (shortcut for --victim-opt epochs=N)")
    for kind in ("defense", "victim"):
        sv.add_argument(f"--{kind}-opt", dest=f"{kind}_opt", action="append", default=[], metavar="KEY=VALUE",
                        help=f"{kind} option (repeatable); see `list`")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: loopback only)")
    sv.add_argument("--port", type=int, default=0, help="TCP port (default 0: a free port, printed)")
    sv.add_argument("--out", help="result JSON path (default: results/<time>-external-<defense>-<victim>.json)")
    sv.add_argument("--quiet", action="store_true", help="no progress bars")

    ls = sub.add_parser("list", help="list registered attacks, defenses, victims and data")
    ls.add_argument("--options", action="store_true", help="also show each plugin's options and defaults")

    v = sub.add_parser("victims", help="victim zoo tools")
    vsub = v.add_subparsers(dest="victims_command", required=True, parser_class=_Parser)
    info = vsub.add_parser("info", help="exits and FLOPs of a victim architecture")
    info.add_argument("name")
    info.add_argument("--dataset", default="synthetic")
    info.add_argument("--victim-opt", dest="victim_opt", action="append", default=[], metavar="KEY=VALUE")
    info.add_argument("--json", action="store_true")

    sw = sub.add_parser("sweep", help="run the attack x defense x victim x dataset x seed grid, one job per cell",
                        description="Entries: NAME[:KEY=VALUE[:KEY=VALUE...]], comma-separated, e.g. "
                                    "--defenses none,jitter:size=2:keyed=true,padding. See the README, section Sweeps.")
    sw.add_argument("--config", help="TOML or YAML sweep file (flags override it)")
    sw.add_argument("--attacks", help="e.g. ours,knockoff or ours,ours:repeats=4")
    sw.add_argument("--defenses", help="e.g. none,jitter:size=2,padding")
    sw.add_argument("--victims", help="e.g. sdn-tiny,sdn-vgg16:epochs=20")
    sw.add_argument("--datasets", help="e.g. synthetic,cifar10")
    sw.add_argument("--seeds", help="e.g. 0,1,2 or 0-4")
    for kind in ("attack", "defense", "victim"):
        sw.add_argument(f"--{kind}-opt", dest=f"{kind}_opt", action="append", default=[], metavar="KEY=VALUE",
                        help=f"option for every {kind} entry (repeatable; an entry's own options win)")
    sw.add_argument("--query-data", dest="query_data")
    sw.add_argument("--budget", type=int, help="query budget of every job (default: each attack's)")
    sw.add_argument("--data-seed", dest="data_seed", type=int)
    sw.add_argument("--timing", choices=("simulated", "measured"))
    sw.add_argument("--timing-profile", dest="timing_profile", choices=("calibrated", "flops"))
    sw.add_argument("--device", help="cpu (default) or cuda (with --executor ray each CUDA job gets a GPU)")
    sw.add_argument("--substitute-arch", dest="substitute_arch")
    sw.add_argument("--data-root", dest="data_root")
    sw.add_argument("--download", action="store_true", default=None)
    sw.add_argument("--out", required=True, help="folder of results: one <job>.json (or <job>.error.json) per cell")
    sw.add_argument("--executor", choices=("local", "ray"), default="local",
                    help="local: a process pool on the local machine (default); ray: Ray tasks")
    sw.add_argument("--workers", type=int, help="parallel jobs (local: processes, default min(cores, jobs); "
                                                "ray: CPUs of the local Ray instance)")
    sw.add_argument("--cpus-per-job", dest="cpus_per_job", type=int,
                    help="torch threads (and Ray CPUs) per job (default local: cores // workers; ray: 1)")
    sw.add_argument("--address", help="Ray cluster to join, e.g. auto or ray://head:10001 (default: a local Ray)")
    sw.add_argument("--no-retry-failed", dest="retry_failed", action="store_false",
                    help="leave jobs that failed before as they are (default: retry them)")
    sw.add_argument("--dry-run", action="store_true", help="list the jobs and their state; run nothing")
    sw.add_argument("--quiet", action="store_true", help="no progress bar")

    rp = sub.add_parser("report", help="summary table (CSV) and plots (PNG) of a folder of results")
    rp.add_argument("results_dir")
    rp.add_argument("--out", help="where to write (default: RESULTS_DIR/report)")
    rp.add_argument("--no-plots", dest="plots", action="store_false", help="tables only")

    cp = sub.add_parser("compare", help="paired-seed comparison of two sets of result JSONs (A vs B, by seed)")
    cp.add_argument("a", nargs="+", metavar="A.json", help="results of configuration A, one per seed")
    cp.add_argument("--against", nargs="+", required=True, metavar="B.json",
                    help="results of configuration B, one per seed (paired with A by config.seed)")
    cp.add_argument("--metric", action="append",
                    help="score to compare (repeatable; default: clo_query, clo, acc, cc_ratio where present)")
    cp.add_argument("--json", action="store_true", help="print one JSON list instead of text")
    return p


def config_from_args(args: argparse.Namespace):
    from benchmark.config import RunConfig, check_options_table, load_config_file
    from benchmark.options import parse_kv

    settings: dict = {}
    if args.preset:
        from benchmark.presets import apply_preset

        settings.update(apply_preset(args.preset))
    if args.config:
        settings.update(load_config_file(args.config))
    for name in RUN_FLAGS:
        value = getattr(args, name)
        if value is not None:
            settings[name] = value
    source = args.config or "flags"
    for kind in ("attack", "defense", "victim"):
        opts = dict(check_options_table(settings.get(f"{kind}_options", {}), f"{kind}_options", source))
        opts.update(parse_kv(getattr(args, f"{kind}_opt"), kind))
        settings[f"{kind}_options"] = opts
    if args.epochs is not None:
        settings["victim_options"]["epochs"] = args.epochs
    return RunConfig.from_dict(settings, source=source)


def cmd_run(args: argparse.Namespace) -> int:
    from benchmark.io import check_writable
    from benchmark.report import scores_table
    from benchmark.runner import run

    cfg = config_from_args(args)
    out = Path(args.out) if args.out else Path("results") / (
        f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.attack}-{cfg.defense}-{cfg.victim}-s{cfg.seed}.json")
    check_writable(out)  # before the work, not after it
    if args.retrain:
        import benchmark.zoo as zoo

        zoo.FORCE_RETRAIN = True
    result = run(cfg, progress=not args.quiet)
    result.write(out)
    print(scores_table(result.to_json()))
    print(f"result written to {out}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from benchmark.errors import ConfigError
    from benchmark.io import check_writable
    from benchmark.runner import deploy, score
    from benchmark.service.http import HttpService

    for name in RUN_FLAGS:  # the run flags serve has no use for (the attack is the client's)
        if not hasattr(args, name):
            setattr(args, name, None)
    args.preset, args.attack_opt = None, []
    cfg = config_from_args(args)
    cfg = dataclasses.replace(cfg, attack="external", attack_options={}, substitute_arch=None,
                              **({"data_seed": args.data_seed} if args.data_seed is not None else {}))
    if cfg.budget is None:
        raise ConfigError("--budget is required: the service needs a query budget")
    if not 1 <= args.accounts <= MAX_ACCOUNTS:
        raise ConfigError(f"--accounts must be from 1 to {MAX_ACCOUNTS}, got {args.accounts}")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be from 0 to 65535 (0: a free port), got {args.port}")
    out = Path(args.out) if args.out else Path("results") / (
        f"{time.strftime('%Y%m%d-%H%M%S')}-external-{cfg.defense}-{cfg.victim}-s{cfg.seed}.json")
    check_writable(out)  # before the work, not after it
    try:
        app = HttpService(args.host, args.port, out, hold=args.sleep or cfg.timing == "measured",
                          accounts=args.accounts)
    except (OSError, OverflowError, UnicodeError) as exc:
        raise ConfigError(f"cannot listen on {args.host}:{args.port}: {getattr(exc, 'strerror', None) or exc}") \
            from None
    try:
        deployment = deploy(cfg, progress=not args.quiet, accounts=args.accounts)
        app.attach(deployment, score)
        host, port = app.address
        if host not in ("127.0.0.1", "::1", "localhost"):
            print(f"warning: serving on {host}, not loopback: the service has no authentication", file=sys.stderr)
        accounts = f", {args.accounts} accounts" if args.accounts > 1 else ""
        print(f"serving {cfg.victim} behind {cfg.defense} on http://{host}:{port} (budget {cfg.budget}{accounts})",
              flush=True)
        result = app.serve_forever()
    finally:
        app.httpd.server_close()
    if result is None:
        return 1
    print(f"result written to {out}", flush=True)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from benchmark.data import QUERY_SETS, TASKS
    from benchmark.options import option_fields
    from benchmark.plugins import ATTACKS, DEFENSES, VICTIMS

    for title, reg in (("attacks", ATTACKS), ("defenses", DEFENSES), ("victims", VICTIMS)):
        print(f"{title}:")
        for name in reg.names():
            cls = reg[name]
            doc = (cls.__doc__ or "").strip().splitlines()
            print(f"  {name:<16} {doc[0] if doc else ''}")
            if args.options and dataclasses.is_dataclass(cls):
                for fname, f in option_fields(cls).items():
                    default = f.default if f.default is not dataclasses.MISSING else "(required)"
                    print(f"      {fname} = {default}")
    print("datasets:\n  " + ", ".join(TASKS.names()))
    print("query sets:\n  " + ", ".join(QUERY_SETS.names()))
    return 0


def cmd_victims(args: argparse.Namespace) -> int:
    from benchmark.options import parse_kv
    from benchmark.victims_info import victims_info

    print(victims_info(args.name, args.dataset, parse_kv(args.victim_opt, "victim"), args.json))
    return 0


SWEEP_SHARED_FLAGS = ("query_data", "budget", "data_seed", "timing", "timing_profile", "device", "substitute_arch",
                      "data_root", "download")


def cmd_sweep(args: argparse.Namespace) -> int:
    from benchmark.config import check_options_table, load_config_file
    from benchmark.io import check_writable_dir
    from benchmark.options import parse_kv
    from benchmark.runner import check_device
    from benchmark.sweep import AXES, STATE_DONE, build_spec, describe, job_state, run_sweep

    settings: dict = load_config_file(args.config) if args.config else {}
    for name in (*AXES, *SWEEP_SHARED_FLAGS):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    for kind in ("attack", "defense", "victim"):
        opts = parse_kv(getattr(args, f"{kind}_opt"), kind)
        if opts:
            base = settings.get(f"{kind}_options") or {}
            check_options_table(base, f"{kind}_options", args.config or "flags")
            settings[f"{kind}_options"] = {**base, **opts}
    jobs = build_spec(settings, source=args.config or "flags").jobs()
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise StealBenchError(f"--out {out} is a file; give a folder")
    if args.dry_run:
        print(describe(jobs, out))
        return 0
    check_writable_dir(out)
    if args.executor == "local":
        for device in {job.config.device for job in jobs}:
            check_device(device)
    try:
        summary = run_sweep(jobs, out, args.executor, args.workers, args.cpus_per_job, args.address,
                            args.retry_failed, progress=not args.quiet)
    except KeyboardInterrupt:
        done = sum(job_state(job, out) == STATE_DONE for job in jobs)
        print(f"interrupted: {done}/{len(jobs)} jobs complete in {out}, each file whole; run the same command "
              f"again to finish the rest", file=sys.stderr)
        return 130
    print(summary.line())
    print(f"results in {out}; summary: python -m benchmark report {out}")
    failed = summary.failed + summary.skipped_failed
    if failed:
        print(f"error: {failed} of {len(jobs)} jobs failed; their errors are in {out}/*.error.json "
              f"(first: {(summary.failures or ['?'])[0]}); run the same command again to retry them",
              file=sys.stderr)
        return 1
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from benchmark.report import write_report

    text, files = write_report(args.results_dir, args.out, plots=args.plots)
    print(text)
    out = Path(args.out) if args.out else Path(args.results_dir) / "report"
    print(f"{len(files)} files written to {out} (runs.csv, summary.csv, summary.md"
          f"{', PNG plots' if args.plots else ''})")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    import json

    from benchmark.errors import ConfigError
    from benchmark.stats import compare_files, format_comparison

    metrics = args.metric or ["clo_query", "clo", "acc", "cc_ratio"]
    out = []
    for metric in metrics:
        try:
            out.append(compare_files(args.a, args.against, metric))
        except ConfigError:
            if args.metric:  # asked for by name: say why not
                raise
    if not out:
        raise ConfigError(f"none of {', '.join(metrics)} could be compared (need numeric scores and >= 2 shared seeds)")
    print(json.dumps(out, indent=1) if args.json else "\n".join(format_comparison(r) for r in out))
    return 0


def dispatch(parser: argparse.ArgumentParser, handlers: dict, argv: list[str] | None, interrupted: str) -> int:
    """Parse ``argv``, run the sub-command's handler; a StealBenchError is one line and exit 2,
    Ctrl-C prints ``interrupted`` and exits 130 (shared by ``benchmark`` and ``leaderboard``)."""
    try:
        args = parser.parse_args(argv)
        return handlers[args.command](args)
    except StealBenchError as exc:  # one line, whatever the message holds
        print(f"error: {one_line(exc, 1000) or type(exc).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    handlers = {"run": cmd_run, "serve": cmd_serve, "list": cmd_list, "victims": cmd_victims, "sweep": cmd_sweep,
                "report": cmd_report, "compare": cmd_compare}
    return dispatch(build_parser(), handlers, argv, "interrupted; nothing half-written was kept")
