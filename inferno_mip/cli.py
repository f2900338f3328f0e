"""Command line: ``inferno-mip solve PATH``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .api import solve
from .errors import ScenarioError
from .io import load_scenario
from .report import format_table
from .spec import SATURATION_POLICIES

EXIT_BAD_INPUT = 2


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:
        return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inferno-mip", description=__doc__)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    p = sub.add_parser("solve", help="allocate accelerators for a scenario and print the allocation")
    p.add_argument("path", type=Path, help="scenario folder (inferno's six files) or system-data file (JSON/YAML)")
    p.add_argument("--solver", default=None, help="backend (default: unlimited if the scenario says so, else greedy)")
    p.add_argument("--format", choices=("table", "json", "inferno"), default="table")
    p.add_argument("--output", type=Path, help="write to this file instead of standard output")
    p.add_argument("--compat", action="store_true", help="reproduce inferno exactly (queue 10N, its perf models)")
    p.add_argument("--perf-model", help="perf model version: v02, old3, old, new (default: by data generation)")
    p.add_argument("--saturation-policy", choices=SATURATION_POLICIES, help="override the scenario's policy")
    p.add_argument("--delayed-best-effort", action="store_true", default=None,
                   help="satisfy every priority level before any best-effort top-up")
    p.add_argument("--unlimited", action="store_true", default=None, help="ignore accelerator capacity")
    p.set_defaults(run=_solve)
    return parser


def _solve(args: argparse.Namespace) -> int:
    system = load_scenario(args.path)
    options = {"compat": args.compat}
    for name in ("perf_model", "saturation_policy", "delayed_best_effort", "unlimited"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    try:
        solution = solve(system, solver=args.solver, **options)
    except ValueError as exc:  # unknown solver or perf model: a usage error, not a crash
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.format == "table":
        text = format_table(solution)
    else:
        text = json.dumps(solution.to_dict() if args.format == "json" else solution.to_inferno(), indent=2)
    if args.output:
        args.output.write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    for issue in system.issues:
        print(f"{'error' if issue.server else 'warning'}: {issue}", file=sys.stderr)
    return EXIT_BAD_INPUT if system.invalid_servers else 0


if __name__ == "__main__":
    sys.exit(main())
