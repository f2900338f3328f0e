"""CLI subcommands ``tune`` (run an observer through the tuner) and ``serve-tuner`` (the HTTP service).

The main CLI calls :func:`register` with its argparse subparsers; each command sets ``run=fn(args) -> int``.
Errors print one line on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from ..arguments import bounded_int
from ..queueing.versions import PERF_MODELS
from .errors import TunerError

FITTED_PERF_MODELS = tuple(k for k in PERF_MODELS if k not in ("v01", "v02"))  # the alpha/beta/gamma versions

__all__ = ["register", "main"]

EXIT_BAD_INPUT = 2


def register(subparsers) -> None:
    p = subparsers.add_parser("tune", help="tune perf-model parameters from an observer and print the trajectory")
    p.add_argument("--observer", choices=("simulated", "offline", "online"), required=True)
    p.add_argument("--trace", type=Path, help="offline: CSV trace (inferno's offline or data-observer format)")
    p.add_argument("--config", type=Path, help="filter config JSON (inferno format; default: inferno's default)")
    p.add_argument("--compat", action="store_true", help="inferno's filter (linear, fixed R, no recovery)")
    p.add_argument("--ungated", action="store_true", help="inferno's demo Run: no NIS/positivity gates")
    p.add_argument("--perf-model", choices=FITTED_PERF_MODELS, default=None,
                   help="perf model to fit (default new, as inferno's tuner; iteration: the sizing default for "
                        "perfParms data); the simulated observer generates with the same model")
    p.add_argument("--out-tokens-cv", type=float, default=0.0,
                   help="simulated: coefficient of variation of output tokens (read by the iteration model)")
    p.add_argument("--x0", help="initial alpha,beta[,gamma] (default: fit the first --init-obs observations)")
    p.add_argument("--init-obs", type=int, default=5, help="observations for the initial fit (0: start at x0)")
    p.add_argument("--warmup", type=int, default=5, help="EKF steps without the NIS gate")
    p.add_argument("--process-scale", type=float, default=1.0, help="multiplies the process noise Q")
    p.add_argument("--seed", type=int, default=0, help="simulated: random seed")
    p.add_argument("--noise", type=float, default=0.05, help="simulated: relative noise (0.05 = 5%%)")
    p.add_argument("--load-spread", type=float, default=0.0, help="simulated: relative spread of the load")
    p.add_argument("--token-spread", type=float, default=0.0, help="simulated: relative spread of token sizes")
    p.add_argument("--prometheus", help="online: Prometheus URL (default $PROMETHEUS_ADDRESS; $TOKEN = bearer)")
    p.add_argument("--namespace", default="", help="online: namespace label (default: any)")
    p.add_argument("--model-regex", default=".*", help="online: model_name regex")
    p.add_argument("--window", default="1m", help="online: PromQL rate window")
    p.add_argument("--max-batch", type=int, default=256, help="online: replicas' max batch size")
    p.add_argument("--steps", type=int, default=10, help="online: number of observations")
    p.add_argument("--interval", type=float, default=60.0, help="online: seconds between observations")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--plot", type=Path, help="write a PNG of parameters, innovations and latencies")
    p.set_defaults(run=run_tune)

    s = subparsers.add_parser("serve-tuner", help="run the tuner HTTP service (inferno-compatible API)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8081)
    s.add_argument("--state-file", type=Path, help="persist the tuner state here (default $TUNER_STATE_FILE)")
    s.add_argument("--config", type=Path, help="filter config JSON (default: $CONFIG_DATA_DIR or inferno's)")
    s.add_argument("--mode", choices=("ekf", "sliding-window"), help="estimator mode ($TUNER_ESTIMATOR_MODE)")
    s.add_argument("--compat", action="store_true", help="inferno's filter and Nelder-Mead fits")
    s.add_argument("--workers", type=bounded_int(0, 64), default=2,
                   help="processes that run the tuning (default 2; 0: threads of the server process)")
    s.set_defaults(run=run_serve)


def _observer(args):
    from . import observers

    if args.observer == "simulated":
        return observers.SimulatedObserver(noise=args.noise, seed=args.seed, load_spread=args.load_spread,
                                           token_spread=args.token_spread, perf_model=args.perf_model,
                                           out_tokens_cv=args.out_tokens_cv)
    if args.observer == "offline":
        if args.trace is None:
            raise TunerError("--trace: required with --observer offline")
        try:
            return observers.OfflineObserver(args.trace)
        except TunerError as first:
            try:
                return observers.TraceObserver(args.trace)
            except TunerError:
                raise first from None
    cfg = observers.PrometheusConfig.from_env(address=args.prometheus, namespace=args.namespace,
                                              model_regex=args.model_regex, window=args.window,
                                              max_batch=args.max_batch)
    return observers.OnlineObserver(cfg, steps=args.steps, interval=args.interval)


def _x0(text: str | None):
    if text is None:
        return None
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise TunerError(f"--x0: expected comma-separated numbers, got {text!r}") from None
    if not all(math.isfinite(v) and v > 0 for v in vals):
        raise TunerError(f"--x0: values must be finite and > 0, got {text!r}")
    return vals


def run_tune(args) -> int:
    from .config import default_config, load_config  # scipy and the filter: only when a command runs
    from .observation import DECODE, PREFILL_DECODE
    from .run import final_params, tune_all
    from .tuner import TunerOptions

    try:
        obs = _observer(args)
        kind = getattr(obs, "kind", PREFILL_DECODE)
        config = load_config(args.config) if args.config else default_config(decode=kind == DECODE)
        if not (args.process_scale > 0):
            raise TunerError(f"--process-scale: must be > 0, got {args.process_scale!r}")
        base = TunerOptions.reference() if args.compat else TunerOptions()
        options = TunerOptions(**{**base.__dict__, "process_scale": args.process_scale,
                                  "perf_model": args.perf_model or base.perf_model})
        points = tune_all(obs, config, kind=kind, options=options, x0=_x0(args.x0), init_obs=args.init_obs,
                          warmup=args.warmup, gated=not args.ungated)
        if args.plot:
            truth = getattr(obs, "truth_at", None)
            from .plot import plot_trajectory

            plot_trajectory(points, args.plot, truth=truth, title=f"tuner: {args.observer} observer")
    except (TunerError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    final = final_params(points)
    if args.json:
        print(json.dumps({"observer": args.observer, "kind": kind, "final": final,
                          "trajectory": [p.to_dict() for p in points]}, indent=1, default=_json_default))
    else:
        print(f"{'step':>4} {'status':<10} {'alpha':>10} {'beta':>10} {'gamma':>11} {'nis':>9}  reason")
        for p in points:
            v = [p.params.get(k, math.nan) for k in ("alpha", "beta", "gamma")]
            print(f"{p.step:>4} {p.status:<10} {v[0]:>10.5g} {v[1]:>10.5g} {v[2]:>11.5g} {p.nis:>9.4g}  {p.reason}")
        print(f"final: {json.dumps(final)}")
    return 0 if final else EXIT_BAD_INPUT


def _json_default(o):
    return float(o)


def run_serve(args) -> int:
    from .config import load_config

    try:
        import uvicorn

        from .app import create_app
        from .service import ServiceSettings

        overrides = {}
        if args.state_file:
            overrides["state_file"] = str(args.state_file)
        if args.config:
            overrides["config"] = load_config(args.config)
        if args.mode:
            overrides["mode"] = args.mode
        if args.compat:
            overrides["compat"] = True
        app = create_app(settings=ServiceSettings.from_env(**overrides), address=f"http://{args.host}:{args.port}",
                         workers=args.workers)
    except (TunerError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def main(argv=None) -> int:
    """Standalone entry (``python -m inferno_mip.tuner.cli``)."""
    parser = argparse.ArgumentParser(prog="inferno-mip")
    register(parser.add_subparsers(required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
