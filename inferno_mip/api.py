"""The public entry point: ``solve(system, solver=..., **options) -> Solution``."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path

from .io import load_scenario, parse_system
from .options import DEFAULT_TIME_LIMIT, check_options
from .solution import Solution, build_solution
from .spec import CurrentAllocation, Load, OptimizerOptions, System
from .tables import Settings, SizingCache, build_table

_LOG = logging.getLogger(__name__)  # stage progress for `solve --verbose`
SETTINGS_OPTIONS = frozenset(Settings.__dataclass_fields__)
SYSTEM_OPTIONS = frozenset(OptimizerOptions.model_fields)
SOLVER_OPTIONS = frozenset({"time_limit", "mip_gap", "threads", "seed", "warm_start", "best_effort",
                            "max_replica_change", "pyomo_solver", "speedups"})


def reject_unknown_options(options: Mapping) -> None:
    """TypeError naming the options `solve()` does not take, and the ones it does."""
    unknown = set(options) - SETTINGS_OPTIONS - SYSTEM_OPTIONS - SOLVER_OPTIONS
    if unknown:
        known = sorted(SETTINGS_OPTIONS | SYSTEM_OPTIONS | SOLVER_OPTIONS)
        raise TypeError(f"unknown option(s) {', '.join(sorted(unknown))}; known: {', '.join(known)}")


def solve(system: System | Mapping | str | Path, solver: str | None = None, *, params: Mapping | None = None,
          sizing_cache: SizingCache | None = None, **options) -> Solution:
    """Allocate accelerators to every server of `system`; pure and deterministic.

    `system` is a :class:`System`, inferno's SystemData as a dict, or a scenario path.
    `solver` is a registered backend name (see ``inferno_mip.solvers.SOLVERS``); by default ``greedy`` with
    ``compat`` (inferno's algorithm), ``unlimited`` when the system has unlimited capacity, else ``highs``.
    Options: ``compat`` (reproduce inferno exactly), ``perf_model``, ``queue_ratio``, ``max_num_tokens``
    (candidate settings); any optimizer option of the system (``saturation_policy``, ``delayed_best_effort``,
    ``unlimited``, ``heterogeneous``) to override it; for the exact solvers ``time_limit`` (s, for the whole call, sizing included),
    ``mip_gap``, ``threads``, ``seed``, ``warm_start`` (greedy, current, none), ``best_effort``,
    ``max_replica_change``, ``pyomo_solver`` and ``speedups`` ('default', 'all', 'none', or names from
    ``inferno_mip.models.lexicographic.SPEEDUPS``; each exact). `params` maps (model, accelerator) to tuned perf parameters
    {alpha, beta, gamma} (e.g. from ``inferno_mip.tuner``); they replace the scenario's before sizing.
    For repeated solves of one fleet (a controller's cycles) :class:`Solver` gives the same answers faster;
    `sizing_cache` (a :class:`inferno_mip.tables.SizingCache`, not shared between threads) does the same for a
    caller that keeps one across calls of its own.
    """
    return _solve(system, solver, params, options, sizing_cache)


class Solver:
    """Repeated solves of one fleet, e.g. a controller's cycles: ``s = Solver(system, **options)``, then
    ``s.update(loads={...})`` each cycle.

    Every call answers exactly as ``solve(system, solver, params=params, **options)`` would; what it keeps
    between calls is the sizing of each server (the rate a replica sustains within its SLO does not depend on the
    load, see :class:`inferno_mip.tables.SizingCache`), so a load or current-allocation change only recomputes
    replica counts, costs and values.
    """

    def __init__(self, system: System | Mapping | str | Path, solver: str | None = None, *,
                 params: Mapping | None = None, **options):
        reject_unknown_options(options)
        check_options(options)
        self.system = _as_system(system)
        self.solver, self.params, self.options = solver, params, dict(options)
        self._cache = SizingCache()

    def solve(self) -> Solution:
        """The allocation of the current system."""
        return _solve(self.system, self.solver, self.params, self.options, self._cache)

    def update(self, system: System | Mapping | str | Path | None = None, *, loads: Mapping | None = None,
               current: Mapping | None = None) -> Solution:
        """Solve again after a change: a whole new `system`, and/or new `loads` or `current` allocations by
        server name (each a :class:`Load` / :class:`CurrentAllocation` or its fields as a dict)."""
        if system is not None:
            self.system = _as_system(system)
        if loads or current:
            self.system = _with_server_changes(self.system, loads or {}, current or {})
        return self.solve()


def _with_server_changes(system: System, loads: Mapping, current: Mapping) -> System:
    """`system` with some servers' loads and current allocations replaced (ValueError naming an unknown one)."""
    names = {s.name for s in system.servers}
    for what, changes in (("loads", loads), ("current", current)):
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(f"{what}: unknown server(s) {', '.join(map(repr, unknown))}")
    servers = []
    for s in system.servers:
        update = {}
        if s.name in loads:
            update["load"] = _validated(Load, loads[s.name], f"loads[{s.name!r}]")
        if s.name in current:
            update["current"] = _validated(CurrentAllocation, current[s.name], f"current[{s.name!r}]")
        servers.append(s.model_copy(update=update) if update else s)
    return system.replace(servers=tuple(servers))


def _validated(model, value, where: str):
    """`value` as a `model` (given as one or as its fields); a one-line ValueError naming the field otherwise."""
    from pydantic import ValidationError

    if isinstance(value, model):
        return value
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        raise ValueError(f"{where}.{field}: {error['msg']}, got {error.get('input')!r}") from None


def _solve(system, solver: str | None, params: Mapping | None, options: Mapping,
           cache: SizingCache | None = None) -> Solution:
    from .solvers import check_backend, get_solver  # solvers import this package: resolve at call time

    start = time.perf_counter()
    reject_unknown_options(options)
    check_options(options)
    system = _as_system(system)
    if params:
        from .tuner import merge  # the tuner is only needed for tuned solves

        system = merge(system, params)
    settings = Settings(**{k: v for k, v in options.items() if k in SETTINGS_OPTIONS})
    overrides = {k: v for k, v in options.items() if k in SYSTEM_OPTIONS}
    if overrides:
        system = system.with_options(**overrides)
    solver_options = {k: v for k, v in options.items() if k in SOLVER_OPTIONS}
    name = solver or default_solver(system, settings)
    backend = get_solver(name)
    check_backend(name, solver_options)  # a backend that cannot run is an error now, not after sizing

    _LOG.info("sizing %d servers on %d accelerators", len(system.servers), len(system.accelerators))
    table = build_table(system, settings, cache)
    sized = time.perf_counter()
    _LOG.info("sized: %d candidates in %.2f s; solving with %s", len(table), sized - start, name)
    # The caller's budget (or the default) is for the whole call, sizing included.
    solver_options["time_limit"] = max(0.0, solver_options.get("time_limit", DEFAULT_TIME_LIMIT) - (sized - start))
    assignment = backend(table, **system.optimizer.model_dump(), **solver_options)
    solved = time.perf_counter()
    _LOG.info("%s: %s, objective %s, gap %s, %.2f s in all", name, assignment.status,
              "-" if assignment.objective is None else f"{assignment.objective:.6g}",
              "-" if assignment.gap is None else f"{assignment.gap:.1e}", solved - start)
    build = assignment.timings.get("build", 0.0)
    timings = {"sizing": sized - start, "build": build, "solve": solved - sized - build, "total": solved - start,
               **{k: v for k, v in assignment.timings.items() if k.startswith("stage ")}}
    return build_solution(table, assignment, name, invalid=system.invalid_servers, issues=system.issues,
                          timings=timings)


def default_solver(system: System, settings: Settings) -> str:
    """The separable optimum when capacity is unlimited, else inferno's greedy in compat mode, else HiGHS."""
    if system.optimizer.unlimited:
        return "unlimited"
    return "greedy" if settings.compat else "highs"


def _as_system(system: System | Mapping | str | Path) -> System:
    if isinstance(system, System):
        return system
    if isinstance(system, Mapping):
        return parse_system(dict(system))
    if isinstance(system, (str, Path)):
        return load_scenario(system)
    raise TypeError(f"solve() takes a System, a SystemData dict or a scenario path, not {type(system).__name__}")
