"""The ``harness`` command line.

Bad input is one line on stderr and exit code 2 (``HarnessError``); a failed job is exit code 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from harness.errors import HarnessError


def _print_load_errors(registry) -> None:
    for line in registry.load_errors:
        print(f"warning: {line}", file=sys.stderr)


def cmd_plugins(args: argparse.Namespace) -> int:
    from harness.registry import get_registry

    registry = get_registry()
    _print_load_errors(registry)
    plugins = registry.list()
    if args.json:
        json.dump(plugins, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    from tabulate import tabulate

    rows = []
    for p in plugins:
        params = ", ".join(f"{k}={v!r}" for k, v in p["params"].items())
        rows.append([p["kind"], p["name"], f"{p['distribution']} {p['version']}", p["description"], params])
    print(tabulate(rows, headers=["kind", "name", "distribution", "description", "params"], maxcolwidths=[None, None, None, 50, 60]))
    return 0


def _load(path: str):
    from harness.registry import get_registry
    from harness.suite import expand, load_suite

    registry = get_registry()
    _print_load_errors(registry)
    suite = load_suite(path)
    return suite, expand(suite, source=path, registry=registry)


def cmd_validate(args: argparse.Namespace) -> int:
    suite, jobs = _load(args.suite)
    print(f"{args.suite}: suite {suite.name!r} is valid: {len(jobs)} job(s)")
    for job in jobs:
        print(f"  {job.id}  {job.display}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from harness.executors import run_suite

    suite, jobs = _load(args.suite)
    summary = run_suite(
        suite,
        jobs,
        out=args.out,
        executor=args.executor,
        address=args.address,
        retry_failed=args.retry_failed,
        force=args.force,
    )
    return 0 if not summary.failed else 1


def cmd_evaluate(args: argparse.Namespace) -> int:
    from harness.reevaluate import reevaluate

    failed = reevaluate(args.runs_dir, evaluations=args.evaluation)
    return 0 if not failed else 1


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from harness.leaderboard import build_leaderboard

    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    bad = sorted(set(formats) - {"md", "html", "csv"})
    if bad:
        raise HarnessError(f"--format: unknown format {bad[0]!r}; choose from md, html, csv")
    out = build_leaderboard(args.runs_dir, out=args.out, formats=formats, command=" ".join(["harness", *sys.argv[1:]]))
    print(f"leaderboard written to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Benchmark contrastive objectives: train two-tower models from a suite grid and measure the "
        "modality/contrastive gap and downstream tasks.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("plugins", help="list every loss, encoder, dataset and evaluation plugin")
    p.add_argument("--json", action="store_true", help="print list_plugins() as JSON (load errors go to stderr)")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("validate", help="check a suite file and print its grid of jobs")
    p.add_argument("suite", help="path to a suite YAML file")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("run", help="train and evaluate every job of a suite (resumable)")
    p.add_argument("suite", help="path to a suite YAML file")
    p.add_argument("--out", default="runs", help="results root; jobs go to OUT/<suite>/<job-id>/ (default: runs)")
    p.add_argument("--executor", choices=["local", "ray"], default="local", help="in-process (default) or Ray tasks")
    p.add_argument("--address", default=None, help="with --executor ray: join this existing Ray cluster")
    p.add_argument("--retry-failed", action="store_true", help="re-run jobs that failed before")
    p.add_argument("--force", action="store_true", help="re-run every job, finished ones included")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("evaluate", help="re-run evaluations from saved embeddings, without retraining")
    p.add_argument("runs_dir", help="a suite's results directory (runs/<suite>) or one job's directory")
    p.add_argument("--evaluation", action="append", default=None, help="only this evaluation (repeatable)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("leaderboard", help="aggregate results into Markdown, HTML and CSV tables")
    p.add_argument("runs_dir", help="a results directory, e.g. runs/gap")
    p.add_argument("--out", default=None, help="output directory (default: leaderboard/<suite name>)")
    p.add_argument("--format", default="md,html,csv", help="comma list of md, html, csv (default: all)")
    p.set_defaults(func=cmd_leaderboard)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
