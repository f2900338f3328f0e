"""Why each SLO miss of a closed-loop run happened: one cause per missed (server, cycle) record.

    python benchmarks/control_diagnose.py benchmarks/control/ramp-full.jsonl [...] [--rows] [--cost]

A record misses when its cycle-average ITL or TTFT is over the SLO (records in the excluded windows after a
workload step are not counted, as in the run metrics). ``step``: a miss in the ``AFTERMATH`` seconds after such
a window: a step seen at the end of its first window is served one start-up delay later, and the queue built
meanwhile drains after that (whatever the controller does then). ``need(r)`` is the replica count the perf
model, with the true parameters, sizes for rate r (greedy, unlimited capacity). With R ready replicas at the end of the window:

- ``backlog``: R >= need, but the cycle before was short of replicas (queued requests still being served);
- ``model``: R >= need, nothing short before: the perf model calls R enough and the fleet measured a miss
  (model error or window noise: what SLO headroom must cover);
- otherwise the decision of ``k`` cycles before (k = ceil(horizon / period): the last order that is ready for the
  whole window) is examined: ``starting`` (it ordered enough, not ready yet), ``params`` (its recommendation is
  below what the true parameters size for its own forecast: tuner error, unless the solver was short of cards
  or the true parameters size the whole fleet's forecasts above the capacity: ``capacity``), ``forecast`` (the
  rate it sized for, margin and feedback included, needs fewer replicas than the rate that came), ``capacity``
  (lowered by the capacity guard), ``stability`` (a stability rule kept it lower).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


AFTERMATH = 120.0  # seconds after an excluded step window in which the step's backlog still drains


def needs(system):
    """need(server, rpm) -> replicas sized by the true parameters, unlimited capacity."""
    from inferno_mip import solve

    big = system.replace(capacity={k: 10_000 for k in system.capacity})

    @lru_cache(maxsize=None)
    def need(name: str, rpm_half: int) -> int:
        rate = rpm_half / 2.0 / 60.0
        servers = tuple(s.model_copy(update={"load": s.load.model_copy(update={"arrival_rate": rate})})
                        for s in big.servers if s.name == name)
        sol = solve(big.replace(servers=servers), solver="greedy")
        return int(sol[name].replicas)

    return lambda name, rpm: need(name, int(math.ceil(2.0 * max(rpm or 0.0, 0.0))))


def diagnose(records, system, exclude, period: float, horizon: float):
    from inferno_mip.control.metrics import in_windows

    exclude = list(exclude)
    need = needs(system)
    k = int(math.ceil(horizon / period - 1e-9))
    causes, rows = Counter(), []
    by_cycle = [{s["name"]: s for s in r["servers"]} for r in records]
    cards = sum(c["available"] for c in records[0]["capacity"]) if records else 0

    def fleet_need(j: int) -> int:  # cards the true parameters size every server's forecast for (1 card each)
        return sum(need(n, s.get("forecastRpm")) for n, s in by_cycle[j].items())
    for i, r in enumerate(records):
        if in_windows(r["time"], exclude):
            continue
        for name, s in by_cycle[i].items():
            itl, ttft = s.get("itl"), s.get("ttft")
            if itl is None or ttft is None or not (s.get("completed") or 0):
                continue
            if itl <= (s["sloItl"] or math.inf) and ttft <= (s["sloTtft"] or math.inf):
                continue
            n = need(name, s["rpm"])
            ready = s["replicasReady"]
            prev = by_cycle[i - 1].get(name) if i > 0 else None
            if any(b <= r["time"] < b + AFTERMATH for _, b in exclude):
                cause = "step"
            elif ready >= n:
                short_before = prev is not None and prev["replicasReady"] < need(name, prev["rpm"])
                cause = "backlog" if short_before else "model"
            elif i < k:
                cause = "start"
            else:
                d = by_cycle[i - k][name]
                rec = (d.get("recommended") or {}).get("replicas") or 0
                if d["replicas"] >= n:
                    cause = "starting"
                elif rec < need(name, d.get("forecastRpm")):
                    short = d.get("solverStatus") in ("capacity-limited", "best-effort") or fleet_need(i - k) > cards
                    cause = "capacity" if short else "params"
                elif need(name, d.get("forecastRpm")) < n:
                    cause = "forecast"
                elif "capacity" in d.get("rules", []):
                    cause = "capacity"
                else:
                    cause = "stability:" + ",".join(d.get("rules", []))
            causes[cause] += 1
            rows.append({"cycle": r["cycle"], "time": r["time"], "server": name, "cause": cause, "rpm": s["rpm"],
                         "need": n, "ready": ready, "itl/slo": itl / s["sloItl"], "ttft/slo": ttft / s["sloTtft"]})
    return causes, rows


def extra_replicas(records, system, oracle_counts=None) -> dict[str, float]:
    """Replica-cycles above need(the cycle's own rate), as a share of the needed ones, split by why: kept by a
    stability rule above the recommendation (``stability:<first rule>``), recommended above what the raw forecast
    needs (forecast margin and SLO feedback: ``margins``), the raw forecast above the rate that came
    (``forecast``: ordering for the load one reaction time ahead). With `oracle_counts` (the oracle's replicas
    per server and record) the split is signed, exact and against the oracle: the four parts sum to the run's
    replica-cycles minus the oracle's, the last (``counted-vs-oracle``) being need(counted rate) - oracle (the
    window's Poisson count against the true load, and the greedy's unlimited sizing against HiGHS)."""
    need = needs(system)
    split = Counter()
    base = 0
    for i, r in enumerate(records):
        for s in r["servers"]:
            n = need(s["name"], s["rpm"])
            have = s["replicas"]
            raw = (s.get("forecastRpm") or 0.0) / max(s.get("sloFactor") or 1.0, 1e-9) / (1 + s.get("margin", 0.0))
            rec = (s.get("recommended") or {}).get("replicas", have)
            rule = "stability:" + ((s.get("rules") or ["none"])[0])
            if oracle_counts is not None:
                o = oracle_counts[i].get(s["name"], 0)
                base += o
                split[rule] += have - rec
                split["margins"] += rec - need(s["name"], raw)
                split["forecast"] += need(s["name"], raw) - n
                split["counted-vs-oracle"] += n - o
                continue
            base += n
            if have <= n:
                continue
            stability = max(have - rec, 0)
            margins = max(min(rec, have) - max(need(s["name"], raw), n), 0)
            forecast = max(min(need(s["name"], raw), have) - n, 0)
            split[rule] += stability
            split["margins"] += margins
            split["forecast"] += forecast
            split["rest"] += have - n - stability - margins - forecast
    return {k: v / base for k, v in sorted(split.items()) if v} if base else {}


def main(argv=None) -> int:
    from control_experiments import PERIOD, SCENARIO, STARTUP, workload_spec

    from inferno_mip import load_scenario
    from inferno_mip.control.scenario_steps import step_windows

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("records", nargs="+", type=Path, help="cycle records <workload>-<config>.jsonl")
    p.add_argument("--rows", action="store_true", help="print every missed record")
    p.add_argument("--cost", action="store_true", help="split the replicas above need by why")
    args = p.parse_args(argv)
    system = load_scenario(SCENARIO)
    for path in args.records:
        workload = path.name.split("-")[0]
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        causes, rows = diagnose(records, system, step_windows(workload_spec(workload), STARTUP + PERIOD), PERIOD,
                                PERIOD + STARTUP)
        total = sum(1 for r in records for s in r["servers"] if s.get("itl") is not None and s.get("completed"))
        print(f"{path.name}: {sum(causes.values())} misses: "
              + ", ".join(f"{c} {n}" for c, n in causes.most_common()))
        if args.cost:
            print("  replicas above need: " + ", ".join(f"{k} {v:+.1%}"
                                                      for k, v in extra_replicas(records, system).items()))
        if args.rows:
            for row in rows:
                print("  " + " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                      for k, v in row.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
