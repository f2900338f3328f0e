"""Command line: ``inferno-mip solve | compare | generate``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from importlib import import_module
from pathlib import Path

# Start-up (each only if the environment does not say otherwise): the CLI's linear algebra is small, so
# OpenBLAS' thread pool would only cost time (about 0.1 s of CPU); and pydantic's plugin lookup reads the
# metadata of every installed package (about 0.03 s) for plugins the CLI does not use
# (PYDANTIC_DISABLE_PLUGINS=0 loads them).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "1")

from .arguments import (Parser, bounded_int, fraction, int_list, name_list, non_negative_float, non_negative_int,
                        one_line, one_of, positive_float, positive_int)
from .errors import ScenarioError
from .policies import BATCH_RULES, SATURATION_POLICIES
from .solvers import BACKEND_MODULES

EXIT_BAD_INPUT = 2
LARGE_FLEET = 500  # servers from which a solve on a terminal shows its stages without --verbose
MAX_SERVERS = 100_000  # generated fleets and bench sizes: beyond this a run needs more memory than a host has
# The modules that add subcommands, with the names each adds, so that a command line loads only its own.
COMMAND_MODULES = {".tuner.cli": ("tune", "serve-tuner"), ".queueing.cli": ("analyze", "size"),
                   ".sim.cli": ("simulate",), ".service.cli": ("serve-optimizer",), ".control.cli": ("control",),
                   ".k8s.cli": ("operator",)}


def main(argv: list[str] | None = None) -> int:
    parser = _parser(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed as one line
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    try:
        return args.run(args)
    except ScenarioError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except MemoryError:
        print("error: out of memory: the input needs more memory than this machine has (reduce batch sizes, "
              "token counts or the fleet)", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:
        return 0


class _Version(argparse.Action):
    """``--version``, reading the package metadata only when asked."""

    def __call__(self, parser, namespace, values, option_string=None):
        from . import __version__

        print(f"{parser.prog} {__version__}")
        parser.exit()


def _parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The command-line parser; given the arguments, only their command's module adds its subcommands (the
    full parser, for help and for an unknown command, has them all)."""
    parser = Parser(prog="inferno-mip", description="Accelerator allocation for LLM inference "
                                     "servers by queueing models and mathematical programming.")
    parser.add_argument("--version", action=_Version, nargs=0, help="show the version and exit")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    p = sub.add_parser("solve", help="allocate accelerators for a scenario and print the allocation")
    _scenario_arguments(p)
    p.add_argument("--solver", default=None, type=one_of(BACKEND_MODULES, "solver"),
                   help="greedy, highs, cpsat, pyomo or unlimited (default: unlimited if the scenario has "
                        "unlimited capacity, else greedy with --compat, else highs)")
    p.add_argument("--format", choices=("table", "json", "inferno"), default="table",
                   help="table; json (rates in req/s); inferno's AllocationSolution (arrivalRate in req/min)")
    p.add_argument("--output", type=Path, help="write to this file instead of standard output")
    p.add_argument("--verbose", "-v", action="store_true", help="print stage progress on standard error")
    p.set_defaults(run=_solve)

    p = sub.add_parser("compare", help="solve a scenario with several solvers and compare cost, gap and time")
    _scenario_arguments(p)
    p.add_argument("--solvers", type=name_list(BACKEND_MODULES, "solver"), default=["greedy", "highs"],
                   help="comma-separated solver names (default greedy,highs)")
    p.set_defaults(run=_compare)

    p = sub.add_parser("generate", help="write a seeded synthetic fleet in inferno's format")
    p.add_argument("output", type=Path, help="folder to write the six inferno files into")
    p.add_argument("--force", action="store_true", help="overwrite the files of an existing, non-empty folder")
    p.add_argument("--servers", type=bounded_int(1, MAX_SERVERS), default=100)
    p.add_argument("--accelerators", type=bounded_int(1, 1000), default=20)
    p.add_argument("--classes", type=bounded_int(1, 100), default=3)
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--tightness", type=positive_float, default=None,
                   help="capacity as a fraction of the estimated demand (default: unlimited)")
    p.set_defaults(run=_generate)

    p = sub.add_parser("bench", help="run solvers over a family of generated scenarios; CSV, markdown, plots")
    p.add_argument("--family", default="balanced", help="scenario family (see inferno_mip.bench.FAMILIES)")
    p.add_argument("--sizes", type=int_list(1, MAX_SERVERS), default=[10, 100, 1000],
                   help="comma-separated numbers of servers (default 10,100,1000)")
    p.add_argument("--solvers", type=name_list(BACKEND_MODULES, "solver"), default=["greedy", "highs", "cpsat", "pyomo"],
                   help="comma-separated solver names (default greedy,highs,cpsat,pyomo)")
    p.add_argument("--repeat", type=bounded_int(1, 1000), default=3,
                   help="scenarios per size (seeds seed..seed+repeat-1)")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--time-limit", type=non_negative_float, default=60.0, help="seconds per exact solve")
    p.add_argument("--heterogeneous", action="store_true", help="multi-assign formulation")
    p.add_argument("--jobs", type=bounded_int(1, 256), default=1, help="runs in parallel (each in its own process)")
    p.add_argument("--executor", choices=("local", "ray"), default="local")
    p.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local one)")
    p.add_argument("--output", type=Path, default=Path("bench-results"), help="folder for CSV, summary, plots")
    p.add_argument("--plot", action="store_true", help="also write PNG plots")
    p.set_defaults(run=_bench)

    command = next((a for a in argv or () if not a.startswith("-")), None)
    own = [module for module, commands in COMMAND_MODULES.items() if command in commands]
    for module in own if own or command in sub.choices else COMMAND_MODULES:
        import_module(module, __package__).register(sub)  # each adds its subcommands; heavy parts load when run
    return parser


def _scenario_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", type=Path, help="scenario folder (inferno's six files) or system-data file (JSON/YAML)")
    p.add_argument("--compat", action="store_true", help="reproduce inferno exactly (queue 10N, its perf models)")
    p.add_argument("--perf-model", help="perf model version: v01, v02, old3, old, new, iteration (default: by data generation)")
    p.add_argument("--batch-rule", choices=BATCH_RULES,
                   help="max batch size: inferno's token-scaled rule (default), the optimal concurrency M*, or "
                        "all of these and the current batch as candidates for the solver")
    p.add_argument("--saturation-policy", choices=SATURATION_POLICIES, help="override the scenario's policy")
    p.add_argument("--delayed-best-effort", action="store_true", default=None,
                   help="satisfy every priority level before any best-effort top-up (greedy)")
    p.add_argument("--unlimited", action="store_true", default=None, help="ignore accelerator capacity")
    p.add_argument("--heterogeneous", action="store_true", default=None,
                   help="exact solvers: a server's replicas may run on several accelerator types")
    p.add_argument("--time-limit", type=non_negative_float,
                   help="seconds for the whole call, sizing included (default 60)")
    p.add_argument("--gap", dest="mip_gap", type=fraction, help="exact solvers: relative optimality gap")
    p.add_argument("--threads", type=positive_int, help="exact solvers: threads")
    p.add_argument("--seed", type=non_negative_int, help="exact solvers: random seed")
    p.add_argument("--warm-start", choices=("greedy", "current", "none"), help="exact solvers: first incumbent")
    p.add_argument("--max-replica-change", type=non_negative_int,
                   help="exact solvers: per-server limit on replica changes")
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

    _check_output_file(args.output)  # before the solve, not after it
    system = load_scenario(args.path)
    if args.verbose or (sys.stderr.isatty() and len(system.servers) >= LARGE_FLEET):
        _log_progress()
    try:
        solution = solve(system, solver=args.solver, **_options(args))
    except ValueError as exc:  # unknown solver or perf model: a usage error, not a crash
        print(f"error: {one_line(exc)}", file=sys.stderr)
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
    for name in args.solvers:
        try:
            solutions.append(solve(system, solver=name, **_options(args)))
        except ValueError as exc:
            print(f"error: {one_line(exc)}", file=sys.stderr)
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
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    folder = write_scenario(system, args.output, overwrite=args.force)
    print(f"wrote {len(system.servers)} servers, {len(system.accelerators)} accelerators to {folder}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from . import bench

    try:
        tasks = bench.tasks(args.family, args.sizes, args.solvers, args.repeat, args.seed, args.time_limit,
                            args.heterogeneous)
        _make_folder(args.output)
        with bench.progress_bar(len(tasks)) as progress:
            if args.executor == "ray":
                records = bench.run_ray(tasks, args.ray_address, progress=progress)
            else:
                records = bench.run_local(tasks, args.jobs, progress=progress)
    except ValueError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    bench.write_csv(records, args.output / "results.csv")
    table = bench.summary(records)
    (args.output / "summary.md").write_text(f"Machine: {bench.machine()}\n\n{table}\n", encoding="utf-8")
    print(table)
    if args.plot:
        for path in bench.plot(records, args.output):
            print(f"wrote {path}")
    print(f"wrote {args.output / 'results.csv'} and {args.output / 'summary.md'}")
    return 0


def _log_progress() -> None:
    """Stage progress (sizing, each MIP stage with its objective and bound) on standard error."""
    import logging

    logger = logging.getLogger("inferno_mip")
    if not any(h.get_name() == "inferno-mip-progress" for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.set_name("inferno-mip-progress")
        handler.setFormatter(logging.Formatter("%(relativeCreated)8.0f ms  %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _check_output_file(output: Path | None) -> None:
    if output is None:
        return
    if output.is_dir():
        raise ScenarioError(str(output), "--output", "is a folder; give a file name")
    if not output.parent.is_dir():
        raise ScenarioError(str(output), "--output", f"folder {output.parent} does not exist")


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--output {folder}: cannot create the folder: {exc.strerror}") from None


def _emit(text: str, output: Path | None) -> None:
    if output:
        try:
            output.write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            raise ScenarioError(str(output), "--output", f"cannot write: {exc.strerror}") from None
    else:
        print(text)


def _report_issues(system) -> int:
    for issue in system.issues:
        print(f"{'error' if issue.server else 'warning'}: {issue}", file=sys.stderr)
    return EXIT_BAD_INPUT if system.invalid_servers else 0


if __name__ == "__main__":
    sys.exit(main())
