"""Command line: ``inferno-mip solve | compare | generate``."""

from __future__ import annotations

import argparse
import json
import sys
from importlib import import_module
from pathlib import Path

from . import __version__
from .errors import ScenarioError
from .policies import SATURATION_POLICIES

EXIT_BAD_INPUT = 2
COMMAND_MODULES = (".tuner.cli", ".queueing.cli", ".sim.cli", ".service.cli", ".k8s.cli")


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
    parser = argparse.ArgumentParser(prog="inferno-mip", description="Accelerator allocation for LLM inference "
                                     "servers by queueing models and mathematical programming.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    p = sub.add_parser("solve", help="allocate accelerators for a scenario and print the allocation")
    _scenario_arguments(p)
    p.add_argument("--solver", default=None,
                   help="greedy, highs, cpsat, pyomo or unlimited (default: unlimited if the scenario has "
                        "unlimited capacity, else greedy with --compat, else highs)")
    p.add_argument("--format", choices=("table", "json", "inferno"), default="table")
    p.add_argument("--output", type=Path, help="write to this file instead of standard output")
    p.set_defaults(run=_solve)

    p = sub.add_parser("compare", help="solve a scenario with several solvers and compare cost, gap and time")
    _scenario_arguments(p)
    p.add_argument("--solvers", default="greedy,highs", help="comma-separated solver names (default greedy,highs)")
    p.set_defaults(run=_compare)

    p = sub.add_parser("generate", help="write a seeded synthetic fleet in inferno's format")
    p.add_argument("output", type=Path, help="folder to write the six inferno files into")
    p.add_argument("--force", action="store_true", help="overwrite the files of an existing, non-empty folder")
    p.add_argument("--servers", type=int, default=100)
    p.add_argument("--accelerators", type=int, default=20)
    p.add_argument("--classes", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tightness", type=float, default=None,
                   help="capacity as a fraction of the estimated demand (default: unlimited)")
    p.set_defaults(run=_generate)

    p = sub.add_parser("bench", help="run solvers over a family of generated scenarios; CSV, markdown, plots")
    p.add_argument("--family", default="balanced", help="scenario family (see inferno_mip.bench.FAMILIES)")
    p.add_argument("--sizes", default="10,100,1000", help="comma-separated numbers of servers")
    p.add_argument("--solvers", default="greedy,highs,cpsat,pyomo")
    p.add_argument("--repeat", type=int, default=3, help="scenarios per size (seeds seed..seed+repeat-1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-limit", type=float, default=60.0, help="seconds per exact solve")
    p.add_argument("--heterogeneous", action="store_true", help="multi-assign formulation")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (each in its own process)")
    p.add_argument("--executor", choices=("local", "ray"), default="local")
    p.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local one)")
    p.add_argument("--output", type=Path, default=Path("bench-results"), help="folder for CSV, summary, plots")
    p.add_argument("--plot", action="store_true", help="also write PNG plots")
    p.set_defaults(run=_bench)

    for module in COMMAND_MODULES:  # each adds its subcommands; they import their heavy parts when run
        import_module(module, __package__).register(sub)
    return parser


def _scenario_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", type=Path, help="scenario folder (inferno's six files) or system-data file (JSON/YAML)")
    p.add_argument("--compat", action="store_true", help="reproduce inferno exactly (queue 10N, its perf models)")
    p.add_argument("--perf-model", help="perf model version: v01, v02, old3, old, new, iteration (default: by data generation)")
    p.add_argument("--batch-rule", choices=("inferno", "optimal", "all"),
                   help="max batch size: inferno's token-scaled rule (default), the optimal concurrency M*, or "
                        "all of these and the current batch as candidates for the solver")
    p.add_argument("--saturation-policy", choices=SATURATION_POLICIES, help="override the scenario's policy")
    p.add_argument("--delayed-best-effort", action="store_true", default=None,
                   help="satisfy every priority level before any best-effort top-up (greedy)")
    p.add_argument("--unlimited", action="store_true", default=None, help="ignore accelerator capacity")
    p.add_argument("--heterogeneous", action="store_true", default=None,
                   help="exact solvers: a server's replicas may run on several accelerator types")
    p.add_argument("--time-limit", type=float, help="exact solvers: seconds for the whole solve (default 60)")
    p.add_argument("--gap", dest="mip_gap", type=float, help="exact solvers: relative optimality gap")
    p.add_argument("--threads", type=int, help="exact solvers: threads")
    p.add_argument("--seed", type=int, help="exact solvers: random seed")
    p.add_argument("--warm-start", choices=("greedy", "current", "none"), help="exact solvers: first incumbent")
    p.add_argument("--max-replica-change", type=int, help="exact solvers: per-server limit on replica changes")
    p.add_argument("--pyomo-solver", help="pyomo backend: appsi_highs (default), cbc, glpk, scip, gurobi, cplex")


OPTION_ARGUMENTS = ("perf_model", "batch_rule", "saturation_policy", "delayed_best_effort", "unlimited", "heterogeneous",
                    "time_limit", "mip_gap", "threads", "seed", "warm_start", "max_replica_change", "pyomo_solver")


def _options(args: argparse.Namespace) -> dict:
    options = {"compat": args.compat}
    options.update({name: getattr(args, name) for name in OPTION_ARGUMENTS if getattr(args, name) is not None})
    return options


def _solve(args: argparse.Namespace) -> int:
    from .api import solve
    from .io import load_scenario
    from .report import format_table

    system = load_scenario(args.path)
    try:
        solution = solve(system, solver=args.solver, **_options(args))
    except ValueError as exc:  # unknown solver or perf model: a usage error, not a crash
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.format == "table":
        text = format_table(solution)
    else:
        text = json.dumps(solution.to_dict() if args.format == "json" else solution.to_inferno(), indent=2)
    _emit(text, args.output)
    return _report_issues(system)


def _compare(args: argparse.Namespace) -> int:
    from .api import solve
    from .io import load_scenario
    from .report import format_comparison

    system = load_scenario(args.path)
    solutions = []
    for name in [s.strip() for s in args.solvers.split(",") if s.strip()]:
        try:
            solutions.append(solve(system, solver=name, **_options(args)))
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    print(format_comparison(solutions))
    return _report_issues(system)


def _generate(args: argparse.Namespace) -> int:
    from .io import write_scenario
    from .scenarios import generate

    try:
        system = generate(servers=args.servers, accelerators=args.accelerators, classes=args.classes,
                          seed=args.seed, tightness=args.tightness)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    folder = write_scenario(system, args.output, overwrite=args.force)
    print(f"wrote {len(system.servers)} servers, {len(system.accelerators)} accelerators to {folder}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from . import bench

    try:
        sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
        solvers = [x.strip() for x in args.solvers.split(",") if x.strip()]
        tasks = bench.tasks(args.family, sizes, solvers, args.repeat, args.seed, args.time_limit, args.heterogeneous)
        if args.executor == "ray":
            records = bench.run_ray(tasks, args.ray_address, progress=bench.progress_bar)
        else:
            records = bench.run_local(tasks, args.jobs, progress=bench.progress_bar)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    args.output.mkdir(parents=True, exist_ok=True)
    bench.write_csv(records, args.output / "results.csv")
    table = bench.summary(records)
    (args.output / "summary.md").write_text(f"Machine: {bench.machine()}\n\n{table}\n", encoding="utf-8")
    print(table)
    if args.plot:
        for path in bench.plot(records, args.output):
            print(f"wrote {path}")
    print(f"wrote {args.output / 'results.csv'} and {args.output / 'summary.md'}")
    return 0


def _emit(text: str, output: Path | None) -> None:
    if output:
        output.write_text(text + "\n", encoding="utf-8")
    else:
        print(text)


def _report_issues(system) -> int:
    for issue in system.issues:
        print(f"{'error' if issue.server else 'warning'}: {issue}", file=sys.stderr)
    return EXIT_BAD_INPUT if system.invalid_servers else 0


if __name__ == "__main__":
    sys.exit(main())
