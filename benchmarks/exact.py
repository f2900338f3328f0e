"""Time to proven optimum (gap <= 1e-4) of the exact solvers.

Instances: inferno's large sample set and generated fleets of 100 and 1,000 servers on 20 accelerators
(family "balanced": 3 classes, capacity 0.8 of demand), single- and multi-assign. Medians over seeds.
Run: ``python benchmarks/exact.py [--repeat 3] [--time-limit 300]``; prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from inferno_mip import load_scenario, solve
from inferno_mip.bench import FAMILIES, machine
from inferno_mip.scenarios import generate

ROOT = Path(__file__).resolve().parent.parent
SOLVERS = ("highs", "cpsat", "pyomo")


def instances(repeat: int):
    yield "inferno-large (27 servers)", [load_scenario(ROOT / "scenarios" / "inferno-large")]
    for n in (100, 1000):
        yield f"balanced {n} x 20", [generate(servers=n, seed=s, **FAMILIES["balanced"]) for s in range(repeat)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--time-limit", type=float, default=300.0)
    parser.add_argument("--solvers", default=",".join(SOLVERS))
    args = parser.parse_args(argv)
    print(f"Machine: {machine()}; gap 1e-4; time limit {args.time_limit:g} s per solve; times exclude sizing.\n")
    print("| instance | form | solver | median s to optimum | statuses | median gap | objective |")
    print("|---|---|---|---:|---|---:|---:|")
    for label, systems in instances(args.repeat):
        for heterogeneous in (False, True):
            for solver in args.solvers.split(","):
                runs = [solve(s, solver=solver, heterogeneous=heterogeneous, mip_gap=1e-4,
                              time_limit=args.time_limit) for s in systems]
                times = [r.timings["build"] + r.timings["solve"] for r in runs]
                gaps = [r.gap for r in runs if r.gap is not None]
                statuses = ", ".join(sorted({r.status for r in runs}))
                print(f"| {label} | {'multi' if heterogeneous else 'single'} | {solver} | "
                      f"{statistics.median(times):.2f} | {statuses} | "
                      f"{statistics.median(gaps) if gaps else float('nan'):.1e} | "
                      f"{statistics.median(r.objective for r in runs):.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
