"""What the physics allows on the control experiments: controllers that know the future load exactly.

    python benchmarks/control_bounds.py [--only ramp,surge,diurnal] [--output benchmarks/control] [--table]

Arrivals do not depend on the allocation (same seeds), so the rate every future window will offer is known
from a first run. Two clairvoyant controllers then run on the simulator, both with the true parameters, HiGHS,
no stability rules, no churn costs, no margins:

- ``oracle-replay``: no start-up delay, each cycle sized for the rate of the window it serves: the oracle's
  allocation, run on the fleet (what its card-hours buy in SLO, measured);
- ``clairvoyant``: the 60 s start-up delay, each cycle sized for the highest rate of the windows until a
  replica ordered now serves (the next period plus the start-up delay): the cheapest a controller with perfect
  knowledge of the load can be while it orders ahead.

``startup_floor`` computes the same bound exactly from the oracle's replicas per cycle: each replica (a layer
k of a server's count) serves the cycles whose oracle count is >= k; a new one costs the start-up delay's cycles
before it serves, a gap no longer than that is cheaper to bridge than to restart. The gap between these and the
full loop is what not knowing the load costs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


class Clairvoyant:
    """A forecaster that knows each window's offered rate: the highest of the next ``ahead`` windows."""

    name = "clairvoyant"
    margin = 0.0

    def __init__(self, rates: dict[float, float], ahead: int, period: float):
        self.rates, self.ahead, self.period = rates, ahead, period
        self.raw = math.nan

    def update(self, time: float, value: float) -> None:
        future = [self.rates.get(round(time + k * self.period, 6)) for k in range(1, self.ahead + 1)]
        future = [r for r in future if r is not None]
        self.raw = max(future) if future else float(value)

    def predict(self, horizon: float | None = None) -> float:
        return self.raw


class Informed:
    """The q-quantile of the rate counted in each of the next ``ahead`` windows (their highest), given the
    profile, the noise multiplier of the window just seen and the noise's law (the workload's; noise interval =
    period)."""

    name = "informed"
    margin = 0.0

    def __init__(self, stream, ahead: int, period: float, q: float):
        from statistics import NormalDist

        self.stream, self.ahead, self.period = stream, ahead, period
        self.z = NormalDist().inv_cdf(q)
        self.raw = math.nan

    def update(self, time: float, value: float) -> None:
        import numpy as np

        noise, rate = self.stream._noise, self.stream.spec.rate
        now = int(math.floor((time - 1e-9) / self.period))  # the noise index of the window just seen
        x_now = float(noise(np.array([now * self.period]))[0]) if noise is not None else 1.0
        best = 0.0
        for k in range(1, self.ahead + 1):
            a, b = time + (k - 1) * self.period, time + k * self.period
            base = float(np.diff(rate.cumulative(np.array([a, b])))[0])  # expected arrivals without noise
            mean_x, var_x = 1.0, 0.0
            if noise is not None:
                keep = 1.0 - noise.theta
                mean_x = 1.0 + keep ** k * (x_now - 1.0)
                var_x = noise.sigma ** 2 * sum(keep ** (2 * i) for i in range(k))
            mean = base * mean_x
            sd = math.sqrt(base * base * var_x + max(mean, 0.0))
            best = max(best, (mean + self.z * sd) / self.period)
        self.raw = best

    def predict(self, horizon: float | None = None) -> float:
        return self.raw


def startup_floor(counts: list[dict[str, int]], delay_cycles: int) -> int:
    """Fewest replica-cycles that serve every cycle's oracle count when a new replica is paid for `delay_cycles`
    cycles before it serves (of those, the ones inside the run: what the first cycle runs is there from the
    start)."""
    total = 0
    for name in counts[0] if counts else ():
        series = [c.get(name, 0) for c in counts]
        for k in range(1, max(series) + 1):
            last = None
            for j, n in enumerate(series):
                if n < k:
                    continue
                total += min(j, delay_cycles) if last is None else min(j - last - 1, delay_cycles)
                total += 1
                last = j
    return total


def offered_rates(workload: str, seed: int = 0) -> dict[str, dict[float, float]]:
    """Per server, window end time -> offered req/s (from an inferno-like run: arrivals are the same in all)."""
    from control_experiments import PERIOD, SCENARIO, STARTUP, fleet_for

    from inferno_mip import load_scenario
    from inferno_mip.control.cli import simulate
    from inferno_mip.control.loop import LoopConfig

    system = load_scenario(SCENARIO)
    _, fleet = fleet_for(system, workload, seed)
    records = simulate(system, fleet, LoopConfig.inferno(period=PERIOD, startup_delay=STARTUP), duration=3600.0,
                       tuner=False)
    out: dict[str, dict[float, float]] = {}
    for r in records:
        for s in r["servers"]:
            out.setdefault(s["name"], {})[round(r["time"], 6)] = (s["rpm"] or 0.0) / 60.0
    return out


def run_bound(workload: str, kind: str, rates, out: Path, seed: int = 0) -> dict:
    from control_experiments import DURATION, PERIOD, SCENARIO, STARTUP, fleet_for, measured, run_name

    from inferno_mip import load_scenario
    from inferno_mip.control.loop import ControlLoop, LoopConfig
    from inferno_mip.control.record import write_record
    from inferno_mip.control.simulated import SimActuator, SimCollector, run
    from inferno_mip.control.stabilise import StabilityOptions

    delay = 0.0 if kind == "oracle-replay" else STARTUP
    ahead = int(math.ceil((PERIOD + delay) / PERIOD - 1e-9))
    system = load_scenario(SCENARIO)
    wl, fleet = fleet_for(system, workload, seed, startup_delay=delay)
    stem = run_name(workload, kind, seed)
    config = LoopConfig(period=PERIOD, startup_delay=delay, margin_quantile=None, stability=StabilityOptions.off(),
                        churn=None, slo_feedback=False, name=kind)
    loop = ControlLoop(system, SimCollector(fleet, system), SimActuator(fleet), config)
    if kind.startswith("informed-q"):
        q = int(kind.removeprefix("informed-q")) / 100.0
        loop.forecasters = {name: Informed(server.stream, ahead, PERIOD, q) for name, server in fleet.servers.items()}
    else:
        loop.forecasters = {name: Clairvoyant(series, ahead, PERIOD) for name, series in rates.items()}
    cpu = time.process_time()
    records = []
    with open(out / f"{stem}.jsonl", "w", encoding="utf-8") as f:
        for r in run(loop, fleet, DURATION, PERIOD):
            records.append(r)
            write_record(r, f)
    cpu = time.process_time() - cpu
    summary = measured(records, system, wl, workload, seed)  # the same step windows as the loop's runs
    for o in (summary["oracle"], summary["oracle_counted"]):  # the floor of a clairvoyant with the start-up delay
        counts = o.pop("replicas")
        o["startup_floor"] = startup_floor(counts, int(round(STARTUP / PERIOD))) / max(
            sum(sum(c.values()) for c in counts), 1)
    summary["cpu_seconds"] = cpu
    (out / f"{stem}.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


KINDS = ("oracle-replay", "clairvoyant", "informed-q50", "informed-q70", "informed-q90")


def table(folder: Path, workloads: list[str]) -> str:
    """Markdown table of the bound runs in `folder`."""
    rows = ["| workload | controller | both-SLO records | per-request SLO | reversals | cost ratio (counted) "
            "| start-up floor (counted) |", "|---|---|---|---|---|---|---|"]
    for w in workloads:
        for kind in KINDS:
            f = folder / f"{w}-{kind}.json"
            if not f.exists():
                continue
            s = json.loads(f.read_text())
            counted = s["card_hours"] / s["oracle_counted"]["card_hours"]
            rows.append(f"| {w} | {kind} | {s['both_slo']:.1%} | {s['request_slo']:.1%} | {s['reversals']} | "
                        f"{s['cost_ratio']:.2f} ({counted:.2f}) | {s['oracle']['startup_floor']:.3f} "
                        f"({s['oracle_counted']['startup_floor']:.3f}) |")
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="ramp,surge,diurnal", help="comma-separated workloads")
    p.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "control")
    p.add_argument("--kinds", default=",".join(KINDS), help="comma-separated bounds to run")
    p.add_argument("--seeds", default="0", help="comma-separated workload seeds (arrivals and noise); default 0")
    p.add_argument("--table", action="store_true", help="print the markdown table of the bound runs in --output")
    args = p.parse_args(argv)
    if args.table:
        print(table(args.output, args.only.split(",")))
        return 0
    args.output.mkdir(parents=True, exist_ok=True)
    for w, seed in ((w, int(x)) for w in args.only.split(",") for x in args.seeds.split(",")):
        rates = offered_rates(w, seed)
        for kind in args.kinds.split(","):
            s = run_bound(w, kind, rates, args.output, seed)
            counted = s["card_hours"] / s["oracle_counted"]["card_hours"]
            print(f"{w:8s} {kind:14s} seed {seed} both-SLO {s['both_slo']:.3f} request {s['request_slo']:.3f} "
                  f"reversals {s['reversals']:3d} cost x{s['cost_ratio']:.2f} (x{counted:.2f} counted) "
                  f"floor x{s['oracle']['startup_floor']:.3f} (x{s['oracle_counted']['startup_floor']:.3f} counted) "
                  f"cpu {s['cpu_seconds']:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
