"""The fleet form of ``inferno-mip simulate``: windows of per-server metrics as a table, JSON or CSV."""

from __future__ import annotations

import json
import math
import sys
import time

from .allocation import load_allocation
from .cli import _json, csv_text, max_num_tokens
from .errors import SimulationError
from .fleet import WINDOW_METRICS, Fleet, ServerWindow
from .workload import Workload


def build_fleet(args) -> Fleet:
    from ..errors import ScenarioError
    from ..io import load_scenario  # entry point: reading scenarios is the CLI's job, not the simulator's

    try:
        system = load_scenario(args.scenario)
    except ScenarioError as exc:
        raise SimulationError(str(exc)) from None
    for issue in system.issues:
        print(f"warning: {issue} (server left out)", file=sys.stderr)
    workload = Workload.from_yaml(args.workload) if args.workload else None
    allocation = load_allocation(args.allocation) if args.allocation else None
    if allocation is None and not any(s.current.num_replicas for s in system.servers):
        raise SimulationError(f"{args.scenario}: no server has a current allocation; give --allocation "
                              f"(e.g. the output of 'inferno-mip solve {args.scenario} --format json')")
    if args.queue_ratio < 0:
        raise SimulationError(f"--queue-ratio must be >= 0, got {args.queue_ratio}")
    return Fleet.from_system(system, workload, allocation=allocation, startup_delay=args.startup_delay,
                             routing=args.routing, seed=args.seed, max_num_tokens=max_num_tokens(args.max_num_tokens),
                             queue_ratio=args.queue_ratio)


def window_edges(duration: float, window: float) -> list[float]:
    if not (math.isfinite(duration) and duration > 0):
        raise SimulationError(f"--duration must be a positive number, got {duration!r}")
    if not (math.isfinite(window) and window > 0):
        raise SimulationError(f"--window must be a positive number, got {window!r}")
    n = math.ceil(duration / window - 1e-9)
    return [min(k * window, duration) for k in range(n + 1)]


def run_fleet(args) -> int:
    edges = window_edges(args.duration, args.window)
    fleet = build_fleet(args)
    exporter = None
    if args.serve_metrics is not None:
        from .metrics import serve

        if not (math.isfinite(args.speed) and args.speed > 0):
            raise SimulationError(f"--speed must be a positive number, got {args.speed!r}")
        exporter = serve(fleet, args.serve_metrics)
        print(f"serving vLLM metrics on http://127.0.0.1:{exporter.port}/metrics", file=sys.stderr)
    records = []
    wall0 = time.monotonic()
    try:
        for t0, t1 in zip(edges[:-1], edges[1:]):
            if exporter is None:
                fleet.advance(t1)
            else:
                _advance_live(fleet, exporter, t1, wall0, args.speed)
            windows = fleet.window(t0)
            records.append((t0, t1, windows))
            if not (args.json or args.csv):
                print(format_window(t0, t1, windows), flush=True)
    finally:
        if exporter is not None:
            exporter.close()
    if args.json:
        print(json.dumps([{"start": t0, "end": t1, "servers": {n: window_dict(w) for n, w in ws.items()}}
                          for t0, t1, ws in records], indent=2))
    elif args.csv:
        print(csv_text([{"start": t0, "end": t1, "server": n, **_flat(w)} for t0, t1, ws in records
                        for n, w in ws.items()]))
    return 0


def _advance_live(fleet: Fleet, exporter, until: float, wall0: float, speed: float) -> None:
    """Advance in small steps, keeping the simulated clock at ``speed`` x wall time, refreshing the metrics."""
    step = 1.0
    t = fleet.now
    while t < until:
        t = min(t + step, until)
        delay = wall0 + t / speed - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        fleet.advance(t)
        exporter.update()


def window_dict(w: ServerWindow) -> dict:
    return {**{k: _json(getattr(w, k)) for k in WINDOW_METRICS}, "accelerator": w.accelerator,
            "max_batch": w.max_batch, "replicas_ready": w.replicas_ready, "replicas_starting": w.replicas_starting,
            "per_replica": {n: {k: _json(v) for k, v in r.items()} for n, r in w.per_replica.items()}}


def _flat(w: ServerWindow) -> dict:
    return {"accelerator": w.accelerator, "max_batch": w.max_batch, "replicas_ready": w.replicas_ready,
            "replicas_starting": w.replicas_starting, **{k: getattr(w, k) for k in WINDOW_METRICS}}


def format_window(t0: float, t1: float, windows: dict[str, ServerWindow]) -> str:
    name_width = max([len("server"), *map(len, windows)])
    head = (f"{'server':<{name_width}}  {'accelerator':<11} {'rep':>4} {'start':>5} {'batch':>5} {'offered':>8} "
            f"{'done':>8} {'rej':>5} {'TTFT ms':>9} {'p95':>9} {'ITL ms':>8} {'p95':>8} {'running':>8} "
            f"{'waiting':>8}")
    lines = [f"window {t0:g}-{t1:g} s (rates req/s)", head]
    for name, w in windows.items():
        lines.append(f"{name:<{name_width}}  {w.accelerator or '-':<11} {w.replicas_ready:>4} "
                     f"{w.replicas_starting:>5} {w.max_batch:>5} {w.offered_rate:>8.3f} {w.completed_rate:>8.3f} "
                     f"{w.rejected:>5} {_num(w.ttft_mean):>9} {_num(w.ttft_p95):>9} {_num(w.itl_mean):>8} "
                     f"{_num(w.itl_p95):>8} {w.running_mean:>8.2f} {w.waiting_mean:>8.2f}")
    return "\n".join(lines) + "\n"


def _num(v: float) -> str:
    return "-" if not math.isfinite(v) else f"{v:.1f}"
