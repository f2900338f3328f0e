"""The public entry point: ``solve(system, solver=..., **options) -> Solution``."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

from .io import load_scenario, parse_system
from .solution import Solution, build_solution
from .spec import OptimizerOptions, System
from .tables import Settings, build_table

SETTINGS_OPTIONS = frozenset(Settings.__dataclass_fields__)
SYSTEM_OPTIONS = frozenset(OptimizerOptions.model_fields)


def solve(system: System | Mapping | str | Path, solver: str | None = None, **options) -> Solution:
    """Allocate accelerators to every server of `system`; pure and deterministic.

    `system` is a :class:`System`, inferno's SystemData as a dict, or a scenario path.
    `solver` is a registered backend name (see ``inferno_mip.solvers.SOLVERS``); by default ``unlimited`` when the
    system says so, else ``greedy``. Options: ``compat`` (reproduce inferno exactly), ``perf_model``,
    ``queue_ratio``, ``max_num_tokens`` (candidate settings); any optimizer option of the system
    (``saturation_policy``, ``delayed_best_effort``, ``unlimited``, ...) to override it; others go to the solver.
    """
    from .solvers import get_solver  # solvers import this package: resolve at call time

    start = time.perf_counter()
    system = _as_system(system)
    settings = Settings(**{k: v for k, v in options.items() if k in SETTINGS_OPTIONS})
    overrides = {k: v for k, v in options.items() if k in SYSTEM_OPTIONS}
    if overrides:
        system = system.with_options(**overrides)
    solver_options = {k: v for k, v in options.items() if k not in SETTINGS_OPTIONS and k not in SYSTEM_OPTIONS}
    name = solver or ("unlimited" if system.optimizer.unlimited else "greedy")
    backend = get_solver(name)

    table = build_table(system, settings)
    sized = time.perf_counter()
    assignment = backend(table, **system.optimizer.model_dump(), **solver_options)
    solved = time.perf_counter()
    timings = {"sizing": sized - start, "solve": solved - sized, "total": solved - start}
    return build_solution(table, assignment, name, invalid=system.invalid_servers, issues=system.issues,
                          timings=timings)


def _as_system(system: System | Mapping | str | Path) -> System:
    if isinstance(system, System):
        return system
    if isinstance(system, Mapping):
        return parse_system(dict(system))
    if isinstance(system, (str, Path)):
        return load_scenario(system)
    raise TypeError(f"solve() takes a System, a SystemData dict or a scenario path, not {type(system).__name__}")
