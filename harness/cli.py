"""The ``harness`` command line.

Exit codes: 0 success; 1 a job failed, or an internal error; 2 bad input or an operating-system
error the user must act on; 130 interrupted.

- Bad input (``HarnessError``: suite file, plugin names, params) is one line on stderr, exit 2.
- An operating-system error that is the machine's, not the harness's (a full disk, a quota, a
  read-only file system, no permission, an I/O error, too many open files) is one line naming the
  path and the error, exit 2.
- Ctrl-C is ``interrupted``, exit 130, also once the command's work is done (e.g. a Ctrl-C after
  "suite done" while libraries shut down prints no traceback).
- Terminal escape bytes in a message (a label, a path from a file) are shown escaped.
- Any other exception is a bug in the harness or in a plugin, not the user's input: it is not
  swallowed, but a user never sees a bare traceback either. One line on stderr names the error
  and the log file that holds the full traceback; exit 1. ``HARNESS_DEBUG=1`` re-raises instead.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import sys
import threading
import tempfile
import time
import traceback
from pathlib import Path
from typing import Sequence

from harness.errors import HarnessError, one_line, printable
from harness.params import ParamSpec, suggest


def _print_load_errors(registry) -> None:
    for line in registry.load_errors:
        print(printable(f"warning: {line}"), file=sys.stderr)


def _param_lines(info: dict) -> str:
    """One line per parameter: ``name=default (limits): description``."""
    lines = []
    for name, p in info.items():
        spec = ParamSpec(name=name, default=p["default"], type=p["type"], description=p["description"],
                         limits=p["limits"] or {}, choices=p["choices"])
        limits = spec.limits_text()
        text = f"{name}={p['default']!r}" + (f" ({limits})" if limits else "")
        lines.append(text + (f": {p['description']}" if p["description"] else ""))
    return "\n".join(lines)


def cmd_plugins(args: argparse.Namespace) -> int:
    from harness.registry import get_registry

    registry = get_registry()
    _print_load_errors(registry)
    plugins = registry.list()
    if args.name:
        plugins = [p for p in plugins if p["name"] == args.name]
        if not plugins:
            names = sorted({p["name"] for p in registry.list()})
            raise HarnessError(f"no plugin named {args.name!r}{suggest(args.name, names)}; `harness plugins` lists them")
    if args.json:
        json.dump(plugins, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if args.name:
        for p in plugins:
            print(_plugin_detail(registry, p))
        return 0
    from tabulate import tabulate

    rows = []
    for p in plugins:
        extra = ", ".join(p.get("extras") or p.get("supplies") or [])
        rows.append([p["kind"], p["name"], f"{p['distribution']} {p['version']}", _wrap(p["description"], 40),
                     _wrap(_param_lines(p["param_info"]), 60), _wrap(extra, 16)])
    print(tabulate(rows, headers=["kind", "name", "distribution", "description", "params", "extras"],
                   disable_numparse=True))
    return 0


def _wrap(text: str, width: int) -> str:
    """Each line of ``text`` wrapped at ``width`` (tabulate's own wrapping mangles some cells)."""
    import textwrap

    return "\n".join(textwrap.fill(line, width, subsequent_indent="  ") or "" for line in str(text).splitlines())


def _plugin_detail(registry, p: dict) -> str:
    """Everything about one plugin: where it comes from, its docstring, extras and every parameter."""
    import inspect

    from tabulate import tabulate

    entry = registry.get(p["kind"], p["name"])
    doc = inspect.getdoc(entry.factory) or p["description"]
    lines = [f"{p['kind']} {p['name']}  ({p['distribution']} {p['version']})", "", doc, ""]
    if p["kind"] == "loss":
        lines.append(f"extras: {', '.join(p['extras']) or 'none'}")
    if p["kind"] == "dataset":
        lines.append(f"supplies: {', '.join(p['supplies']) or 'nothing beyond pairs'}")
    rows = []
    for name, i in p["param_info"].items():
        spec = ParamSpec(name, i["default"], i["type"], i["description"], i["limits"] or {}, i["choices"])
        rows.append([name] + [_wrap(v, w) for v, w in ((i["type"], 24), (repr(i["default"]), 24),
                                                        (spec.limits_text(), 24), (i["description"], 60))])
    lines.append(tabulate(rows, headers=["param", "type", "default", "limits", "description"], disable_numparse=True)
                 if rows else "params: none")
    return "\n".join(lines) + "\n"


def _load(path: str, log: list[str] | None = None):
    from harness.registry import get_registry
    from harness.suite import expand_grid, load_suite

    registry = get_registry()
    _print_load_errors(registry)
    suite = load_suite(path)
    if log:  # harness run --log: added to the suite's own ``log`` (job ids and numbers unchanged)
        suite = suite.model_copy(update={"log": sorted(set(suite.log) | set(log))})
    return suite, expand_grid(suite, source=path, registry=registry)


def cmd_validate(args: argparse.Namespace) -> int:
    suite, grid = _load(args.suite)
    tuning = grid.tuning_jobs()
    if tuning:
        print(f"{args.suite}: suite {suite.name!r} is valid: {len(tuning)} tuning job(s), then {len(grid.jobs)} "
              f"final job(s) with the values tuning chooses")
    else:
        print(f"{args.suite}: suite {suite.name!r} is valid: {len(grid.jobs)} job(s)")
    tuned = {spec.display for i, spec, _ in grid.objectives if i in grid.trials}
    for job in tuning + grid.jobs:
        shown = "(tuned)     " if job.stage != "tune" and job.objective.display in tuned else job.id
        print(f"  {shown}  {printable(job.display)}")
    return 0


def _positive_int(text: str) -> int:
    """argparse type: an integer from 1 to 1024 (argparse turns the ValueError into a usage error, exit 2)."""
    value = int(text) if text.strip().isdigit() and len(text.strip()) <= 5 else 0
    if not 1 <= value <= 1024:
        raise argparse.ArgumentTypeError(f"expected an integer from 1 to 1024, got {text!r:.40}")
    return value


def cmd_run(args: argparse.Namespace) -> int:
    from harness.executors import run_grid
    from harness.executors.pool import default_jobs

    suite, grid = _load(args.suite, args.log)
    if args.replicates is not None:
        grid = first_replicates(suite, grid, args.replicates)
    summary = run_grid(
        grid,
        out=args.out,
        executor=args.executor,
        address=args.address,
        retry_failed=args.retry_failed,
        force=args.force,
        jobs=args.jobs or default_jobs(suite.resources.model_dump()),
    )
    return 0 if not summary.failed else 1


def first_replicates(suite, grid, n: int):
    """The grid with only the jobs of replicates 0..n-1 (``harness run --replicates N``): the same jobs,
    with the same ids and numbers, as in the whole suite; a smaller first run of a replicated suite."""
    import dataclasses

    if suite.replicates is None:
        raise HarnessError(f"--replicates: suite {suite.name!r} gives seeds, not replicates")
    if n > suite.replicates:
        raise HarnessError(f"--replicates: at most the suite's {suite.replicates} replicates, got {n}")
    return dataclasses.replace(grid, jobs=[j for j in grid.jobs if j.replicate is not None and j.replicate < n])


def cmd_evaluate(args: argparse.Namespace) -> int:
    from harness.reevaluate import reevaluate

    bad, failed = reevaluate(args.runs_dir, evaluations=args.evaluation)
    if bad:
        print(f"error: {len(bad)} job(s) could not be re-evaluated (bad input, said above)", file=sys.stderr)
        return 2
    return 1 if failed else 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from harness.leaderboard import build_leaderboard

    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    bad = sorted(set(formats) - {"md", "html", "csv"})
    if bad:
        raise HarnessError(f"--format: unknown format {bad[0]!r}; choose from md, html, csv")
    out = build_leaderboard(args.runs_dir, out=args.out, formats=formats, command=" ".join(["harness", *sys.argv[1:]]),
                            published=args.published)
    page = out / "index.html" if "html" in formats else out
    print(f"leaderboard written to {out} (open {page})")
    if args.compare is not None:
        from harness.leaderboard.reproduce import compare

        print(compare(out, Path(args.compare)))
    return 0


def cmd_new_plugin(args: argparse.Namespace) -> int:
    from harness.scaffold import names_for, new_plugin

    root = new_plugin(args.name, kind=args.kind, out=args.out)
    n = names_for(args.name)
    print(f"wrote {root}: {args.kind} plugin {n['name']!r} in distribution {n['dist']}")
    print(f"next: pip install -e {root} && harness plugins {n['name']} && python -m pytest {root / 'tests'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from harness import __version__

    parser = argparse.ArgumentParser(
        prog="harness",
        description="Benchmark contrastive objectives: train two-tower models from a suite grid and measure the "
        "modality/contrastive gap and downstream tasks.",
        epilog="Exit codes: 0 ok, 1 a job failed or internal error (traceback in a log file), 2 bad input. "
        "Environment: HARNESS_LOAD_PLUGINS=dist1,dist2 limits third-party plugins (empty: none); "
        "HARNESS_DEBUG=1 shows tracebacks.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=description or help[0].upper() + help[1:] + ".")

    p = add(
        "plugins",
        "list every loss, encoder, dataset and evaluation plugin",
        "List every plugin (kind, name, distribution, version, description, params with defaults). "
        "Plugins that fail to load are reported on stderr.",
    )
    p.add_argument("name", nargs="?", default=None, help="show one plugin in full (every parameter with its "
                   "type, default, limits and description)")
    p.add_argument("--json", action="store_true", help="print list_plugins() as JSON (load errors go to stderr)")
    p.set_defaults(func=cmd_plugins)

    p = add(
        "validate",
        "check a suite file and print its grid of jobs",
        "Check a suite file (fields, plugin names, params) without training; print the number of jobs "
        "and one line per job (id, objective, encoder, dataset, seed). Exit 2 with one line on a bad suite.",
    )
    p.add_argument("suite", help="path to a suite YAML file")
    p.set_defaults(func=cmd_validate)

    p = add(
        "run",
        "train and evaluate every job of a suite (resumable)",
        "Validate a suite, then train and evaluate each job; finished jobs are skipped on re-runs.",
    )
    p.add_argument("suite", help="path to a suite YAML file")
    p.add_argument("--out", default="runs", help="results root; jobs go to OUT/<suite>/<job-id>/ (default: runs)")
    p.add_argument("--executor", choices=["local", "ray"], default="local", help="in-process (default) or Ray tasks")
    p.add_argument("--address", default=None, help="with --executor ray: join this existing Ray cluster")
    p.add_argument("--retry-failed", action="store_true", help="re-run jobs that failed before")
    p.add_argument("--force", action="store_true", help="re-run every job, finished ones included")
    p.add_argument("--jobs", type=_positive_int, default=None, metavar="N",
                   help="local executor: run N jobs at once, each pinned to its resources.cpus_per_job threads "
                        "(default: this machine's CPUs divided by cpus_per_job)")
    p.add_argument("--replicates", type=_positive_int, default=None, metavar="N",
                   help="of a suite of replicates, run only replicates 0..N-1 (the same jobs, ids and numbers as in "
                        "the whole suite)")
    p.add_argument("--log", action="append", choices=["tensorboard"], default=None,
                   help="also write each job's training curves as TensorBoard event files under "
                        "OUT/<suite>/tensorboard/<job-id>/ (as the suite's log: [tensorboard])")
    p.set_defaults(func=cmd_run)

    p = add("evaluate", "re-run evaluations from saved embeddings, without retraining")
    p.add_argument("runs_dir", help="a suite's results directory (runs/<suite>) or one job's directory")
    p.add_argument("--evaluation", action="append", default=None, help="only this evaluation (repeatable)")
    p.set_defaults(func=cmd_evaluate)

    p = add(
        "new-plugin",
        "write a ready, installable plugin distribution to start from",
        "Write harness-NAME/ (pyproject with the harness entry point, the plugin module, a README and a test "
        "that runs harness.testing on it). pip install -e it and it appears in `harness plugins`.",
    )
    p.add_argument("name", help="the plugin's name (the distribution is harness-NAME)")
    p.add_argument("--kind", choices=["loss", "encoder", "dataset", "evaluation"], default="loss",
                   help="what the plugin is (default: loss)")
    p.add_argument("--out", default=".", help="where to write harness-NAME/ (default: the current directory)")
    p.set_defaults(func=cmd_new_plugin)

    p = add("leaderboard", "aggregate results into Markdown, HTML and CSV tables")
    p.add_argument("runs_dir", help="a results directory, e.g. runs/gap")
    p.add_argument("--out", default=None, help="output directory (default: leaderboard/<suite name>)")
    p.add_argument("--format", default="md,html,csv", help="comma list of md, html, csv (default: all)")
    p.add_argument("--compare", default=None, metavar="DIR",
                   help="then say whether the results reproduce those of a committed page, e.g. leaderboard/gap")
    p.add_argument("--published", default=None, metavar="CSV",
                   help="show these published numbers beside the runs' (e.g. suites/paper-dims.published.csv; "
                        "format: harness.leaderboard.published)")
    p.set_defaults(func=cmd_leaderboard)
    return parser


def _write_crash_log(command: str) -> Path:
    """The current exception's traceback in a fresh file under the temp directory."""
    fd, name = tempfile.mkstemp(prefix=f"harness-{command}-{time.strftime('%Y%m%d-%H%M%S')}-", suffix=".log")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(f"harness {' '.join(sys.argv[1:])}\n\n")
        f.write(traceback.format_exc())
    return Path(name)


def os_error_line(exc: OSError) -> str:
    """``error: <path>: <what the system said>`` for an operating-system error."""
    what = exc.strerror or errno.errorcode.get(exc.errno or -1) or str(exc)
    where = f"{exc.filename}: " if exc.filename else ""
    return printable(f"error: {where}{what} (an operating-system error, not a bug in the harness)")


def _exit_quietly_on_interrupt() -> None:
    """From now on a Ctrl-C ends the process with 130 and no traceback: the command's work is done
    (or reported), and a library's shutdown (joining threads, Ray's atexit) must not print one."""
    if threading.current_thread() is not threading.main_thread():
        return

    def leave(signum, frame):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(130)

    signal.signal(signal.SIGINT, leave)


def main(argv: Sequence[str] | None = None) -> int:
    """The console script; ``argv=None`` (the real command line) also makes a late Ctrl-C quiet."""
    try:
        return _main(argv)
    finally:
        if argv is None:
            _exit_quietly_on_interrupt()


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except HarnessError as exc:
        print(printable(f"error: {' '.join(str(exc).split())}"), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `harness plugins --json | head`: the reader left, nothing to report
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except OSError as exc:
        from harness.store import MACHINE_ERRNOS

        if exc.errno not in MACHINE_ERRNOS or os.environ.get("HARNESS_DEBUG"):
            return _internal_error(args, exc)
        print(os_error_line(exc), file=sys.stderr)
        return 2
    except Exception as exc:
        return _internal_error(args, exc)


def _internal_error(args: argparse.Namespace, exc: Exception) -> int:
    """One line naming the error and the log file with its traceback (``HARNESS_DEBUG=1`` re-raises)."""
    if os.environ.get("HARNESS_DEBUG"):
        raise exc
    log = _write_crash_log(args.command)
    print(
        printable(f"error: internal error in `harness {args.command}` ({one_line(exc)}); this is a bug in the harness "
                  f"or a plugin, not in your input; traceback: {log} (HARNESS_DEBUG=1 shows it here)"),
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
