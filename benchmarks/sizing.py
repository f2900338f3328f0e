"""Sizing benchmark: candidates sized per second, vectorised vs a straightforward port of inferno's search.

Run from the repository root:  python -m benchmarks.sizing  (or python benchmarks/sizing.py)
Options: --candidates C (per batch size, default 256; the port times the first 24), --repeats R
(default 5). Prints the RESULTS.md "## Sizing" section. Not a unit test: timings depend on the machine.

Baseline ("straightforward port"): Go's Size() as inferno runs it. Two float32 bisections (TTFT and
ITL) of up to 100 steps with a 1e-6 relative tolerance, each step a full chain solve over all
K = N + Q states (numpy, log space, no closed-form tail), then Analyze at the result. Like
queueing.search.go_binary_search it stops once the float32 bracket stops changing (Go would repeat
the same step up to 100 times), so the baseline is, if anything, faster than Go's loop.
Ours: inferno_mip.queueing.sizing.size_models on all candidates at once (default mode: grid
bracketing + lock-step regula falsi; compat mode: Go's bisection in lock-step).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from inferno_mip.queueing import make_perf_model, perf
from inferno_mip.queueing.search import go_binary_search
from inferno_mip.queueing.sizing import size_models

ROOT = Path(__file__).resolve().parent.parent
BATCHES = (16, 64, 256)
QUEUE_RATIO = 10


# ------------------------------------------------------------------------------ the straightforward port
def _port_metrics(p: dict, lam: float) -> tuple[float, float]:
    """(TTFT, ITL) in ms at lam req/ms: v0.7 model, full K-state chain, nc = 1 (the sampled workloads)."""
    a, b, g, n, m, big_n, q = p["alpha"], p["beta"], p["gamma"], p["n"], p["m"], p["N"], p["Q"]
    w_p = (b + g) * n
    w_tot = w_p + b * m + g * m * (n + (m + 1) / 2.0)
    delta = w_tot / (1 + m)
    k = np.arange(1, big_n + q + 1)
    bb = np.minimum(k, big_n).astype(np.float64)
    mu = bb / ((1 + m) * a + bb * w_tot)
    logp = np.concatenate(([0.0], np.cumsum(np.log(lam) - np.log(mu))))
    pr = np.exp(logp - logp.max())
    pr /= pr.sum()
    states = np.arange(big_n + q + 1, dtype=np.float64)
    big_l = float(pr @ states)
    ls = float(pr @ np.minimum(states, big_n))
    x = lam * (1.0 - pr[-1])
    resp, serv = big_l / x, ls / x
    wait = max(resp - serv, 0.0)
    pf = max(0.0, a + (ls - 1) * delta) + w_p
    itl = (serv - pf) / m
    return wait + pf + itl, itl


def port_size(p: dict) -> float:
    """Go's Size(): lambda* = min(BinarySearch(TTFT), BinarySearch(ITL)); returns the throughput (req/s)."""
    mu1 = 1.0 / ((1 + p["m"]) * p["alpha"] + (p["n"] * (p["beta"] + p["gamma"]) + p["beta"] * p["m"]
                                              + p["gamma"] * p["m"] * (p["n"] + (p["m"] + 1) / 2.0)))
    w_tot = 1.0 / mu1 - (1 + p["m"]) * p["alpha"]
    mun = p["N"] / ((1 + p["m"]) * p["alpha"] + p["N"] * w_tot)
    lo, hi = 0.001 * mu1, 0.999 * mun
    rates = []
    for j, target in ((0, p["ttft"]), (1, p["itl"])):
        x, ind = go_binary_search(lambda lam: _port_metrics(p, lam)[j], lo, hi, target)
        if ind < 0:
            return 0.0
        rates.append(hi if ind > 0 else x)
    lam = min(rates)
    _port_metrics(p, lam)  # Analyze at lambda*
    return 1000.0 * lam


# ------------------------------------------------------------------------------ workloads
def candidates(big_n: int, count: int, seed: int) -> list[dict]:
    """Random nc = 1 workloads at max batch N, Q = 10 N, with TTFT/ITL targets that bind inside the range."""
    rng = np.random.default_rng(seed + big_n)
    out = []
    while len(out) < count:
        p = dict(alpha=float(rng.uniform(4, 20)), beta=float(rng.uniform(0.01, 0.08)),
                 gamma=float(rng.uniform(1e-4, 1e-3)), n=float(rng.integers(64, 1024)),
                 m=float(rng.integers(64, 1024)), N=big_n, Q=QUEUE_RATIO * big_n)
        pm = _model(p, compat=False)
        lo, hi = pm.rate_range
        m = pm.analyze(np.array([lo, 0.9 * hi]))
        p["ttft"] = float(m.ttft[0] + rng.uniform(0.3, 0.9) * (m.ttft[1] - m.ttft[0]))
        p["itl"] = float(m.itl[0] + rng.uniform(0.3, 1.2) * (m.itl[1] - m.itl[0]))
        out.append(p)
    return out


def _model(p: dict, compat: bool, bump: float = 0.0):
    params = dict(alpha=p["alpha"] + bump, beta=p["beta"], gamma=p["gamma"])
    return make_perf_model("new", params, in_tokens=p["n"], out_tokens=p["m"], max_batch=p["N"],
                           max_queue=p["Q"], compat=compat)


def _time_ours_once(cands: list[dict], compat: bool, bump: float) -> float:
    """Seconds to size all candidates in one vectorised call (fresh models: distinct inputs, no result cache)."""
    models = [_model(p, compat, bump=bump) for p in cands]
    targets = [(p["ttft"], p["itl"], 0.0) for p in cands]
    t0 = time.perf_counter()
    size_models(models, targets)
    return time.perf_counter() - t0


def _time_port_once(cands: list[dict]) -> float:
    t0 = time.perf_counter()
    for p in cands:
        port_size(p)
    return time.perf_counter() - t0


def _per_candidate(cands: list[dict], port_subset: int, repeats: int) -> tuple[float, float, float]:
    """Median seconds per candidate (port, ours default, ours compat); repeats interleaved so load hits all."""
    port, ours, ours_c = [], [], []
    _time_ours_once(cands, False, 1e-9)  # warm-up
    for r in range(repeats):
        port.append(_time_port_once(cands[:port_subset]) / port_subset)
        ours.append(_time_ours_once(cands, False, 1e-9 * (r + 2)) / len(cands))
        ours_c.append(_time_ours_once(cands, True, 1e-9 * (r + 2)) / len(cands))
    return statistics.median(port), statistics.median(ours), statistics.median(ours_c)


def _time_large(compat: bool, repeats: int, batch_rule: str = "inferno") -> float:
    from inferno_mip import load_scenario
    from inferno_mip.tables import Settings, _cached_perf_model, build_table

    system = load_scenario(ROOT / "scenarios" / "inferno-large")
    times = []
    for _ in range(repeats + 1):
        _cached_perf_model.cache_clear()
        perf._build.cache_clear()
        t0 = time.perf_counter()
        build_table(system, Settings(compat=compat, batch_rule=batch_rule))
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    rows = []
    for big_n in BATCHES:
        cands = candidates(big_n, args.candidates, args.seed)
        port, ours, ours_c = _per_candidate(cands, min(len(cands), 24), args.repeats)
        # agreement: the vectorised default and the port size the same rate to Go's tolerance
        got = [s.throughput for s in size_models([_model(p, False) for p in cands[:8]],
                                                  [(p["ttft"], p["itl"], 0.0) for p in cands[:8]])]
        ref = [port_size(p) for p in cands[:8]]
        worst = max(abs(g - r) / r for g, r in zip(got, ref))
        rows.append((big_n, 1 / port, 1 / ours, port / ours, 1 / ours_c, port / ours_c, worst))
    large = {(c, r): _time_large(c, args.repeats, r) for c in (False, True) for r in ("inferno", "optimal")}

    machine = f"{platform.machine()}, {_cores()} cores, Python {platform.python_version()}, numpy {np.__version__}"
    lines = ["## Sizing", "",
             "`python -m benchmarks.sizing` (medians of "
             f"{args.repeats} interleaved repeats; {args.candidates} random nc = 1 workloads per N, Q = 10 N, TTFT "
             "and ITL targets that bind inside the rate range; the port is timed on the first 24). Machine: "
             + machine + ".", "",
             "Baseline: a straightforward port of inferno's Size() (two float32 bisections of up to 100 full "
             "K = N + Q state chain solves each, 1e-6 tolerance). Ours: `size_models` on all candidates at once.", "",
             "| N | port cand/s | ours default cand/s | speed-up | ours compat cand/s | speed-up "
             "| max rel. diff vs port |",
             "|---|---|---|---|---|---|---|"]
    for big_n, p, o, r, oc, rc, worst in rows:
        lines.append(f"| {big_n} | {p:,.0f} | {o:,.0f} | {r:.0f}x | {oc:,.0f} | {rc:.0f}x | {worst:.1e} |")
    lines += ["", "Candidate table of `scenarios/inferno-large` (27 servers x 21 accelerators, ~570 candidates; "
              "`build_table`, perf-model caches cleared, so it includes building the models):", "",
              "| settings | seconds |", "|---|---|"]
    for (c, r), t in large.items():
        lines.append(f"| {'compat' if c else 'default'}, batch rule {r} | {t:.3f} |")
    text = "\n".join(lines)
    print(text)
    return 0


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0)


if __name__ == "__main__":
    raise SystemExit(main())
