"""Load test of the optimizer and tuner services on 127.0.0.1: p50/p99 latency and throughput, 8 concurrent clients.

Optimizer: ``POST /optimizeOne`` with inferno's large sample set and with a generated 50-server fleet, against
the in-process ``solve()`` of the same body (median of repeats): one client; eight clients with the same body
(equal requests in flight share one solve); eight clients each with its own body (loads scaled per client). Tuner: 8 clients x 200 mixed requests, each
client on its own (model, accelerator) pair: a /tune every fourth request, else /getparams, /warmup and
/calibration-status. Run: ``python benchmarks/service_load.py [--requests 25] [--workers 2]``; prints markdown.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from live_server import group_cpu_seconds, launch, run_clients  # noqa: E402
from test_tuner_service import LOADS, spec  # noqa: E402

from inferno_mip import load_scenario, solve  # noqa: E402
from inferno_mip.bench import FAMILIES, machine  # noqa: E402
from inferno_mip.io import to_system_data  # noqa: E402
from inferno_mip.scenarios import generate  # noqa: E402

CLIENTS = 8


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q / 100 * len(ordered))) - 1))]


def load(url: str, requests_of, clients: int) -> dict:
    """`clients` threads, each sending requests_of(k) in order; latency per request, wall time, failures."""
    latencies: dict[str, list[float]] = {}
    failures = []
    lock = threading.Lock()

    def client(k: int):
        with httpx.Client(base_url=url, timeout=300) as c:
            for method, path, body, *label in requests_of(k):
                start = time.perf_counter()
                r = c.get(path, params=body) if method == "GET" else c.post(path, json=body)
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.setdefault(label[0] if label else path, []).append(elapsed)
                    if r.status_code >= 500 or (path == "/optimizeOne" and r.status_code != 200):
                        failures.append((path, r.status_code))

    start = time.perf_counter()
    run_clients(client, clients)
    wall = time.perf_counter() - start
    every = [x for xs in latencies.values() for x in xs]
    return {"requests": len(every), "wall": wall, "throughput": len(every) / wall, "failures": failures,
            "p50": percentile(every, 50), "p99": percentile(every, 99),
            "by_path": {p: (percentile(xs, 50), percentile(xs, 99), len(xs)) for p, xs in sorted(latencies.items())}}


def in_process(body: dict, repeat: int) -> tuple[float, float]:
    """Median wall and CPU seconds of solve() on the SystemData body (its sizing cache cleared by a fresh
    parse each time, as the service does)."""
    walls, cpus = [], []
    solve(json.loads(json.dumps(body)))  # imports and first-call costs, as the service's warm worker has paid
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        solve(json.loads(json.dumps(body)))
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def scaled(body: dict, k: int) -> dict:
    """`body` with every server's arrival rate scaled by 1 + k/100: client k's own system, so that no two
    clients' requests are equal (equal requests in flight share one solve)."""
    body = json.loads(json.dumps(body))
    for server in body["system"]["serverData"]["servers"]:
        server_load = (server.get("currentAlloc") or {}).get("load")
        if server_load and server_load.get("arrivalRate"):
            server_load["arrivalRate"] *= 1 + k / 100
    return body


def optimizer_rows(args) -> list[str]:
    bodies = {"inferno-large (27 servers)": to_system_data(load_scenario(ROOT / "scenarios" / "inferno-large")),
              "fleet of 50 servers": to_system_data(generate(servers=50, seed=1, **FAMILIES["balanced"]))}
    rows = []
    with launch("serve-optimizer", "--workers", str(args.workers)) as (url, group):
        for label, body in bodies.items():
            # warm every worker (imports, first HiGHS call, its sizing of this fleet): distinct bodies at once
            load(url, lambda k: [("POST", "/optimizeOne", scaled(body, 50 + k))], 2 * max(1, args.workers))
            wall, cpu = in_process(body, args.repeat)
            for clients, n, distinct in ((1, args.requests, False), (CLIENTS, args.requests, False),
                                         (CLIENTS, args.requests, True)):
                before = group_cpu_seconds(group)
                result = load(url, lambda k: [("POST", "/optimizeOne", scaled(body, k) if distinct else body)] * n,
                              clients)
                per_request = (group_cpu_seconds(group) - before) / result["requests"]
                what = f"{clients} x {n}" + (", a body per client" if distinct else "")
                rows.append(f"| {label} | {what} | {wall * 1e3:.0f} | {cpu * 1e3:.0f} | "
                            f"{per_request * 1e3:.0f} | {result['p50'] * 1e3:.0f} | {result['p99'] * 1e3:.0f} | "
                            f"{(2 * wall + 0.020) * 1e3:.0f} | {result['throughput']:.1f} | "
                            f"{len(result['failures'])} |")
    return rows


INIT_OBS = 3  # the tuner's TUNER_INIT_OBS here: a pair's third /tune runs its initial fit


def tuner_requests(k: int, n: int) -> list[tuple]:
    """Client k's requests on pair (m, G<k>); the /tune that runs the pair's one initial fit is labelled apart."""
    reads = [("GET", "/getparams", {"model": "m", "accelerator": f"G{k}"}), ("GET", "/warmup", None),
             ("GET", "/calibration-status", None)]
    return [("POST", "/tune", [spec(*LOADS[(i // 4) % len(LOADS)], acc=f"G{k}")],
             "/tune (initial fit)" if i == 4 * (INIT_OBS - 1) else "/tune") if i % 4 == 0
            else reads[i % 3] for i in range(n)]


def tuner_rows(args, tree: Path = ROOT, workers: int | None = None) -> list[str]:
    """The tuner load against the service of the source tree `tree` (default: this one), with `workers`
    tuning processes (None: the tree's default)."""
    ready = "/healthz" if tree == ROOT else "/warmup"
    extra = () if workers is None else ("--workers", str(workers))
    with launch("serve-tuner", *extra, env={"TUNER_INIT_OBS": str(INIT_OBS)}, cwd=tree, ready=ready) as (url, group):
        before = group_cpu_seconds(group)
        result = load(url, lambda k: tuner_requests(k, args.tuner_requests), CLIENTS)
        per_request = (group_cpu_seconds(group) - before) / result["requests"]
    rows = [f"| all | {result['requests']} | {result['p50'] * 1e3:.1f} | {result['p99'] * 1e3:.1f} | "
            f"{result['throughput']:.0f} | {per_request * 1e3:.1f} |"]
    for path, (p50, p99, n) in result["by_path"].items():
        rows.append(f"| {path} | {n} | {p50 * 1e3:.1f} | {p99 * 1e3:.1f} | | |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=25, help="optimizer requests per client")
    parser.add_argument("--tuner-requests", type=int, default=200, help="tuner requests per client")
    parser.add_argument("--workers", type=int, default=2, help="solve worker processes of the optimizer")
    parser.add_argument("--repeat", type=int, default=5, help="in-process solves for the reference time")
    parser.add_argument("--baseline", type=Path, help="also load the tuner service of this source tree "
                        "(e.g. `git archive REV | tar -x -C DIR`), for a before/after on the same machine")
    parser.add_argument("--tuner-only", action="store_true")
    parser.add_argument("--tuner-workers", default="2,0",
                        help="comma-separated tuning process counts of this tree's tuner to load in turn (0: threads)")
    args = parser.parse_args(argv)
    print(f"Machine: {machine()}; servers on 127.0.0.1; optimizer with {args.workers} solve workers.\n")
    if not args.tuner_only:
        print("| body | clients x requests | in-process solve() ms | its CPU ms | server CPU ms per request | "
              "p50 ms | p99 ms | target p99 ms (2 x solve + 20) | requests/s | failures |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        print("\n".join(optimizer_rows(args)), flush=True)
    runs = [(f"this tree, --workers {w}", ROOT, int(w)) for w in args.tuner_workers.split(",")]
    if args.baseline:
        runs.append((f"baseline {args.baseline}", args.baseline, None))
    for label, tree, workers in runs:
        print(f"\nTuner service ({label}), {CLIENTS} clients x {args.tuner_requests} mixed requests "
              f"(a /tune every fourth):\n")
        print("| endpoint | requests | p50 ms | p99 ms | requests/s | server CPU ms per request |")
        print("|---|---:|---:|---:|---:|---:|")
        print("\n".join(tuner_rows(args, tree, workers)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
