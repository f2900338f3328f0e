"""Closed-loop experiments on the fleet simulator: configurations x workloads -> benchmarks/control/.

    python benchmarks/control_experiments.py [--only ramp:full,surge:inferno,...] [--output benchmarks/control]

Every metric is measured by the simulator. The oracle is the optimum (HiGHS, true parameters, the same perf model
and SLOs) for the true load of each cycle (the arrival intensity the workload offered), with no start-up delay;
its cost counts the same cycles (the optimum for the arrivals counted per window is reported beside it). Each
SLO miss gets a cause (benchmarks/control_diagnose.py). CPU time per run is reported (process time; the machine
is shared).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
SCENARIO = ROOT / "scenarios" / "inferno-ramp"
WORKLOADS = {"ramp": "five-phase-ramp.yaml", "surge": "step-surge.yaml", "diurnal": "diurnal.yaml"}
PERIOD, STARTUP, DURATION = 30.0, 60.0, 3600.0


def configs():
    from inferno_mip.control.loop import LoopConfig
    from inferno_mip.control.stabilise import StabilityOptions

    full = LoopConfig(period=PERIOD, startup_delay=STARTUP)
    return {  # name -> (config, tuner on, controller's parameter error)
        "inferno": (LoopConfig.inferno(period=PERIOD, startup_delay=STARTUP), False, 0.0),
        "full": (full, True, 0.0),
        "no-tuner": (replace(full, name="no-tuner"), False, 0.0),
        "no-forecast": (replace(full, forecast="none", margin_quantile=None, name="no-forecast"), True, 0.0),
        "no-stability": (replace(full, stability=StabilityOptions.off(), churn=None, name="no-stability"), True, 0.0),
        "no-feedback": (replace(full, slo_feedback=False, name="no-feedback"), True, 0.0),
        "tuner-40off": (replace(full, name="tuner-40off"), True, 0.4),
        "no-tuner-40off": (replace(full, name="no-tuner-40off"), False, 0.4),
        # variants (not in the plan): run with --only
        "window-180": (replace(full, stability=replace(full.stability, scale_down_window=180.0), name="window-180"),
                       False, 0.0),
        "margin-25": (replace(full, max_margin=0.25, name="margin-25"), False, 0.0),
        "switch-20": (replace(full, forecast_switch=0.2, name="switch-20"), False, 0.0),
        "switch-50": (replace(full, forecast_switch=0.5, name="switch-50"), False, 0.0),
        **{f"q{q:.0f}": (replace(full, margin_quantile=q / 100, name=f"q{q:.0f}"), False, 0.0) for q in (70, 75, 90)},
    }


PLAN = {"ramp": ["inferno", "full", "no-tuner", "no-forecast", "no-stability", "no-feedback", "tuner-40off",
                 "no-tuner-40off"],
        "surge": ["inferno", "full", "no-tuner"], "diurnal": ["inferno", "full", "no-tuner"]}


def oracle(system, records, rates=None) -> dict:
    """Card-hours and cost of the optimum for each cycle's load (true parameters, no start-up delay), and the
    replicas per server and cycle. `rates` (one {server: req/s} per record): the true load, the arrival intensity
    the workload offered in each cycle (`true_rates`); None: the arrivals counted in each cycle's window."""
    from inferno_mip import solve

    cards = cost = 0.0
    counts = []
    for i, r in enumerate(records):
        load = rates[i] if rates is not None else {s["name"]: (s["rpm"] or 0.0) / 60.0 for s in r["servers"]}
        servers = tuple(s.model_copy(update={"load": s.load.model_copy(update={"arrival_rate": load.get(s.name, 0.0)})})
                        for s in system.servers)
        sol = solve(system.replace(servers=servers), solver="highs", time_limit=10)
        cards += sum(sol.units_used.values()) * PERIOD / 3600.0
        cost += sol.total_cost * PERIOD / 3600.0
        counts.append({a.name: int(a.replicas) for a in sol.allocations})
    return {"card_hours": cards, "cost_hours": cost, "replicas": counts}


def true_rates(system, workload: str, times, seed: int = 0) -> list[dict[str, float]]:
    """Per cycle ending at each of `times`: {server: the arrival intensity (req/s) the workload offered over the
    period before}, mean-reverting noise included, Poisson counting noise not (the perf model has Poisson
    arrivals at the rate it is given)."""
    import numpy as np

    _, fleet = fleet_for(system, workload, seed)  # the run's streams, noise and all
    out = []
    for t in times:
        rates = {}
        for name, server in fleet.servers.items():
            stream = server.stream
            if stream is None:
                continue
            edges = np.append(np.arange(t - PERIOD, t, stream._resolution), t)
            expected = np.diff(stream.spec.rate.cumulative(edges))
            if stream._noise is not None:
                expected = expected * stream._noise(edges[:-1])
            rates[name] = float(expected.sum()) / PERIOD
        out.append(rates)
    return out


def oracles(system, records, workload: str, seed: int = 0) -> tuple[dict, dict]:
    """The oracle for the true load (intensity) and, for comparison, for the arrivals counted per window."""
    return (oracle(system, records, true_rates(system, workload, [r["time"] for r in records], seed)),
            oracle(system, records))


def workload_spec(workload: str):
    """The shipped workload of that name (ramp, surge, diurnal)."""
    from inferno_mip.sim import Workload

    return Workload.from_yaml(ROOT / "scenarios" / "workloads" / WORKLOADS[workload])


def fleet_for(system, workload: str, seed: int = 0, startup_delay: float = STARTUP):
    """The workload's spec and a fleet of `system` under it (arrivals and noise depend only on the seed)."""
    from inferno_mip.sim import Fleet

    wl = workload_spec(workload)
    return wl, Fleet.from_system(system, wl, startup_delay=startup_delay, seed=seed)


def measured(records, system, wl, workload: str, seed: int) -> dict:
    """A run's summary as every experiment reports it: the simulator's SLO shares outside the step windows (the
    full loop's start-up delay after each step), both oracles and the cost ratio against the true-load one."""
    from inferno_mip.control.metrics import summarize
    from inferno_mip.control.scenario_steps import step_windows

    summary = summarize(records, step_windows(wl, STARTUP + PERIOD), PERIOD)
    summary["oracle"], summary["oracle_counted"] = oracles(system, records, workload, seed)
    summary["cost_ratio"] = summary["card_hours"] / summary["oracle"]["card_hours"]
    summary["seed"] = seed
    return summary


def run_name(workload: str, name: str, seed: int) -> str:
    """File stem of a run: seed 0 (the default runs) carries no suffix."""
    return f"{workload}-{name}" + (f"-s{seed}" if seed else "")


def run_one(workload: str, name: str, out: Path, seed: int = 0) -> dict:
    from inferno_mip import load_scenario
    from inferno_mip.control.cli import perturbed, simulate
    from inferno_mip.control.plot import plot_cycles

    config, tuner, error = configs()[name]
    system = load_scenario(SCENARIO)
    wl, fleet = fleet_for(system, workload, seed)
    stem = run_name(workload, name, seed)
    cpu = time.process_time()
    records = simulate(system, fleet, config, duration=DURATION, tuner=tuner,
                       controller_system=perturbed(system, error), record=out / f"{stem}.jsonl")
    cpu = time.process_time() - cpu
    summary = measured(records, system, wl, workload, seed)
    summary["misses"] = misses(records, workload)
    summary["excess"] = excess(records, system, summary["oracle"]["replicas"])
    for o in (summary["oracle"], summary["oracle_counted"]):
        o.pop("replicas")
    summary["cpu_seconds"] = cpu
    summary["solve_ms_median"] = sorted(r["timing"]["optimizeMs"] for r in records)[len(records) // 2]
    summary["cycle_ms_median"] = sorted(r["timing"]["totalMs"] for r in records)[len(records) // 2]
    if not seed:
        plot_cycles(records, out / f"{stem}.png", f"{WORKLOADS[workload]}: {name}")
    (out / f"{stem}.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def misses(records, workload: str) -> dict:
    """SLO misses by cause (benchmarks/control_diagnose.py)."""
    from control_diagnose import diagnose

    from inferno_mip import load_scenario
    from inferno_mip.control.scenario_steps import step_windows

    windows = step_windows(workload_spec(workload), STARTUP + PERIOD)
    causes, _ = diagnose(records, load_scenario(SCENARIO), windows, PERIOD, PERIOD + STARTUP)
    return dict(causes.most_common())


def excess(records, system, oracle_counts) -> dict:
    """Replica-cycles over the oracle's by cause, as a share of the oracle's (benchmarks/control_diagnose.py)."""
    from control_diagnose import extra_replicas

    return extra_replicas(records, system, oracle_counts)


def rediagnose(folder: Path) -> None:
    """Recompute the misses and the excess over the oracle of every summary in `folder` from its cycle records."""
    from inferno_mip import load_scenario

    system = load_scenario(SCENARIO)
    for f in sorted(folder.glob("*.json")):
        jsonl = f.with_suffix(".jsonl")
        workload = f.stem.split("-")[0]
        if jsonl.exists() and workload in WORKLOADS:
            s = json.loads(f.read_text())
            records = [json.loads(x) for x in jsonl.read_text().splitlines() if x.strip()]
            s["misses"] = misses(records, workload)
            times = [r["time"] for r in records]
            counts = oracle(system, records, true_rates(system, workload, times, s.get("seed", 0)))["replicas"]
            s["excess"] = excess(records, system, counts)
            f.write_text(json.dumps(s, indent=2) + "\n")


def table(folder: Path) -> str:
    """Markdown table of every summary in `folder` (workload, config order of PLAN)."""
    rows = ["| workload | config | both-SLO records | per-request SLO | reversals | card-hours | oracle (counted) "
            "| cost ratio | peak cards / capacity | over-capacity cycles | held (why: cycles) | misses by cause "
            "| CPU s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for w, names in PLAN.items():
        for c in names:
            f = folder / f"{w}-{c}.json"
            if not f.exists():
                continue
            s = json.loads(f.read_text())
            peak = ", ".join(f"{k} {v}/{s['capacity'].get(k, '?')}" for k, v in s["peak_cards"].items())
            held = ", ".join(f"{k}: {v}" for k, v in s["held"].items()) or "none"
            misses = ", ".join(f"{k} {v}" for k, v in s.get("misses", {}).items()) or "none"
            counted = s.get("oracle_counted", s["oracle"])["card_hours"]
            rows.append(f"| {w} | {c} | {s['both_slo']:.1%} | {s['request_slo']:.1%} | {s['reversals']} | "
                        f"{s['card_hours']:.2f} | {s['oracle']['card_hours']:.2f} ({counted:.2f}) | "
                        f"{s['cost_ratio']:.2f} | {peak} | "
                        f"{s['over_capacity_cycles']} | {held} | {misses} | {s['cpu_seconds']:.0f} |")
    return "\n".join(rows)


def seeds_table(folder: Path, names=("full", "inferno", "clairvoyant", "informed-q70", "informed-q90")) -> str:
    """Markdown table over the seeds present in `folder` per workload and configuration: each seed's value
    (seed 0 first), the mean and the worst (lowest share, highest reversals and cost ratio)."""
    import statistics

    metrics = (("both-SLO", "both_slo", min, "{:.1%}"), ("per-request", "request_slo", min, "{:.1%}"),
               ("reversals", "reversals", max, "{:.0f}"), ("cost ratio", "cost_ratio", max, "{:.2f}"),
               ("over-capacity cycles", "over_capacity_cycles", max, "{:.0f}"))
    rows = ["| workload | config | seeds | " + " | ".join(f"{m} (per seed; mean; worst)" for m, *_ in metrics) + " |",
            "|---|---|---|" + "---|" * len(metrics)]
    for w in WORKLOADS:
        for c in names:
            runs = [json.loads(f.read_text()) for f in [folder / f"{w}-{c}.json"]
                    + sorted(folder.glob(f"{w}-{c}-s[0-9]*.json")) if f.exists()]
            if not runs:
                continue
            cells = []
            for _, key, worst, fmt in metrics:
                values = [float(r[key]) for r in runs]
                cells.append(" / ".join(fmt.format(v) for v in values)
                             + f"; {fmt.format(statistics.fmean(values))}; {fmt.format(worst(values))}")
            seeds = ",".join(str(r.get("seed", 0)) for r in runs)
            rows.append(f"| {w} | {c} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def excess_table(folder: Path) -> str:
    """Markdown table of the replica-cycles over the oracle's by cause, per run with an ``excess`` entry."""
    runs = [(w, c, json.loads((folder / f"{w}-{c}.json").read_text())) for w, names in PLAN.items() for c in names
            if (folder / f"{w}-{c}.json").exists()]
    runs = [(w, c, s) for w, c, s in runs if "excess" in s]
    causes = sorted({k for _, _, s in runs for k in s["excess"]})
    rows = ["| workload | config | " + " | ".join(causes) + " | total |", "|---|---|" + "---|" * (len(causes) + 1)]
    for w, c, s in runs:
        e = s["excess"]
        rows.append(f"| {w} | {c} | " + " | ".join(f"{e.get(k, 0.0):+.1%}" for k in causes)
                    + f" | {sum(e.values()):+.1%} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", help="comma-separated workload:config pairs (default: the whole plan)")
    p.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "control")
    p.add_argument("--table", action="store_true", help="print the markdown table of the results in --output")
    p.add_argument("--seeds", default="0", help="comma-separated workload seeds (arrivals and noise); default 0")
    p.add_argument("--diagnose", action="store_true", help="recompute the misses by cause from the records first")
    args = p.parse_args(argv)
    if args.diagnose:
        rediagnose(args.output)
    if args.table:
        print(table(args.output))
        print()
        print(excess_table(args.output))
        print()
        print(seeds_table(args.output))
        return 0
    args.output.mkdir(parents=True, exist_ok=True)
    pairs = [tuple(x.split(":")) for x in args.only.split(",")] if args.only else \
        [(w, c) for w, names in PLAN.items() for c in names]
    seeds = [int(x) for x in args.seeds.split(",")]
    for (w, c), seed in ((pair, seed) for pair in pairs for seed in seeds):
        s = run_one(w, c, args.output, seed)
        print(f"{w:8s} {c:15s} seed {seed} both-SLO {s['both_slo']:.3f} request {s['request_slo']:.3f} reversals "
              f"{s['reversals']:3d} cost x{s['cost_ratio']:.2f} peak {s['peak_cards']} over {s['over_capacity_cycles']} "
              f"held {s['held']} cpu {s['cpu_seconds']:.0f}s", flush=True)
    print(f"max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
