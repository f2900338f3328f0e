"""Simulator benchmark: speed of a simulated fleet, and the perf models' error against the simulator.

Run from the repository root:
    python -m benchmarks.simulator speed    # one simulated hour, 10 servers x {1,2,5,10} replicas at 70 % load
    python -m benchmarks.simulator models   # error of the perf models new/old3/v02 against the simulator
Prints markdown for the RESULTS.md "## Simulator" section. Not a unit test: timings depend on the machine.

Speed: each configuration runs in a fresh process (so peak RSS is its own), advancing the fleet in 30 s steps
and reading a window after each, as a control loop would. CPU time is ``time.process_time`` of the simulation
alone (fleet construction, arrivals, windows), not of interpreter start-up.

Models: one replica with granite_13b-on-A100 parameters from inferno's sample data. The simulator (the truth)
uses the per-iteration cost model alpha + beta * tokens + gamma * context tokens; ``new`` and ``old3`` get the
same alpha/beta/gamma; ``v02`` gets decode and prefill parameters fitted to that cost model at the workload's
mean lengths: decode alpha_d = alpha, beta_d = beta + gamma (n + m/2) (a decoding request reads on average
n + m/2 context tokens), prefill gamma_p = alpha, delta_p = beta + gamma (a prompt token computes and reads
one token). Loads are fractions of the capacity the simulator measures at saturation, per length
distribution. This script may import the perf models; the simulator never does.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np

from inferno_mip.sim import Fleet, LengthDist, ReplicaConfig, ServerWorkload, Workload, simulate_replica
from inferno_mip.sim.rates import Phases

# (model, alpha, beta, gamma) on A100 from inferno's sample set "small" (perfParms, ms).
MODELS = (("granite_13b", 20.58, 0.041, 0.00128125), ("granite_34b", 35.0, 0.07, 0.0021875),
          ("llama_13b", 20.58, 0.041, 0.00128125), ("llama_70b", 70.0, 0.14, 0.004375),
          ("mixtral_8_7b", 45.0, 0.09, 0.0028125))
CLASSES = ("Premium", "Bronze")
MAX_BATCH = 32
IN_TOKENS = LengthDist.fixed(256)
OUT_TOKENS = LengthDist.geometric(256)
LOAD = 0.7
HOUR = 3600.0
STEP = 30.0


def capacity(cfg: ReplicaConfig, n_in: LengthDist, n_out: LengthDist, duration: float = 900.0) -> float:
    """Completed requests/s of one replica under overload (its queue always full)."""
    t_full = (cfg.alpha + cfg.beta * cfg.max_batch + cfg.gamma * cfg.max_batch * (n_in.mean + n_out.mean / 2)) / 1e3
    guess = cfg.max_batch / (n_out.mean * t_full)
    return simulate_replica(cfg, 2.5 * guess, n_in, n_out, duration=duration, warmup=duration / 5, seed=99).throughput


# -- speed -----------------------------------------------------------------------------------------------------

def fleet_system(replicas: int):
    """10 servers (5 models x 2 classes) on A100, ``replicas`` each; plain attribute objects, as any caller's."""
    perf = [SimpleNamespace(model=m, accelerator="A100", generation="G3", alpha=a, beta=b, gamma=g, delta=0.0,
                            max_batch_size=MAX_BATCH, at_tokens=0) for m, a, b, g in MODELS]
    servers = [SimpleNamespace(name=f"{c}-{m}", model=m, max_queue_size=0, max_batch_size=MAX_BATCH,
                               load=SimpleNamespace(arrival_rate=0.0, avg_in_tokens=0, avg_out_tokens=0),
                               current=SimpleNamespace(accelerator="A100", num_replicas=replicas, max_batch=MAX_BATCH))
               for c in CLASSES for m, *_ in MODELS]
    return SimpleNamespace(servers=servers, perf=perf)


def run_one(replicas: int) -> dict:
    """One simulated hour at 70 % of capacity; CPU seconds, requests, peak RSS (this process)."""
    caps = {m: capacity(ReplicaConfig(a, b, g, MAX_BATCH, 10 * MAX_BATCH, 8192), IN_TOKENS, OUT_TOKENS)
            for m, a, b, g in MODELS}
    system = fleet_system(replicas)
    workload = Workload({s.name: ServerWorkload(Phases((HOUR,), (LOAD * replicas * caps[s.model],), (False,)),
                                                IN_TOKENS, OUT_TOKENS) for s in system.servers}, seed=0)
    start = time.process_time()
    fleet = Fleet.from_system(system, workload)
    completed = 0
    t = 0.0
    while t < HOUR:
        fleet.advance(t + STEP)
        completed += sum(w.completed for w in fleet.window(t).values())
        t += STEP
    cpu = time.process_time() - start
    return {"replicas": 10 * replicas, "cpu": cpu, "completed": completed,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def speed(repeat: int) -> str:
    rows = []
    for per_server in (1, 2, 5, 10):
        runs = [_subprocess(per_server) for _ in range(repeat if per_server == 5 else 1)]
        cpu = statistics.median(r["cpu"] for r in runs)
        rows.append((runs[0]["replicas"], cpu, runs[0]["completed"], max(r["peak_rss_mb"] for r in runs), len(runs)))
    base = next(r for r in rows if r[0] == 50)
    lines = [f"One simulated hour, 10 servers (5 models x 2 classes, A100 parameters of inferno's sample set), "
             f"max batch {MAX_BATCH}, fixed 256 input and geometric mean 256 output tokens, Poisson arrivals at "
             f"{LOAD:.0%} of each replica's simulated capacity, JSQ routing, a window read every {STEP:g} s. "
             f"CPU seconds of the simulation (median of {base[4]} runs for 50 replicas, 1 run otherwise); each run in "
             f"its own process; peak RSS includes the interpreter and numpy. Machine: {machine()}; a shared 2-core "
             f"machine, other work running.", "",
             "| replicas | requests | CPU s | simulated/real time | µs per request | peak RSS MB |",
             "|---:|---:|---:|---:|---:|---:|"]
    for n, cpu, done, rss, _ in rows:
        lines.append(f"| {n} | {done:,} | {cpu:.1f} | {HOUR / cpu:.0f}x | {1e6 * cpu / done:.1f} | {rss:.0f} |")
    return "\n".join(lines)


def _subprocess(per_server: int) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.simulator", "_one", str(per_server)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# -- model error -----------------------------------------------------------------------------------------------

ALPHA, BETA, GAMMA = 20.58, 0.041, 0.00128125  # granite_13b on A100
N_IN, N_OUT, QUEUE = 256, 256, 10 * MAX_BATCH
LOADS = (0.1, 0.3, 0.5, 0.7, 0.9)


def perf_models():
    from inferno_mip.queueing import make_perf_model

    v02 = dict(alpha=ALPHA, beta=BETA + GAMMA * (N_IN + N_OUT / 2), gamma=ALPHA, delta=BETA + GAMMA)
    common = dict(in_tokens=N_IN, out_tokens=N_OUT, max_batch=MAX_BATCH, max_queue=QUEUE, max_num_tokens=8192)
    return {"new": make_perf_model("new", dict(alpha=ALPHA, beta=BETA, gamma=GAMMA), **common),
            "old3": make_perf_model("old3", dict(alpha=ALPHA, beta=BETA, gamma=GAMMA), **common),
            "v02": make_perf_model("v02", v02, **common)}


def models(seeds: int, duration: float) -> str:
    cfg = ReplicaConfig(ALPHA, BETA, GAMMA, MAX_BATCH, QUEUE, 8192)
    pms = perf_models()
    lines = [f"One replica, alpha {ALPHA}, beta {BETA}, gamma {GAMMA} ms (granite_13b on A100), N = {MAX_BATCH}, "
             f"Q = {QUEUE}, {N_IN} input tokens, output tokens fixed {N_OUT} or geometric with mean {N_OUT}. "
             f"Simulator: mean of {seeds} seeds x {duration:g} s (10 % warm-up). Error = model / simulator - 1, "
             f"in %; TTFT and ITL are means (vLLM semantics in the simulator: the prefill iteration emits the first "
             f"token), throughput in completed requests/s.", "",
             "| output lengths | load | sim req/s | sim TTFT ms | sim ITL ms | "
             + " | ".join(f"{k} TTFT | {k} ITL | {k} thr." for k in pms) + " |",
             "|---|---:|---:|---:|---:|" + "---:|" * (3 * len(pms))]
    summary = {k: {"ttft": [], "itl": [], "thr": []} for k in pms}
    for label, n_out in (("fixed", LengthDist.fixed(N_OUT)), ("geometric", LengthDist.geometric(N_OUT))):
        cap = capacity(cfg, LengthDist.fixed(N_IN), n_out)
        for load in LOADS:
            rate = load * cap
            runs = [simulate_replica(cfg, rate, LengthDist.fixed(N_IN), n_out, duration=duration,
                                     warmup=duration / 10, seed=s) for s in range(seeds)]
            sim = {k: float(np.mean([getattr(r, a) for r in runs]))
                   for k, a in (("ttft", "ttft_mean"), ("itl", "itl_mean"), ("thr", "throughput"))}
            cells = []
            for name, pm in pms.items():
                m = pm.analyze(rate)
                errs = {"ttft": m.ttft / sim["ttft"] - 1, "itl": m.itl / sim["itl"] - 1,
                        "thr": m.throughput / sim["thr"] - 1}
                for k, e in errs.items():
                    summary[name][k].append(abs(e))
                cells += [f"{100 * errs['ttft']:+.0f}", f"{100 * errs['itl']:+.0f}", f"{100 * errs['thr']:+.1f}"]
            lines.append(f"| {label} | {load:.0%} | {sim['thr']:.3f} | {sim['ttft']:.1f} | {sim['itl']:.2f} | "
                         + " | ".join(cells) + " |")
        lines.append(f"| {label} | capacity | {cap:.3f} | | |" + " |" * (3 * len(pms)))
    lines += ["", "Median absolute error over both length distributions and all loads:", "",
              "| perf model | TTFT | ITL | throughput |", "|---|---:|---:|---:|"]
    for name, errs in summary.items():
        lines.append(f"| {name} | {100 * statistics.median(errs['ttft']):.0f} % | "
                     f"{100 * statistics.median(errs['itl']):.0f} % | {100 * statistics.median(errs['thr']):.1f} % |")
    return "\n".join(lines)


def machine() -> str:
    return f"{platform.machine()}, Python {platform.python_version()}, numpy {np.__version__}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--repeat", type=int, default=3, help="runs of the 50-replica fleet (median)")
    m = sub.add_parser("models")
    m.add_argument("--seeds", type=int, default=3)
    m.add_argument("--duration", type=float, default=1800.0)
    one = sub.add_parser("_one")
    one.add_argument("per_server", type=int)
    args = p.parse_args(argv)
    if args.what == "_one":
        print(json.dumps(run_one(args.per_server)))
    elif args.what == "speed":
        print(speed(args.repeat))
    else:
        print(models(args.seeds, args.duration))
    return 0


if __name__ == "__main__":
    sys.exit(main())
