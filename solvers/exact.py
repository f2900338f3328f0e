"""Shared driver of the exact backends: formulation, warm start, lexicographic stages, greedy fallback."""

from __future__ import annotations

import time

import numpy as np

from inferno_mip.models.aggregate import aggregate
from inferno_mip.models.allocation import MipOptions, build
from inferno_mip.models.lexicographic import (Backend, SolveOptions, parse_speedups, separable_optimum,
                                             solve_lexicographic)
from inferno_mip.solution import Assignment, objective_value
from inferno_mip.tables import CandidateTable

from . import greedy

WARM_STARTS = ("greedy", "current", "none")


def solve_exact(table: CandidateTable, backend: Backend, *, heterogeneous: bool = False,
                saturation_policy: str = "None", delayed_best_effort: bool = False, best_effort: bool | None = None,
                max_replica_change: int | None = None, time_limit: float = 60.0, mip_gap: float = 1e-7,
                threads: int = 1, seed: int = 0, warm_start: str = "greedy", speedups="default",
                **_ignored) -> Assignment:
    """Solve `table` exactly with `backend`; on failure return the greedy answer with a status saying so.

    Best effort (partial service) follows the saturation policy unless given: none under policy "None".
    `speedups`: 'default', 'all', 'none' or names from ``models.lexicographic.SPEEDUPS``.
    """
    speedups = parse_speedups(speedups)
    if warm_start not in WARM_STARTS:
        raise ValueError(f"unknown warm_start {warm_start!r}; known: {', '.join(WARM_STARTS)}")
    if best_effort is None:
        best_effort = saturation_policy != "None"
    started = time.perf_counter()
    form = build(table, MipOptions(heterogeneous=heterogeneous, best_effort=best_effort,
                                   max_replica_change=max_replica_change, dominance="dominance" in speedups,
                                   patterns="patterns" in speedups, covers="covers" in speedups))
    timings = {"build": time.perf_counter() - started}
    if "slack" in speedups:  # before the greedy warm start: when capacity does not bind, no MIP is needed at all
        separable = separable_optimum(form)
        timings["stage all (capacity does not bind)"] = time.perf_counter() - started - timings["build"]
        if separable is not None:
            counts = form.counts(separable)
            value = objective_value(table, counts)
            return Assignment(counts=counts, status="optimal", objective=value, bound=value, gap=0.0,
                              timings=timings)
        del timings["stage all (capacity does not bind)"]
    fallback = greedy.solve(table, saturation_policy=saturation_policy if best_effort else "None",
                            delayed_best_effort=delayed_best_effort)
    start = None
    if warm_start == "greedy" and _within_formulation(form, fallback.counts):
        start = form.vector(fallback.counts, table)
    elif warm_start == "current":
        start = form.vector(_current_counts(table, form), table)
    remaining = time_limit - (time.perf_counter() - started)  # the caller's budget covers build and warm start
    if remaining <= 0:
        return _fallback(table, fallback, "time limit spent before the MIP could start", timings, "time-limit")
    try:
        aggregation = aggregate(table, form) if "aggregate" in speedups else None
        if heterogeneous and "aggregate-patterns" in speedups and max_replica_change is None:
            from inferno_mip.models.multi_aggregate import aggregate_multi

            built = time.perf_counter()
            aggregation = aggregate_multi(table, form)
            timings["stage aggregate patterns"] = time.perf_counter() - built
        remaining = time_limit - (time.perf_counter() - started)  # building an aggregation counts too
        result = solve_lexicographic(form, backend, SolveOptions(remaining, mip_gap, threads, seed, speedups), start,
                                     aggregation)
    except Exception as exc:  # a backend crash must not take the caller down: answer with the greedy plan
        return _fallback(table, fallback, f"exact solver error: {exc}", timings)
    if result.x is None:
        return _fallback(table, fallback, result.message or "exact solver found no solution in time", timings)
    counts = form.counts(result.x)
    timings.update({f"stage {name}": seconds for name, _, _, seconds in result.stages})
    if (result.status != "optimal" and start is not None and warm_start == "greedy"
            and _stage_key(form, start) < _stage_key(form, result.x)):
        # Stopped early, the exact solver never answers worse than its own warm start.
        return _fallback(table, fallback, "the greedy answer is better than the exact solver's within the time "
                                          "limit", timings, "time-limit")
    return Assignment(counts=counts, status=result.status, objective=objective_value(table, counts),
                      bound=_bound_in_value(result, table, counts), gap=result.gap, message=result.message,
                      timings=timings)


def _stage_key(form, x: np.ndarray) -> tuple[float, ...]:
    """The lexicographic objectives of a solution vector, all to be minimised."""
    return tuple(float(-(stage.c @ x) if stage.maximize else stage.c @ x) for stage in form.stages)


def _bound_in_value(result, table, counts) -> float | None:
    if result.bound is None or result.objective is None:
        return None
    # The value stage's objective equals objective_value for single-assign; shift the bound the same way.
    return result.bound + (objective_value(table, counts) - result.objective)


def _fallback(table: CandidateTable, greedy_answer: Assignment, why: str, timings: dict,
              status: str = "fallback-greedy") -> Assignment:
    return Assignment(counts=greedy_answer.counts, status=status,
                      objective=objective_value(table, greedy_answer.counts), message=why, timings=timings)


def _within_formulation(form, counts: np.ndarray) -> bool:
    """The greedy answer only uses candidates the presolve kept (else it is no valid warm start)."""
    used = np.flatnonzero(counts)
    return bool(np.isin(used, form.candidates).all())


def _current_counts(table: CandidateTable, form) -> np.ndarray:
    """The current allocation as replicas per candidate, where a kept candidate matches it."""
    counts = np.zeros(len(table), dtype=np.int64)
    for c in form.candidates:
        row = table.rows[int(table.server[c])]
        cur = row.server.current
        if cur.accelerator and table.accelerators[int(table.acc[c])].name == cur.accelerator:
            counts[c] = min(cur.num_replicas, int(table.replicas[c]))
    return counts
