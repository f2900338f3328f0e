"""Human-readable rendering of a Solution."""

from __future__ import annotations

from .solution import Solution

COLUMNS = ("server", "class", "load req/s", "accelerator", "repl", "batch", "cost", "ITL ms (SLO)", "TTFT ms (SLO)", "util",
           "status", "why")


def format_table(solution: Solution) -> str:
    """One row per server, then totals: cost, cards used per type against capacity, solve time."""
    rows = [COLUMNS]
    for a in solution.allocations:
        rows.append((
            a.name, a.service_class, f"{a.arrival_rate:.4g}", a.accelerator or "-", str(a.replicas), str(a.max_batch or "-"),
            f"{a.cost:.2f}", _vs(a.itl, a.itl_target, a.replicas), _vs(a.ttft, a.ttft_target, a.replicas),
            f"{a.rho:.2f}" if a.replicas else "-", a.status, a.reason,
        ))
    widths = [max(len(r[k]) for r in rows) for k in range(len(COLUMNS) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
    lines.insert(1, "-" * min(200, sum(widths) + 2 * len(widths) + 3))
    lines.append("")
    lines.append(f"solver {solution.solver} ({solution.status})   total cost {solution.total_cost:.2f}   "
                 + "   ".join(f"{status} {n}" for status, n in solution.counts().items()))
    if solution.bound is not None:
        gap = "-" if solution.gap is None else f"{solution.gap:.2e}"
        lines.append(f"objective (transition value) {_num(solution.objective)}   best bound {_num(solution.bound)}"
                     f"   gap {gap}")
    if solution.message:
        lines.append(f"note: {solution.message}")
    usage = [f"{t} {used}/{_cap(solution.capacity.get(t))}" for t, used in solution.units_used.items()
             if used or solution.capacity.get(t)]
    lines.append("cards used/capacity: " + ", ".join(usage))
    t = solution.timings
    lines.append(f"time: sizing {t.get('sizing', 0) * 1e3:.1f} ms, solve {t.get('solve', 0) * 1e3:.1f} ms, "
                 f"total {t.get('total', 0) * 1e3:.1f} ms")
    return "\n".join(lines)


def _vs(value: float, target: float, replicas: int) -> str:
    if not replicas:
        return "-"
    return f"{value:.2f} ({target:g})" if target else f"{value:.2f} (-)"


def _cap(capacity: float | None) -> str:
    return "inf" if capacity is None or capacity == float("inf") else f"{capacity:g}"


def format_comparison(solutions: list[Solution]) -> str:
    """One row per solver: status, total cost, objective (transition value), bound, gap, servers served, time."""
    best = min((s.objective for s in solutions if s.objective is not None), default=None)
    header = ("solver", "status", "total cost", "objective", "bound", "gap", "vs best", "ok", "best-effort",
              "unserved", "time ms")
    rows = [header]
    for s in solutions:
        counts = s.counts()
        unserved = sum(n for status, n in counts.items() if status not in ("ok", "best-effort", "zero-load"))
        rows.append((
            s.solver, s.status, f"{s.total_cost:.2f}", _num(s.objective), _num(s.bound),
            "-" if s.gap is None else f"{s.gap:.2e}",
            "-" if best is None or s.objective is None else f"{(s.objective - best) / max(abs(best), 1e-9):+.2%}",
            str(counts.get("ok", 0)), str(counts.get("best-effort", 0)), str(unserved),
            f"{s.timings.get('total', 0) * 1e3:.1f}"))
    widths = [max(len(r[k]) for r in rows) for k in range(len(header))]
    lines = ["  ".join(cell.rjust(w) if k >= 2 else cell.ljust(w) for k, (cell, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
