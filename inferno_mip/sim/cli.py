"""``inferno-mip simulate``: a fleet over time, or one replica at a fixed rate with confidence intervals.

Fleet form: ``simulate SCENARIO [--workload W.yaml] [--allocation SOLUTION.json] --duration 600 --window 30
[--json | --csv] [--serve-metrics PORT]``. One-replica form (no SCENARIO): the flags of ``analyze`` plus
``--in-tokens-cv/--out-tokens-cv``, ``--seeds`` and ``--duration``. Bad input: one ``error:`` line, exit 2.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from pathlib import Path

from ..perf_flags import add_perf_parameter_flags
from .errors import SimulationError

__all__ = ["register", "EXIT_BAD_INPUT"]

EXIT_BAD_INPUT = 2
DEFAULT_QUEUE_RATIO = 10
DISTS = ("fixed", "geometric", "lognormal")


def register(subparsers) -> None:
    """Add the ``simulate`` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser(
        "simulate", help="simulate a fleet request by request (SCENARIO), or one replica at a fixed rate",
        description="With SCENARIO: simulate its servers under a workload and print per-window metrics as vLLM "
                    "exports them. Without: simulate one replica at --rate over --seeds seeds and print the "
                    "measured metrics with 95 percent confidence intervals (the flags of 'analyze').")
    p.add_argument("scenario", nargs="?", type=Path, help="scenario folder or system-data file (fleet form)")
    f = p.add_argument_group("fleet form")
    f.add_argument("--workload", type=Path, help="workload YAML (default: each server's scenario load, constant)")
    f.add_argument("--allocation", type=Path,
                   help="solution JSON (inferno-mip solve --format json, or inferno's AllocationSolution); "
                        "default: the scenario's current allocation")
    f.add_argument("--window", type=float, default=30.0, help="seconds per reporting window (default 30)")
    f.add_argument("--startup-delay", type=float, default=60.0, help="seconds until a new replica is ready")
    f.add_argument("--routing", choices=("jsq", "round-robin"), default="jsq")
    f.add_argument("--queue-ratio", type=int, default=DEFAULT_QUEUE_RATIO,
                   help="max queue = ratio x max batch when the server sets none (default 10)")
    f.add_argument("--csv", action="store_true", help="print CSV: one row per window and server")
    f.add_argument("--serve-metrics", type=int, metavar="PORT",
                   help="serve vLLM-named Prometheus metrics on 127.0.0.1:PORT while simulating in real time "
                        "(x --speed)")
    f.add_argument("--speed", type=float, default=1.0, help="with --serve-metrics: simulated seconds per second")

    g = p.add_argument_group("one-replica form (perfParms alpha/beta/gamma, or decode/prefill parameters)")
    add_perf_parameter_flags(g)
    g.add_argument("--perf-model", help="accepted for parity with 'analyze'; the simulator has its own cost model")
    g.add_argument("--compat", action="store_true", help="accepted for parity with 'analyze'; no effect")
    g.add_argument("--in-tokens", type=float, help="mean input tokens per request")
    g.add_argument("--out-tokens", type=float, help="mean output tokens per request")
    g.add_argument("--in-tokens-cv", type=float, default=0.0, help="coefficient of variation of input tokens")
    g.add_argument("--out-tokens-cv", type=float, default=0.0, help="coefficient of variation of output tokens")
    g.add_argument("--in-tokens-dist", choices=DISTS, help="default: fixed if the cv is 0, else lognormal")
    g.add_argument("--out-tokens-dist", choices=DISTS, help="default: fixed if the cv is 0, else lognormal")
    g.add_argument("--max-batch", type=int, help="max batch size N")
    g.add_argument("--max-queue", type=int, help=f"max queue size Q (default {DEFAULT_QUEUE_RATIO}·N)")
    g.add_argument("--rate", type=float, help="offered request rate (req/s)")
    g.add_argument("--seeds", type=int, default=5, help="independent runs (seeds --seed..) for the intervals")
    g.add_argument("--warmup", type=float, help="seconds excluded from the statistics (default 10%% of duration)")

    p.add_argument("--max-num-tokens", type=float, default=8192.0,
                   help="tokens per iteration (chunked prefill; 0 = no limit; default 8192)")
    p.add_argument("--duration", type=float, default=600.0, help="simulated seconds (default 600)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


ONE_REPLICA_ONLY = ("alpha", "beta", "gamma", "decode_alpha", "decode_beta", "prefill_gamma", "prefill_delta",
                    "in_tokens", "out_tokens", "max_batch", "max_queue", "rate", "warmup")
FLEET_ONLY = ("workload", "allocation", "serve_metrics")


def run(args: argparse.Namespace) -> int:
    try:
        fleet = args.scenario is not None
        given = [f"--{k.replace('_', '-')}" for k in (ONE_REPLICA_ONLY if fleet else FLEET_ONLY)
                 if getattr(args, k) is not None]
        if given:
            form = "one-replica form (without SCENARIO)" if fleet else "fleet form (give a SCENARIO)"
            raise SimulationError(f"{', '.join(given)}: only for the {form}")
        if fleet:
            from .fleet_cli import run_fleet

            return run_fleet(args)
        return _run_replica(args)
    except SimulationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


# -- one replica ------------------------------------------------------------------------------------------------

def max_num_tokens(value: float) -> int | None:
    if not math.isfinite(value) or value < 0 or value != int(value):
        raise SimulationError(f"--max-num-tokens must be an integer >= 0, got {value!r}")
    return int(value) or None


def replica_config(args):
    """The ReplicaConfig of the one-replica form, from alpha/beta/gamma or decode/prefill flags."""
    from .replica import ReplicaConfig

    v02 = {k: getattr(args, k) for k in ("decode_alpha", "decode_beta", "prefill_gamma", "prefill_delta")}
    new = {k: getattr(args, k) for k in ("alpha", "beta", "gamma")}
    if args.max_batch is None:
        raise SimulationError("--max-batch is required")
    if args.max_batch < 1:
        raise SimulationError(f"--max-batch must be >= 1, got {args.max_batch}")
    queue = args.max_queue if args.max_queue is not None else DEFAULT_QUEUE_RATIO * args.max_batch
    limit = max_num_tokens(args.max_num_tokens)
    if limit is not None and limit < args.max_batch:
        raise SimulationError(f"--max-num-tokens ({limit}) must be at least --max-batch ({args.max_batch})")
    if any(v is not None for v in v02.values()):
        if any(v is not None for v in new.values()):
            raise SimulationError("give either --alpha/--beta/--gamma or --decode-*/--prefill-* parameters, not both")
        missing = [f"--{k.replace('_', '-')}" for k, v in v02.items() if v is None]
        if missing:
            raise SimulationError(f"decode/prefill parameters missing: {', '.join(missing)}")
        from .fleet import perf_config

        class _G2:  # the same mapping as a fleet's generation-G2 perf data
            generation = "G2"
            alpha, beta, gamma, delta = (v02["decode_alpha"], v02["decode_beta"], v02["prefill_gamma"],
                                         v02["prefill_delta"])
        _check_params(v02)
        return perf_config(_G2, args.max_batch, queue, limit)
    missing = [f"--{k}" for k, v in new.items() if v is None]
    if missing:
        raise SimulationError(f"perf parameters missing: {', '.join(missing)} (or give --decode-*/--prefill-*)")
    return ReplicaConfig(new["alpha"], new["beta"], new["gamma"], args.max_batch, queue, limit)


def _check_params(params: dict) -> None:
    for k, v in params.items():
        if not (math.isfinite(v) and v >= 0):
            raise SimulationError(f"--{k.replace('_', '-')} must be a finite number >= 0, got {v!r}")


def length_dist(mean, cv: float, kind: str | None, flag: str):
    from .lengths import LengthDist

    if mean is None:
        raise SimulationError(f"{flag} is required")
    if not (math.isfinite(mean) and mean >= 1):
        raise SimulationError(f"{flag} must be a number >= 1, got {mean!r}")
    if not (math.isfinite(cv) and cv >= 0):
        raise SimulationError(f"{flag}-cv must be a finite number >= 0, got {cv!r}")
    if kind == "lognormal" and cv == 0:
        raise SimulationError(f"{flag}-dist lognormal needs {flag}-cv > 0")
    return LengthDist.from_mean_cv(mean, cv, kind)


METRICS = (  # (json key, label, unit, ReplicaResult attribute or function)
    ("throughput", "throughput", "req/s", "throughput"),
    ("offeredRate", "offered", "req/s", "offered_rate"),
    ("blocking", "blocked", "%", lambda r: 100.0 * r.blocking),
    ("ttft", "TTFT mean", "ms", "ttft_mean"),
    ("ttftP95", "TTFT p95", "ms", "ttft_p95"),
    ("itl", "ITL mean", "ms", "itl_mean"),
    ("itlP95", "ITL p95", "ms", "itl_p95"),
    ("waitTime", "wait", "ms", lambda r: 1000.0 * r.waiting_mean / r.throughput if r.throughput else math.nan),
    ("respTime", "response", "ms", "response_mean"),
    ("numInService", "mean batch", "", "running_mean"),
    ("numWaiting", "mean queue", "", "waiting_mean"),
    ("rho", "utilisation", "", None),  # running_mean / N, filled in below
)


def _run_replica(args) -> int:
    from .single import simulate_replica

    cfg = replica_config(args)
    n_in = length_dist(args.in_tokens, args.in_tokens_cv, args.in_tokens_dist, "--in-tokens")
    n_out = length_dist(args.out_tokens, args.out_tokens_cv, args.out_tokens_dist, "--out-tokens")
    if args.rate is None:
        raise SimulationError("--rate is required (or give a SCENARIO for the fleet form)")
    if args.seeds < 1:
        raise SimulationError(f"--seeds must be >= 1, got {args.seeds}")
    warmup = 0.1 * args.duration if args.warmup is None else args.warmup
    runs = [simulate_replica(cfg, args.rate, n_in, n_out, duration=args.duration, warmup=warmup, seed=args.seed + k)
            for k in range(args.seeds)]
    table = {}
    for key, label, unit, get in METRICS:
        if get is None:
            values = [r.running_mean / cfg.max_batch for r in runs]
        elif callable(get):
            values = [get(r) for r in runs]
        else:
            values = [getattr(r, get) for r in runs]
        table[key] = (label, unit, *mean_ci(values))
    if args.json:
        out = {"simulator": True, "maxBatch": cfg.max_batch, "maxQueue": cfg.max_queue,
               "maxNumTokens": cfg.max_num_tokens, "inTokens": n_in.describe(), "outTokens": n_out.describe(),
               "rate": args.rate, "duration": args.duration, "warmup": warmup, "seeds": args.seeds,
               "completed": sum(r.completed for r in runs),
               **{k: {"mean": _json(m), "ci95": _json(h), "values": [_json(v) for v in vals]}
                  for k, (_, _, m, h, vals) in table.items()}}
        print(json.dumps(out, indent=2))
        return 0
    print(f"simulator: N={cfg.max_batch}, Q={cfg.max_queue}, max tokens/iteration "
          f"{cfg.max_num_tokens or 'unlimited'}, in {n_in.describe()}, out {n_out.describe()}, rate {args.rate:g} "
          f"req/s, {args.seeds} x {args.duration:g} s (warm-up {warmup:g} s), "
          f"{sum(r.completed for r in runs)} requests measured")
    for key, (label, unit, m, h, _) in table.items():
        print(f"  {label:<13} {m:.6g} ± {h:.3g} {unit}".rstrip())
    print("  (mean ± half-width of the 95% confidence interval over seeds)")
    return 0


def mean_ci(values) -> tuple[float, float, list[float]]:
    """Mean and 95% confidence half-width (Student t) over runs, ignoring NaN runs."""
    import numpy as np

    arr = np.asarray(values, dtype=np.float64)
    ok = arr[np.isfinite(arr)]
    if not len(ok):
        return math.nan, math.nan, arr.tolist()
    if len(ok) == 1:
        return float(ok[0]), math.nan, arr.tolist()
    from scipy.stats import t

    half = float(t.ppf(0.975, len(ok) - 1) * ok.std(ddof=1) / math.sqrt(len(ok)))
    return float(ok.mean()), half, arr.tolist()


def _json(v):
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v


def csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue().rstrip("\n")
