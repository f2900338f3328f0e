"""Command line for sizing one server by hand: ``inferno-mip analyze`` and ``inferno-mip size``.

Wire into the main parser with ``register(subparsers)``; each subcommand sets ``run(args) -> int``.
Bad input prints one ``error: ...`` line on stderr and returns 2; an infeasible target returns 1.
"""

from __future__ import annotations

import argparse
import json
import sys

from typing import TYPE_CHECKING

from .errors import InfeasibleTarget, QueueingError
from ..perf_flags import add_perf_parameter_flags
from .versions import PERF_MODELS

if TYPE_CHECKING:
    from .results import Metrics, Sizing

__all__ = ["register", "EXIT_INFEASIBLE", "EXIT_BAD_INPUT"]

EXIT_INFEASIBLE = 1
EXIT_BAD_INPUT = 2
DEFAULT_QUEUE_RATIO = 10  # inferno's optimizer: max queue = 10 N
_V02_FLAGS = ("decode_alpha", "decode_beta", "prefill_gamma", "prefill_delta")


def register(subparsers) -> None:
    """Add the ``analyze`` and ``size`` subcommands to an argparse subparsers object."""
    p = subparsers.add_parser("analyze", help="metrics of one replica at a given request rate")
    _model_args(p, batch_required=True)
    p.add_argument("--rate", type=float, required=True, help="offered request rate (req/s)")
    p.set_defaults(run=_guarded(_analyze))

    p = subparsers.add_parser("size", help="max request rate per replica that meets latency targets")
    _model_args(p, batch_required=False)
    p.add_argument("--ttft", type=float, default=0.0, help="TTFT target (ms; 0 = none)")
    p.add_argument("--itl", type=float, default=0.0, help="ITL target (ms; 0 = none)")
    p.add_argument("--tps", type=float, default=0.0, help="token throughput target (tokens/s; 0 = none)")
    p.add_argument("--optimal-batch", action="store_true",
                   help="also find M*, the smallest max batch with near-peak SLO-feasible throughput, and the curve")
    p.add_argument("--max-batch-limit", type=int, default=256, help="largest batch M for --optimal-batch (default 256)")
    p.set_defaults(run=_guarded(_size))


def _model_args(p: argparse.ArgumentParser, *, batch_required: bool) -> None:
    g = p.add_argument_group("perf model (perfParms alpha/beta/gamma, or decode/prefill parameters)")
    add_perf_parameter_flags(g)
    g.add_argument("--perf-model", choices=PERF_MODELS,
                   help="version (default: iteration for alpha/beta/gamma, v02 for decode/prefill parameters; "
                        "with --compat: new)")
    p.add_argument("--in-tokens", type=float, required=True, help="mean input tokens per request")
    p.add_argument("--out-tokens", type=float, required=True, help="mean output tokens per request")
    p.add_argument("--in-tokens-cv", type=float, default=None,
                   help="coefficient of variation (std/mean) of input tokens (default 0: equal lengths)")
    p.add_argument("--out-tokens-cv", type=float, default=None,
                   help="coefficient of variation of output tokens (default 0; about 1 for geometric lengths)")
    p.add_argument("--max-batch", type=int, required=batch_required,
                   help="max batch size N" + ("" if batch_required else " (default with --optimal-batch: M*)"))
    p.add_argument("--max-queue", type=int, help=f"max queue size Q (default {DEFAULT_QUEUE_RATIO}·N)")
    p.add_argument("--max-num-tokens", type=float, default=8192.0, help="tokens per iteration (chunked prefill)")
    p.add_argument("--compat", action="store_true", help="reproduce inferno's Go code (its search and bugs)")
    p.add_argument("--json", action="store_true", help="print JSON")


def _guarded(fn):
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except QueueingError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    return run


def _kind_and_params(args) -> tuple[str, dict]:
    v02 = {k: getattr(args, k) for k in _V02_FLAGS}
    new = {k: getattr(args, k) for k in ("alpha", "beta", "gamma")}
    if any(v is not None for v in v02.values()):
        if any(v is not None for v in new.values()):
            raise QueueingError("give either --alpha/--beta/--gamma or --decode-*/--prefill-* parameters, not both")
        missing = [f"--{k.replace('_', '-')}" for k, v in v02.items() if v is None]
        if missing:
            raise QueueingError(f"decode/prefill parameters missing: {', '.join(missing)}")
        kind = args.perf_model or "v02"
        if kind != "v02":
            raise QueueingError(f"decode/prefill parameters need --perf-model v02, got {kind}")
        return kind, dict(alpha=args.decode_alpha, beta=args.decode_beta, gamma=args.prefill_gamma,
                          delta=args.prefill_delta)
    missing = [f"--{k}" for k, v in new.items() if v is None]
    if missing:
        raise QueueingError(f"perf parameters missing: {', '.join(missing)} (or give --decode-*/--prefill-*)")
    kind = args.perf_model or ("new" if args.compat else "iteration")
    if kind == "v02":
        raise QueueingError("--perf-model v02 needs --decode-alpha/--decode-beta/--prefill-gamma/--prefill-delta")
    return kind, new


def _model(args, max_batch: int):
    from .perf import make_perf_model  # numpy: only when a command runs

    kind, params = _kind_and_params(args)
    if kind != "iteration" and (args.in_tokens_cv or args.out_tokens_cv):
        raise QueueingError(f"--in-tokens-cv/--out-tokens-cv need --perf-model iteration (got {kind}, "
                            "which evaluates the work at the mean length)")
    queue = args.max_queue if args.max_queue is not None else DEFAULT_QUEUE_RATIO * max_batch
    return make_perf_model(kind, params, in_tokens=args.in_tokens, out_tokens=args.out_tokens, max_batch=max_batch,
                           max_queue=queue, max_num_tokens=args.max_num_tokens, compat=args.compat,
                           in_tokens_cv=args.in_tokens_cv, out_tokens_cv=args.out_tokens_cv)


def _metrics_dict(m: Metrics) -> dict:
    return {"throughput": m.throughput, "offeredRate": m.offered_rate, "waitTime": m.wait_time,
            "prefillTime": m.prefill_time, "ttft": m.ttft, "itl": m.itl, "respTime": m.resp_time,
            "numInService": m.num_in_service, "rho": m.rho, "blocking": m.blocking, "maxRate": m.max_rate}


def _metrics_lines(m: Metrics) -> list[str]:
    return [
        f"  throughput     {m.throughput:.6g} req/s (offered {m.offered_rate:.6g}, blocked {100 * m.blocking:.3g}%)",
        f"  wait           {m.wait_time:.6g} ms",
        f"  prefill        {m.prefill_time:.6g} ms",
        f"  TTFT           {m.ttft:.6g} ms",
        f"  ITL            {m.itl:.6g} ms",
        f"  response       {m.resp_time:.6g} ms",
        f"  utilisation    {m.rho:.4f} (mean batch {m.num_in_service:.4g})",
        f"  max rate       {m.max_rate:.6g} req/s",
    ]


def _header(pm) -> str:
    mode = "compat" if pm.compat else "default"
    cvs = f" (cv {pm.in_tokens_cv:g}/{pm.out_tokens_cv:g})" if pm.in_tokens_cv or pm.out_tokens_cv else ""
    return (f"perf model {pm.kind} ({mode}), n={pm.in_tokens:g}, m={pm.out_tokens:g}{cvs}, N={pm.max_batch}, "
            f"Q={pm.max_queue}")


def _analyze(args) -> int:
    pm = _model(args, args.max_batch)
    m = pm.analyze(args.rate)
    if args.json:
        print(json.dumps({"perfModel": pm.kind, "compat": pm.compat, "maxBatch": pm.max_batch,
                          "maxQueue": pm.max_queue, **_metrics_dict(m)}, indent=2))
    else:
        print("\n".join([_header(pm), *_metrics_lines(m)]))
    return 0


def _size(args) -> int:
    from .concurrency import optimal_concurrency, throughput_curve

    targets = dict(ttft=args.ttft, itl=args.itl, tps=args.tps)
    out: dict = {}
    lines: list[str] = []
    batch = args.max_batch
    if args.optimal_batch:
        limit = args.max_batch_limit
        if limit < 1:
            raise QueueingError(f"--max-batch-limit must be >= 1, got {limit}")
        top = _model(args, limit)
        ratio = None if args.max_queue is not None else DEFAULT_QUEUE_RATIO
        curve = throughput_curve(top, **targets, queue_ratio=ratio)
        if args.compat and args.max_queue is not None:
            best = optimal_concurrency(top, **targets)  # Go's onset search (fixed Q as in Go)
            m_star, how = best.concurrency, f"Go onset search, {best.calls} calls, probes {list(best.probes)}"
        else:
            m_star, how = curve.onset(), "exact over all M"
        out.update(optimalBatch=m_star, peakBatch=curve.peak_batch, peakThroughput=curve.peak_throughput,
                   curve={"maxBatch": curve.max_batch.tolist(), "throughput": curve.throughput.tolist()})
        lines += [f"optimal max batch M* = {m_star} ({how}); peak {curve.peak_throughput:.6g} req/s "
                  f"at M = {curve.peak_batch}",
                  "  M      f(M) req/s (0 = infeasible)",
                  *(f"  {m:<6d} {f:.6g}" for m, f in zip(curve.max_batch.tolist(), curve.throughput.tolist()))]
        batch = batch or m_star
    if batch is None:
        raise QueueingError("--max-batch is required (or give --optimal-batch)")
    pm = _model(args, batch)
    try:
        s: Sizing = pm.size(**targets)
    except InfeasibleTarget as exc:
        out = {"feasible": False, "reason": str(exc), "maxBatch": pm.max_batch, **out}
        if args.json:
            print(json.dumps(out, indent=2))
        else:
            print("\n".join([_header(pm), f"infeasible: {exc}", *lines]))
        return EXIT_INFEASIBLE
    out = {"feasible": True, "perfModel": pm.kind, "compat": pm.compat, "maxBatch": pm.max_batch,
           "maxQueue": pm.max_queue, "rate": s.rate, "throughput": s.throughput, "binding": s.binding,
           "targetRates": s.target_rates, "metrics": _metrics_dict(s.metrics), **out}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    rates = ", ".join(f"{k} {v:.6g}" for k, v in s.target_rates.items())
    print("\n".join([_header(pm),
                     f"max rate per replica {s.rate:.6g} req/s (serves {s.throughput:.6g} req/s), "
                     f"binding target: {s.binding}",
                     f"  rate per target (req/s): {rates}",
                     "metrics at that rate:", *_metrics_lines(s.metrics), *lines]))
    return 0
