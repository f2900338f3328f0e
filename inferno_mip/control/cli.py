"""``inferno-mip control``: run the closed loop against the fleet simulator (or live services) and record it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..policies import BATCH_RULES

EXIT_BAD_INPUT = 2


def register(sub) -> None:
    p = sub.add_parser("control", help="run the closed control loop on a simulated (or live) fleet, one JSON line "
                                       "per cycle")
    p.add_argument("scenario", type=Path, help="scenario folder or system-data file (the fleet under control)")
    p.add_argument("--workload", type=Path, help="workload YAML for the simulator (rates over time, token lengths)")
    p.add_argument("--duration", type=float, default=3600.0, help="seconds to run (default 3600)")
    p.add_argument("--period", type=float, default=30.0, help="control period in seconds (default 30)")
    p.add_argument("--startup-delay", type=float, default=60.0, help="seconds a new replica takes (default 60)")
    p.add_argument("--mode", choices=("full", "inferno"), default="full",
                   help="full (default): forecast, stability rules, churn costs, tuner, HiGHS; inferno: greedy, "
                        "no tuner, no forecast, no stability rules, only the 10%% accelerator-switch penalty")
    p.add_argument("--no-tuner", action="store_true", help="solve with the scenario's perf parameters")
    p.add_argument("--tuner-url", help="tuner service (inferno's API) instead of the in-process tuner")
    p.add_argument("--forecast", choices=("none", "last", "ewma", "holt-winters", "auto"),
                   help="load forecast one reaction time ahead (default auto; inferno mode none)")
    p.add_argument("--margin", default=None,
                   help="forecast safety margin: quantile of recent forecast errors (default 0.9) or 'none'")
    p.add_argument("--max-margin", type=float, default=None,
                   help="the margin never adds more than this share of the forecast (default 0.15)")
    p.add_argument("--stability", default=None,
                   help="on, off, or key=value,... (window=120, shift=0.5, deadband=0.1, starting=on, step=N, "
                        "floor=1)")
    p.add_argument("--churn", default=None,
                   help="on, off, or added=2,removed=4,accelerator=20,batch=5 (cost units per change)")
    p.add_argument("--solver", default=None, help="solver name (default highs; inferno mode greedy)")
    p.add_argument("--batch-rule", choices=BATCH_RULES, help="candidate max batch sizes")
    p.add_argument("--optimizer-url", help="optimizer service to solve with instead of in-process solve()")
    p.add_argument("--time-limit", type=float, default=5.0, help="seconds per solve (default 5)")
    p.add_argument("--param-error", type=float, default=0.0,
                   help="start the controller from perf parameters off by this factor (0.4: alpha, beta, gamma "
                        "x1.4); the simulated fleet keeps the scenario's")
    p.add_argument("--seed", type=int, default=0, help="simulator seed")
    live = p.add_argument_group("live fleet (instead of the simulator; cycles every --period seconds of wall time)")
    live.add_argument("--prometheus", metavar="URL", help="collect from Prometheus (vLLM metric names)")
    live.add_argument("--namespace", default="", help="Prometheus: namespace label of the vLLM pods")
    live.add_argument("--collector-url", metavar="URL", help="collect from inferno's collector service (/collect)")
    live.add_argument("--actuator-url", metavar="URL",
                      help="actuate through inferno's actuator service (/update; needs --collector-url); "
                           "without it a live run only records what it would do")
    p.add_argument("--record", type=Path, help="write one JSON line per cycle here")
    p.add_argument("--plot", type=Path, help="write a PNG of load, replicas, ITL/TTFT, cost, parameters")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run_command)


def build_config(args):
    """The LoopConfig the arguments ask for."""
    from ..tables import ChurnCosts
    from .loop import DEFAULT_CHURN, LoopConfig
    from .stabilise import StabilityOptions

    base = LoopConfig.inferno() if args.mode == "inferno" else LoopConfig()
    kw: dict = {"period": args.period, "startup_delay": args.startup_delay, "time_limit": args.time_limit}
    if args.forecast:
        kw["forecast"] = args.forecast
    if args.margin is not None:
        kw["margin_quantile"] = None if args.margin == "none" else _fraction("--margin", args.margin)
    if args.max_margin is not None:
        if not 0 <= args.max_margin <= 1:
            raise ValueError(f"--max-margin: expected a number in [0, 1], got {args.max_margin!r}")
        kw["max_margin"] = args.max_margin
    if args.stability is not None:
        kw["stability"] = StabilityOptions.parse(args.stability)
    if args.churn is not None:
        kw["churn"] = _churn(args.churn, DEFAULT_CHURN, ChurnCosts)
    if args.solver:
        kw["solver"] = args.solver
    if args.batch_rule:
        kw["solve_options"] = {"batch_rule": args.batch_rule}
    for name in ("period", "startup_delay", "time_limit"):
        if not kw[name] > 0 and not (name == "startup_delay" and kw[name] == 0):
            raise ValueError(f"--{name.replace('_', '-')}: must be > 0, got {kw[name]!r}")
    from dataclasses import replace

    return replace(base, **kw)


def _fraction(flag: str, text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"{flag}: expected a number in (0, 1) or 'none', got {text!r}") from None
    if not 0 < v < 1:
        raise ValueError(f"{flag}: expected a number in (0, 1) or 'none', got {text!r}")
    return v


def _churn(text: str, default, cls):
    if text == "on":
        return default
    if text == "off":
        return None
    names = {"added": "replica_added", "removed": "replica_removed", "accelerator": "accelerator_change",
             "batch": "batch_change"}
    kw = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in names:
            raise ValueError(f"--churn: unknown setting {item!r}; known: on, off, " + ", ".join(
                f"{k}=..." for k in names))
        try:
            kw[names[key.strip()]] = float(value)
        except ValueError:
            raise ValueError(f"--churn: {key.strip()} expects a number, got {value!r}") from None
    return cls(**kw)


def perturbed(system, factor: float):
    """`system` with every perf parameter multiplied by 1 + factor (the controller's wrong starting belief)."""
    if factor == 0:
        return system
    perf = tuple(p.model_copy(update={k: getattr(p, k) * (1 + factor) for k in ("alpha", "beta", "gamma", "delta")})
                 for p in system.perf)
    return system.replace(perf=perf)


def run_command(args) -> int:
    from ..io import load_scenario

    try:
        config = build_config(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.prometheus or args.collector_url:
        return run_live(args, config)
    if args.workload is None:
        print("error: --workload: required (the simulated fleet's load)", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not -1 < args.param_error:
        print(f"error: --param-error: must be > -1, got {args.param_error!r}", file=sys.stderr)
        return EXIT_BAD_INPUT
    system = load_scenario(args.scenario)
    from ..sim import Fleet, SimulationError, Workload

    try:
        workload = Workload.from_yaml(args.workload)
        fleet = Fleet.from_system(system, workload, startup_delay=args.startup_delay, seed=args.seed)
    except (SimulationError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    records = simulate(system, fleet, config, duration=args.duration, tuner=not args.no_tuner and args.mode != "inferno",
                       tuner_url=args.tuner_url, optimizer_url=args.optimizer_url,
                       controller_system=perturbed(system, args.param_error), record=args.record,
                       progress=not args.quiet)
    from .metrics import summarize
    from .scenario_steps import step_windows

    summary = summarize(records, step_windows(workload, args.startup_delay + args.period), args.period)
    print(json.dumps({"config": config.name, **summary}, indent=2))
    if args.plot:
        from .plot import plot_cycles

        print(f"wrote {plot_cycles(records, args.plot, f'{args.scenario.name}: {config.name}')}", file=sys.stderr)
    return 0


class RecordOnly:
    """A live run without an actuator: decisions are recorded, nothing is changed."""

    def actuate(self, targets):
        return {n: f"would set {t.accelerator} x{t.replicas} batch {t.max_batch}" for n, t in targets.items()}


def run_live(args, config) -> int:
    """Cycle every period against live services until --duration seconds have passed."""
    import time

    from ..io import load_scenario
    from .live import InfernoActuator, InfernoCollector, PrometheusCollector
    from .loop import ControlLoop
    from .record import write_record
    from .tune import InProcessTuner, RemoteTuner, sizing_perf_model

    if args.actuator_url and not args.collector_url:
        print("error: --actuator-url: needs --collector-url (inferno's actuator takes the collector's objects)",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    system = load_scenario(args.scenario)
    if args.collector_url:
        collector = InfernoCollector(args.collector_url)
    else:
        collector = PrometheusCollector(args.prometheus, system, namespace=args.namespace)
    actuator = InfernoActuator(args.actuator_url, collector, system) if args.actuator_url else RecordOnly()
    queues = {s.name: s.max_queue_size for s in system.servers}
    tuner = None
    if not args.no_tuner and args.mode != "inferno":
        tuner = RemoteTuner(args.tuner_url, max_queue=queues) if args.tuner_url else \
            InProcessTuner(max_queue=queues, perf_model=sizing_perf_model(config.solve_options))
    from .decide import optimizer_solve

    loop = ControlLoop(system, collector, actuator, config, tuner,
                       optimizer_solve(args.optimizer_url) if args.optimizer_url else None)
    out = open(args.record, "w", encoding="utf-8") if args.record else sys.stdout
    end = time.monotonic() + args.duration
    try:
        while time.monotonic() < end:
            started = time.monotonic()
            write_record(loop.cycle(), out)
            time.sleep(max(0.0, config.period - (time.monotonic() - started)))
    except KeyboardInterrupt:
        pass
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def simulate(system, fleet, config, *, duration: float, tuner: bool = True, tuner_url: str | None = None,
             optimizer_url: str | None = None, controller_system=None, record: Path | None = None,
             progress: bool = False) -> list[dict]:
    """Run `config` on a simulated `fleet` for `duration` seconds; the records (also written to `record`)."""
    from .decide import optimizer_solve
    from .loop import ControlLoop
    from .record import write_record
    from .simulated import SimActuator, SimCollector, run
    from .tune import InProcessTuner, RemoteTuner, sizing_perf_model

    controller_system = controller_system or system
    queues = {s.name: s.max_queue_size for s in system.servers}
    tune_stage = None
    if tuner:
        tune_stage = RemoteTuner(tuner_url, max_queue=queues) if tuner_url else \
            InProcessTuner(max_queue=queues, perf_model=sizing_perf_model(config.solve_options))
    solve = optimizer_solve(optimizer_url) if optimizer_url else None
    loop = ControlLoop(controller_system, SimCollector(fleet, system), SimActuator(fleet), config, tune_stage, solve)
    cycles = int(duration // config.period)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cycles, unit="cycle", desc=config.name, file=sys.stderr, leave=False)
    records = []
    out = open(record, "w", encoding="utf-8") if record else None
    try:
        for r in run(loop, fleet, duration, config.period):
            records.append(r)
            if out:
                write_record(r, out)
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"cost {r['totalCost']:.0f}")
    finally:
        if bar is not None:
            bar.close()
        if out:
            out.close()
    return records
