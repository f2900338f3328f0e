"""Sizing speed of the iteration perf model against v0.7 ("new"), in CPU time.

Run from the repository root:  python -m benchmarks.perf_model_speed [--repeats R]
Same workloads as benchmarks/sizing.py (256 random nc = 1 candidates per N, Q = 10 N, binding TTFT/ITL targets),
sized by `size_models` with each perf model, repeats interleaved; and the candidate table of
scenarios/inferno-large with --perf-model new vs the default (iteration). Medians of process CPU time.
--out-cv gives the iteration models that output-length CV (e.g. 1: memoryless lengths, where the model adds the
composition of a filling batch, tabulated per model); `new` has no CV.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from inferno_mip.queueing import make_perf_model, perf
from inferno_mip.queueing.sizing import size_models

from .sizing import BATCHES, ROOT, candidates


def _models(cands: list[dict], kind: str, bump: float, out_cv: float = 0.0):
    cv = out_cv if kind == "iteration" and out_cv > 0.0 else None
    return [make_perf_model(kind, dict(alpha=p["alpha"] + bump, beta=p["beta"], gamma=p["gamma"]),
                            in_tokens=p["n"], out_tokens=p["m"], max_batch=p["N"], max_queue=p["Q"],
                            out_tokens_cv=cv)
            for p in cands]


def _cpu(fn) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--out-cv", type=float, default=0.0, help="output-length CV of the iteration models (default 0)")
    ap.add_argument("--no-table", action="store_true", help="skip the inferno-large candidate table")
    args = ap.parse_args(argv)
    from inferno_mip import load_scenario
    from inferno_mip.tables import Settings, _cached_perf_model, build_table

    print("| workload | new (CPU s) | iteration (CPU s) | ratio iteration/new |")
    print("|---|---:|---:|---:|")
    for big_n in BATCHES:
        cands = candidates(big_n, 256, seed=0)
        targets = [(p["ttft"], p["itl"], 0.0) for p in cands]
        times = {"new": [], "iteration": []}
        for r in range(args.repeats):
            for kind in times:  # fresh models each repeat: no result cache
                models = _models(cands, kind, bump=1e-9 * (r + 1), out_cv=args.out_cv)
                times[kind].append(_cpu(lambda: size_models(models, targets)))
        a, b = statistics.median(times["new"]), statistics.median(times["iteration"])
        print(f"| 256 candidates, N = {big_n} | {a:.4f} | {b:.4f} | {b / a:.2f} |")
    if args.no_table:
        return 0
    system = load_scenario(ROOT / "scenarios" / "inferno-large")
    times = {"new": [], "iteration": []}
    for _ in range(max(3, args.repeats // 3)):
        for kind in times:
            _cached_perf_model.cache_clear()
            perf._build.cache_clear()
            times[kind].append(_cpu(lambda: build_table(system, Settings(perf_model=kind))))
    a, b = statistics.median(times["new"]), statistics.median(times["iteration"])
    print(f"| inferno-large candidate table (models built too) | {a:.4f} | {b:.4f} | {b / a:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
