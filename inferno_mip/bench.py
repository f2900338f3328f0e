"""Benchmark harness: every solver on every scenario of a family, each run in its own process.

A run that crashes or overruns its hard timeout is recorded as such and the sweep goes on. Scenarios are
generated from seeds, so a re-run with the same seed sees the same scenarios (and gets the same costs).
Results: one CSV row per run, a markdown summary (medians over repeats, ratios between solvers of the same run)
and, on request, plots.
"""

from __future__ import annotations

import csv
import math
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path

FAMILIES = {  # name -> generator parameters besides the number of servers
    "balanced": {"accelerators": 20, "classes": 3, "tightness": 0.8},
    "tight": {"accelerators": 20, "classes": 4, "tightness": 0.6},
    "roomy": {"accelerators": 20, "classes": 3, "tightness": 1.5},
    "unlimited": {"accelerators": 20, "classes": 3, "tightness": None},
    "wide": {"accelerators": 40, "classes": 5, "tightness": 0.8},
    "small-pool": {"accelerators": 5, "classes": 2, "tightness": 0.9},
}
EXACT_SOLVERS = ("highs", "cpsat", "pyomo")


@dataclass(frozen=True)
class Task:
    family: str
    servers: int
    seed: int
    repeat: int
    solver: str
    time_limit: float
    heterogeneous: bool = False


@dataclass
class Record:
    family: str
    servers: int
    accelerators: int
    seed: int
    repeat: int
    solver: str
    heterogeneous: bool
    outcome: str  # solved, timeout, crash, error
    status: str = ""
    sizing_s: float = math.nan
    build_s: float = math.nan
    solve_s: float = math.nan
    total_s: float = math.nan
    wall_s: float = math.nan
    peak_mb: float = math.nan
    total_cost: float = math.nan
    objective: float = math.nan
    bound: float = math.nan
    gap: float = math.nan
    ok: int = 0
    best_effort: int = 0
    unserved: int = 0
    cards_used: int = 0
    capacity: float = math.nan
    error: str = ""


def tasks(family: str, sizes: list[int], solvers: list[str], repeat: int, seed: int, time_limit: float,
          heterogeneous: bool = False) -> list[Task]:
    """The sweep: sizes × repeats × solvers; repeat r uses scenario seed `seed + r`."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    return [Task(family, n, seed + r, r, s, time_limit, heterogeneous)
            for n in sizes for r in range(repeat) for s in solvers]


def scenario(task: Task):
    from .scenarios import generate

    return generate(servers=task.servers, seed=task.seed, **FAMILIES[task.family])


def run_task(task: Task) -> Record:
    """Solve one task in this process and measure it."""
    from .api import solve

    params = FAMILIES[task.family]
    record = Record(task.family, task.servers, params["accelerators"], task.seed, task.repeat, task.solver,
                    task.heterogeneous, outcome="error")
    started = time.perf_counter()
    try:
        system = scenario(task)
        options = {"heterogeneous": task.heterogeneous}
        if task.solver in EXACT_SOLVERS:
            options["time_limit"] = task.time_limit
        solution = solve(system, solver=task.solver, **options)
    except Exception as exc:  # recorded, not raised: one failing run never stops the sweep
        record.error = f"{type(exc).__name__}: {exc}"
        record.wall_s = time.perf_counter() - started
        return record
    counts = solution.counts()
    t = solution.timings
    finite = [c for c in solution.capacity.values() if math.isfinite(c)]
    record.__dict__.update(
        outcome="solved", status=solution.status, sizing_s=t.get("sizing", math.nan), build_s=t.get("build", 0.0),
        solve_s=t.get("solve", math.nan), total_s=t.get("total", math.nan), wall_s=time.perf_counter() - started,
        peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, total_cost=solution.total_cost,
        objective=_num(solution.objective), bound=_num(solution.bound), gap=_num(solution.gap),
        ok=counts.get("ok", 0) + counts.get("zero-load", 0), best_effort=counts.get("best-effort", 0),
        unserved=sum(n for s, n in counts.items() if s not in ("ok", "zero-load", "best-effort")),
        cards_used=sum(solution.units_used.values()), capacity=sum(finite) if finite else math.inf,
        error=solution.message)
    return record


def _num(value) -> float:
    return math.nan if value is None else float(value)


def _child(task: Task, conn) -> None:
    try:
        conn.send(run_task(task))
    finally:
        conn.close()


def hard_timeout(task: Task) -> float:
    """Seconds before a run is killed: the solver's limit plus room for sizing (about 2 ms per server)."""
    return 2 * task.time_limit + 60 + 0.01 * task.servers


def run_local(all_tasks: list[Task], jobs: int = 1, progress=None) -> list[Record]:
    """Each task in a fresh process, at most `jobs` at once; crashes and timeouts become records."""
    ctx = mp.get_context("spawn")
    pending = list(enumerate(all_tasks))
    running: dict[int, tuple] = {}
    results: dict[int, Record] = {}
    while pending or running:
        while pending and len(running) < max(jobs, 1):
            index, task = pending.pop(0)
            parent, child = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_child, args=(task, child), daemon=True)
            proc.start()
            child.close()
            running[index] = (task, proc, parent, time.monotonic())
        finished = []
        for index, (task, proc, conn, began) in running.items():
            record = None
            if conn.poll():
                try:
                    record = conn.recv()
                except (EOFError, OSError):
                    record = _failed(task, "crash", f"process died (exit code {proc.exitcode})", began)
            elif not proc.is_alive():
                record = _failed(task, "crash", f"process died (exit code {proc.exitcode})", began)
            elif time.monotonic() - began > hard_timeout(task):
                proc.kill()
                record = _failed(task, "timeout", f"killed after {hard_timeout(task):.0f} s", began)
            if record is not None:
                proc.join(timeout=5)
                conn.close()
                results[index] = record
                finished.append(index)
                if progress:
                    progress(len(results), len(all_tasks), record)
        for index in finished:
            running.pop(index)
        if running and not finished:
            time.sleep(0.05)
    return [results[i] for i in range(len(all_tasks))]


def run_ray(all_tasks: list[Task], address: str | None = None, progress=None) -> list[Record]:
    """The same sweep on a Ray cluster (``pip install 'inferno-mip[ray]'``); `address` None starts a local one."""
    try:
        import ray
    except ImportError:
        raise ValueError("the ray executor needs Ray: pip install 'inferno-mip[ray]'") from None
    started_here = not ray.is_initialized()
    ray.init(address=address, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)
    try:
        return _ray_sweep(ray, all_tasks, progress)
    finally:
        if started_here:
            ray.shutdown()


def _ray_sweep(ray, all_tasks: list[Task], progress) -> list[Record]:
    remote = ray.remote(max_retries=0)(run_task)
    refs = {remote.remote(task): (i, task, time.monotonic()) for i, task in enumerate(all_tasks)}
    results: dict[int, Record] = {}
    while refs:
        ready, _ = ray.wait(list(refs), num_returns=1, timeout=1.0)
        for ref in ready:
            index, task, began = refs.pop(ref)
            try:
                results[index] = ray.get(ref)
            except Exception as exc:  # a worker crash arrives as an exception: record it
                results[index] = _failed(task, "crash", f"{type(exc).__name__}: {exc}", began)
            if progress:
                progress(len(results), len(all_tasks), results[index])
        for ref, (index, task, began) in list(refs.items()):
            if time.monotonic() - began > hard_timeout(task):
                ray.cancel(ref, force=True)
                refs.pop(ref)
                results[index] = _failed(task, "timeout", f"cancelled after {hard_timeout(task):.0f} s", began)
    return [results[i] for i in range(len(all_tasks))]


def _failed(task: Task, outcome: str, error: str, began: float) -> Record:
    return Record(task.family, task.servers, FAMILIES[task.family]["accelerators"], task.seed, task.repeat,
                  task.solver, task.heterogeneous, outcome=outcome, error=error, wall_s=time.monotonic() - began)


# ----------------------------------------------------------------------------------------------- output

def write_csv(records: list[Record], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=[fl.name for fl in fields(Record)])
        writer.writeheader()
        for r in records:
            writer.writerow(asdict(r))


def read_csv(path: Path) -> list[Record]:
    types = {fl.name: fl.type for fl in fields(Record)}
    out = []
    with path.open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            values = {}
            for key, text in row.items():
                kind = types[key]
                values[key] = (int(text) if kind == "int" else float(text) if kind == "float"
                               else text == "True" if kind == "bool" else text)
            out.append(Record(**values))
    return out


def summary(records: list[Record]) -> str:
    """Markdown: per family, size and solver the medians over repeats, and cost relative to the best bound."""
    import pandas as pd  # only the summary needs it

    frame = pd.DataFrame([asdict(r) for r in records]).replace([math.inf, -math.inf], math.nan)
    frame["solve_build_s"] = frame["solve_s"] + frame["build_s"]
    frame["vs_bound"] = [_vs_best_bound(r, records) for r in records]
    lines = ["| family | servers | solver | runs | solved | status | median time s | median sizing s | "
             "median solve s | peak MB | median cost | gap | vs best bound | ok / best-effort / unserved |",
             "|---|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for (family, het, n, solver), runs in frame.groupby(["family", "heterogeneous", "servers", "solver"], sort=True):
        solved = runs[runs["outcome"] == "solved"]
        label = family + (" (multi)" if het else "")
        if solved.empty:
            first = runs.iloc[0]
            lines.append(f"| {label} | {n} | {solver} | {len(runs)} | 0 | {first.outcome}: {first.error[:40]} "
                         "| - | - | - | - | - | - | - | - |")
            continue
        m = solved.median(numeric_only=True)  # NaN (no bound, no gap) is skipped
        vs = "-" if math.isnan(m["vs_bound"]) else f"{m['vs_bound']:+.3%}"
        lines.append(
            f"| {label} | {n} | {solver} | {len(runs)} | {len(solved)} | {', '.join(sorted(set(solved['status'])))} | "
            f"{m['total_s']:.3f} | {m['sizing_s']:.3f} | {m['solve_build_s']:.3f} | {m['peak_mb']:.0f} | "
            f"{m['total_cost']:.2f} | {_fmt_gap(m['gap'])} | {vs} | "
            f"{m['ok']:.0f} / {m['best_effort']:.0f} / {m['unserved']:.0f} |")
    return "\n".join(lines)


def _vs_best_bound(r: Record, records: list[Record]) -> float:
    """Objective relative to the best proven bound of any solver on the same scenario, all servers fully served.

    (With partial service the exact solvers buy served rate first, so objectives are not comparable.)"""
    if r.best_effort or r.unserved:
        return math.nan
    same = [o for o in records if (o.family, o.heterogeneous, o.servers, o.seed) ==
            (r.family, r.heterogeneous, r.servers, r.seed) and o.outcome == "solved" and o.status == "optimal"
            and (o.ok, o.best_effort, o.unserved) == (r.ok, r.best_effort, r.unserved)]
    bounds = [o.bound for o in same if math.isfinite(o.bound)]
    if not bounds or not math.isfinite(r.objective):
        return math.nan
    best = max(bounds)
    return (r.objective - best) / max(abs(best), 1e-9)


def _median(values) -> float:
    values = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return statistics.median(values) if values else math.nan


def _fmt_gap(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:.1e}"


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}, {platform.system()}")


def plot(records: list[Record], folder: Path) -> list[Path]:
    """PNGs: time vs size per solver, gap vs size, cost relative to the best bound vs size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    solved = [r for r in records if r.outcome == "solved"]
    solvers = sorted({r.solver for r in solved})
    title = "family " + ", ".join(sorted({r.family + (" (multi)" if r.heterogeneous else "") for r in records}))
    charts = {
        "time": ("total time per solve (s)", lambda r: r.total_s, "log"),
        "gap": ("optimality gap", lambda r: max(r.gap, 1e-12) if math.isfinite(r.gap) else math.nan, "log"),
        "cost": ("objective vs best bound", lambda r: _vs_best_bound(r, records), "linear"),
    }
    out = []
    for name, (label, value, scale) in charts.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        for solver in solvers:
            sizes = sorted({r.servers for r in solved if r.solver == solver})
            ys = [_median(value(r) for r in solved if r.solver == solver and r.servers == n) for n in sizes]
            points = [(n, y) for n, y in zip(sizes, ys) if math.isfinite(y)]
            if points:
                ax.plot(*zip(*points), marker="o", label=solver)
        ax.set_xscale("log")
        ax.set_yscale(scale)
        ax.set_xlabel("servers")
        ax.set_ylabel(label)
        ax.set_title(f"{title}: median over repeats")
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        fig.tight_layout()
        path = folder / f"{name}_vs_size.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        out.append(path)
    return out


@contextmanager
def progress_bar(total: int, stream=None):
    """A tqdm bar on standard error (shown on a terminal) as a ``progress(done, total, record)`` callback."""
    from tqdm import tqdm

    bar = tqdm(total=total, unit="run", file=stream or sys.stderr, disable=None, dynamic_ncols=True)

    def progress(done: int, _total: int, record: Record) -> None:
        bar.set_postfix_str(f"n={record.servers} seed={record.seed} {record.solver}: {record.outcome}", refresh=False)
        bar.update(done - bar.n)

    try:
        yield progress
    finally:
        bar.close()
