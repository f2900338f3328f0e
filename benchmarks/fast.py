"""CPU time of the exact path at controller speed and fleet scale, with each speed-up switchable.

One command per row of benchmarks/RESULTS.md ("Exact allocation at controller speed and fleet scale"):

    python benchmarks/fast.py cycles --servers 50 --cycles 200 --incremental   # controller cycles, warm, p50 / p99
    python benchmarks/fast.py cycles --servers 200 --cycles 20 --incremental
    python benchmarks/fast.py cycles --servers 50 --cycles 200 --incremental --tightness 2   # capacity not binding
    python benchmarks/fast.py stages --servers 50 --cycles 20           # where a binding cycle's CPU goes
    python benchmarks/fast.py budgets --servers 50 --cycles 40 --limits 0.1,0.2,0.5 --cpu-clock   # short limits
    python benchmarks/fast.py fleet --servers 1000 --seeds 0,1,2        # balanced 1,000 x 20, three seeds
    python benchmarks/fast.py fleet --servers 10000 --seeds 0
    python benchmarks/fast.py fleet --servers 1000 --seeds 0 --heterogeneous --time-limit 10
    python benchmarks/fast.py fleet --servers 50 --seeds 0,1,2 --heterogeneous --time-limit 60 \
        --variants "$BEFORE;+covers;+lp-round;+patterns;default"     # each multi-assign technique alone
    python benchmarks/fast.py fleet --servers 1000 --seeds 0 --heterogeneous --time-limit 10 --cpu-clock \
        --variants "default;+aggregate-patterns"                     # multi-assign servers aggregated
    python benchmarks/fast.py fleet --servers 1000 --seeds 0,1,2 --heterogeneous --time-limit 10 --cpu-clock \
        --variants "$BEFORE,lp-round;default"                         # multi-assign: the cover master (third round)
    python benchmarks/fast.py fleet --servers 200 --seeds 0,1,2 --heterogeneous --time-limit 10 --cpu-clock \
        --against "$BEFORE,lp-round,cover-master"                     # count stages per level with the master
    python benchmarks/fast.py table --servers 1000                      # sizing: cold, warm, SizingCache
    python benchmarks/fast.py floor --servers 50 --cycles 60            # HiGHS's proof alone, per cycle
    python benchmarks/fast.py floor --servers 1000 --seeds 0,1,2 --cycles 1 --sigma 0 --gap 1e-4

``--speedups none`` gives the plain staged path (the "before" column), ``default`` (default) all but rc-fix,
patterns, covers and aggregate-patterns, ``all`` every speed-up, or a comma list of names from
``inferno_mip.models.lexicographic.SPEEDUPS``.
``--compare`` runs none and the chosen set in one process, interleaved; ``--against LIST`` runs LIST and the
chosen set (before and after one technique); ``--ablation`` runs none, each speed-up alone, the default set and
all. Times are CPU seconds of this process (``time.process_time``: the machine is
shared, so wall time would measure the neighbours), medians; the greedy's time in the same run is the yardstick.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections import Counter

import numpy as np

from inferno_mip import Solver, solve
from inferno_mip.bench import FAMILIES, machine
from inferno_mip.scenarios import generate


def perturbed(system, rng: np.random.Generator, sigma: float):
    """The fleet with every arrival rate multiplied by a log-normal factor (one controller cycle's loads)."""
    servers = tuple(s.model_copy(update={"load": s.load.model_copy(
        update={"arrival_rate": s.load.arrival_rate * float(rng.lognormal(0.0, sigma))})}) for s in system.servers)
    return system.replace(servers=servers)


def cpu(fn):
    began = time.process_time()
    out = fn()
    return time.process_time() - began, out


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def cycle_loads(args) -> tuple[dict, list]:
    """The family's generator options and the systems of args.cycles + 1 controller cycles (the first warms up):
    one generated fleet with its loads perturbed log-normally per cycle."""
    family = FAMILIES[args.family] | ({"tightness": args.tightness} if args.tightness is not None else {})
    base = generate(servers=args.servers, seed=args.seed, **family)
    rng = np.random.default_rng(args.seed)
    return family, [perturbed(base, rng, args.sigma) for _ in range(args.cycles + 1)]


def cycles(args) -> None:
    family, loads = cycle_loads(args)
    variants = _variants(args)
    if args.incremental:  # the same variants through a Solver object kept across cycles (sizing reused)
        variants += [(f"{name}, Solver.update", {**options, "incremental": True}) for name, options in variants]
    solvers = {name: Solver(loads[0], solver="highs", time_limit=args.time_limit,
                            **{k: v for k, v in options.items() if k != "incremental"})
               for name, options in variants if options.get("incremental")}
    for name, options in variants:  # warm-up: imports, perf-model caches (a controller runs for hours)
        if name in solvers:
            solvers[name].solve()
        else:
            solve(loads[0], solver="highs", **options)
    solve(loads[0], solver="greedy")
    times: dict[str, list[float]] = {name: [] for name, _ in variants} | {"greedy": []}
    outcome: dict[str, list] = {name: [] for name, _ in variants}
    for system in loads[1:]:  # interleaved, so that a busy neighbour hurts every variant alike
        for name, options in variants:
            if name in solvers:
                seconds, solution = cpu(lambda: solvers[name].update(system))
            else:
                seconds, solution = cpu(lambda: solve(system, solver="highs", time_limit=args.time_limit,
                                                      **options))
            times[name].append(seconds)
            outcome[name].append((solution.status, _unserved(solution), round(solution.objective, 6)))
        times["greedy"].append(cpu(lambda: solve(system, solver="greedy"))[0])
    greedy_p50 = statistics.median(times["greedy"])
    print(f"{machine()}; {args.family} {args.servers} servers (tightness {family['tightness']}), {args.cycles} "
          f"cycles, loads x lognormal(0, "
          f"{args.sigma}); CPU s per cycle, sizing included\n")
    print("| variant | p50 ms | p99 ms | p50 / greedy p50 | statuses |")
    print("|---|---:|---:|---:|---|")
    for name in times:
        statuses = ", ".join(sorted({o[0] for o in outcome.get(name, [])})) or "heuristic"
        p50 = statistics.median(times[name])
        print(f"| {name} | {1e3 * p50:.1f} | {1e3 * _percentile(times[name], 99):.1f} | "
              f"{p50 / greedy_p50:.1f}x | {statuses} |")
    _same_answers(outcome)


@contextlib.contextmanager
def cpu_clock():
    """Within it, the staged solve's clock is this process's CPU time: each stage's entry in a solution's timings
    is its CPU time, and its time limits count CPU seconds, the cover master's and the stage bound's shares within a
    stage too (HiGHS's own limit per run stays wall time)."""
    import types

    import inferno_mip.models.cover_master as cover_master
    import inferno_mip.models.lexicographic as lexicographic
    import inferno_mip.models.stage_bound as stage_bound
    import inferno_mip.solvers.exact as exact

    saved = lexicographic.time, exact.time, cover_master.time, stage_bound.time
    lexicographic.time = exact.time = cover_master.time = stage_bound.time = types.SimpleNamespace(
        perf_counter=time.process_time)
    try:
        yield
    finally:
        lexicographic.time, exact.time, cover_master.time, stage_bound.time = saved


def stages(args) -> None:
    """Where a warm controller cycle's CPU goes, stage by stage (Solver.update, the chosen speed-ups), on the CPU
    clock (``cpu_clock``)."""
    family, loads = cycle_loads(args)
    with cpu_clock():
        solver = Solver(loads[0], solver="highs", time_limit=args.time_limit, speedups=args.speedups)
        solver.solve()
        per_stage: dict[str, list[float]] = {}
        totals = []
        for system in loads[1:]:
            seconds, solution = cpu(lambda: solver.update(system))
            totals.append(seconds)
            for name, value in solution.timings.items():
                if name.startswith("stage ") or name == "build":
                    per_stage.setdefault(name.removeprefix("stage "), []).append(value)
    print(f"{machine()}; {args.family} {args.servers} servers (tightness {family['tightness']}), {args.cycles} "
          f"cycles, speedups={args.speedups}, Solver.update; CPU ms per cycle\n")
    print("| stage | cycles run | median ms (when run) | mean ms per cycle | share of the cycle |")
    print("|---|---:|---:|---:|---:|")
    total_mean = statistics.fmean(totals)
    for name, values in per_stage.items():
        mean = sum(values) / len(totals)
        print(f"| {name} | {len(values)} | {1e3 * statistics.median(values):.1f} | {1e3 * mean:.1f} | "
              f"{mean / total_mean:.0%} |")
    rest = total_mean - sum(sum(v) for v in per_stage.values()) / len(totals)
    print(f"| sizing, warm start, metrics, rest | {len(totals)} | - | {1e3 * rest:.1f} | {rest / total_mean:.0%} |")
    print(f"| whole cycle | {len(totals)} | {1e3 * statistics.median(totals):.1f} | {1e3 * total_mean:.1f} | 100% |")


def budgets(args) -> None:
    """Warm controller cycles (Solver.update) of each variant under each of --limits against the same cycles solved
    to the proven optimum (--time-limit, --speedups): CPU per cycle, and in how many cycles the answer has the
    optimum's unserved counts, and those with its objective too (best effort and value reached)."""
    family, loads = cycle_loads(args)
    limits = [float(v) for v in args.limits.split(",")]
    with cpu_clock() if args.cpu_clock else contextlib.nullcontext():
        solvers = {(name, limit): Solver(loads[0], solver="highs", time_limit=limit, **options)
                   for name, options in _variants(args) for limit in limits}
        reference = Solver(loads[0], solver="highs", time_limit=args.time_limit, speedups=args.speedups)
        for solver in (*solvers.values(), reference):  # warm-up
            solver.solve()
        rows: dict[tuple[str, float], list] = {key: [] for key in solvers}
        for system in loads[1:]:
            best = reference.update(system)
            for key, solver in solvers.items():  # interleaved: every variant and limit sees the same cycle
                seconds, s = cpu(lambda: solver.update(system))
                counts = _unserved(s) == _unserved(best)
                rows[key].append((seconds, s.status, counts,
                                  counts and abs(s.objective - best.objective) <= 1e-7 * abs(best.objective)))
    print(f"{machine()}; {args.family} {args.servers} servers (tightness {family['tightness']}), {args.cycles} "
          f"cycles, loads x lognormal(0, {args.sigma}), Solver.update"
          f"{', time limits on the CPU clock' if args.cpu_clock else ''}; against the optimum within "
          f"{args.time_limit:g} s (speedups={args.speedups})\n")
    print("| variant | time limit s | p50 ms | p99 ms | optimum's unserved counts | and its objective | statuses |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for (name, limit), row in rows.items():
        seconds = [r[0] for r in row]
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(Counter(r[1] for r in row).items()))
        print(f"| {name} | {limit:g} | {1e3 * statistics.median(seconds):.1f} | "
              f"{1e3 * _percentile(seconds, 99):.1f} | {sum(r[2] for r in row)} of {len(row)} | "
              f"{sum(r[3] for r in row)} of {len(row)} | {statuses} |")


@contextlib.contextmanager
def recorded_stages(into: list):
    """Within it, every stage MIP the HiGHS backend solves is appended to `into` as (problem, options, result, CPU
    seconds)."""
    import inferno_mip.solvers.highs as highs

    solve_stage = highs.solve_stage

    def recording(problem, options, settings=None):
        seconds, result = cpu(lambda: solve_stage(problem, options, settings))
        into.append((problem, options, result, seconds))
        return result

    highs.solve_stage = recording
    try:
        yield
    finally:
        highs.solve_stage = solve_stage


def floor(args) -> None:
    """What HiGHS's proof alone costs. Each instance (per seed, the cycles' loads) is solved with `solve()`, its stage
    MIPs recorded; then each MIP HiGHS proved is solved again from its own optimum with HiGHS's root heuristics off
    (``solvers.highs.ROOT_HEURISTICS_OFF``): a start no search can better and no time spent searching, so what is
    left is the proof. While HiGHS proves these same MIPs, no start, heuristic or search setting takes an instance
    below it."""
    from dataclasses import replace

    import inferno_mip.solvers.highs as highs

    totals: dict[str, list[float]] = {"solve(), end to end": [], "its HiGHS runs, as they ran": [],
                                      "the same MIPs from their own optima, root heuristics off": []}
    instances, runs, unproven, differ = [], 0, 0, 0
    for seed in (int(s) for s in args.seeds.split(",")):
        family, loads = cycle_loads(argparse.Namespace(**{**vars(args), "seed": seed}))
        for cycle, system in enumerate(loads[1:]):
            recorded: list = []
            with recorded_stages(recorded):
                seconds, _ = cpu(lambda: solve(system, solver="highs", mip_gap=args.gap, time_limit=args.time_limit,
                                               speedups=args.speedups))
            proof = 0.0
            for problem, options, result, _ in recorded:
                if result.status != "optimal" or result.x is None:
                    unproven += 1
                    continue
                spent, again = cpu(lambda: highs.solve_stage(replace(problem, warm_start=result.x), options,
                                                             highs.ROOT_HEURISTICS_OFF))
                proof += spent
                differ += again.status != "optimal" or abs(again.objective - result.objective) > 1e-6 * max(
                    1.0, abs(result.objective))
            runs += len(recorded)
            as_run = sum(r[3] for r in recorded)
            for name, value in zip(totals, (seconds, as_run, proof)):
                totals[name].append(value)
            instances.append((seed, cycle, len(recorded), seconds, as_run, proof))
    print(f"{machine()}; {args.family} {args.servers} servers (tightness {family['tightness']}), seeds {args.seeds}, "
          f"{args.cycles} cycles each, loads x lognormal(0, {args.sigma}), gap {args.gap:g}, speedups={args.speedups}; "
          f"CPU s per instance; {runs} HiGHS runs\n")
    print("| per instance | p50 s | p99 s | min s | mean s |\n|---|---:|---:|---:|---:|")
    for name, values in totals.items():
        print(f"| {name} | {statistics.median(values):.3f} | {_percentile(values, 99):.3f} | {min(values):.3f} | "
              f"{statistics.fmean(values):.3f} |")
    if len(instances) <= 10:
        print("\n| seed | cycle | HiGHS runs | solve() s | HiGHS as run s | proof alone s |")
        print("|---:|---:|---:|---:|---:|---:|")
        for seed, cycle, n, seconds, as_run, proof in instances:
            print(f"| {seed} | {cycle} | {n} | {seconds:.3f} | {as_run:.3f} | {proof:.3f} |")
    print(f"\n{unproven} HiGHS runs not proven (left out of the proof alone); {differ} of the others not proven again "
          "at the same objective from their optimum")


def fleet(args) -> None:
    import inferno_mip.solvers  # noqa: F401  (importing the backends is not part of any row)

    with cpu_clock() if args.cpu_clock else contextlib.nullcontext():  # time limits in CPU s, as in `stages`
        _fleet(args)


def _fleet(args) -> None:
    """Per seed, the greedy and each variant of one fleet instance, end to end."""
    print(f"{machine()}; {args.family} {args.servers} x {FAMILIES[args.family]['accelerators']}"
          f"{' multi-assign' if args.heterogeneous else ''}; gap {args.gap:g}; CPU s end to end (sizing included)\n")
    print("| seed | variant | CPU s | status | gap | unserved per priority | objective | count stages s | "
          "slowest stages (wall s) | stages stopped early |")
    print("|---:|---|---:|---|---:|---|---:|---:|---|---|")
    outcome: dict[str, list] = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        system = generate(servers=args.servers, seed=seed, **FAMILIES[args.family])
        seconds, greedy = cpu(lambda: solve(system, solver="greedy"))
        print(f"| {seed} | greedy | {seconds:.2f} | heuristic | - | {_unserved(greedy)} | {greedy.objective:.1f} | - | "
              "- | - |")
        for name, options in _variants(args):
            seconds, s = cpu(lambda: solve(system, solver="highs", heterogeneous=args.heterogeneous,
                                           mip_gap=args.gap, time_limit=args.time_limit, **options))
            outcome.setdefault(name, []).append((s.status, _unserved(s), round(s.objective, 6)))
            stages = sorted(((k[6:], v) for k, v in s.timings.items() if k.startswith("stage ")), key=lambda kv: -kv[1])
            slow = "; ".join(f"{k} {v:.1f}" for k, v in stages[:3]) or "-"
            gap = "-" if s.gap is None else f"{s.gap:.1e}"
            # the count stages (and building their aggregation): what aggregate and aggregate-patterns speed up
            counting = sum(v for k, v in s.timings.items() if k.startswith("stage ") and ("unserved" in k or
                                                                                            "aggregate" in k))
            early = s.message.replace("|", "/") if s.status != "optimal" else ""
            print(f"| {seed} | {name} | {seconds:.2f} | {s.status} | {gap} | {_unserved(s)} | {s.objective:.1f} | "
                  f"{counting:.2f} | {slow} | {early or '-'} |", flush=True)
    _same_answers(outcome)


def table(args) -> None:
    """Sizing alone: a cold candidate table, again with the perf models cached, and from a SizingCache after a
    change of every load (what a Solver does each cycle)."""
    from inferno_mip.tables import Settings, SizingCache, build_table

    system = generate(servers=args.servers, seed=args.seed, **FAMILIES[args.family])
    build_table(generate(servers=3, seed=args.seed + 1, **FAMILIES[args.family]), Settings())  # imports only
    cold, built = cpu(lambda: build_table(system, Settings()))
    warm, _ = cpu(lambda: build_table(system, Settings()))
    cache = SizingCache()
    build_table(system, Settings(), cache)
    changed = perturbed(system, np.random.default_rng(args.seed), 0.1)
    cached, _ = cpu(lambda: build_table(changed, Settings(), cache))
    print(f"{machine()}; {args.family} {args.servers} servers, {len(built)} candidates; CPU s\n")
    print("| cold | perf models cached | SizingCache, every load changed |\n|---:|---:|---:|")
    print(f"| {cold:.3f} | {warm:.3f} | {cached:.3f} |")


def _variants(args) -> list[tuple[str, dict]]:
    if args.ablation:  # the plain path, each speed-up alone, all of them
        from inferno_mip.models.lexicographic import SPEEDUPS

        return [(name, {"speedups": name}) for name in ("none", *SPEEDUPS, "default", "all")]
    if args.compare:
        return [("plain", {"speedups": "none"}), ("fast", {"speedups": args.speedups})]
    if args.against:
        return [(f"before ({args.against})", {"speedups": args.against}), ("after", {"speedups": args.speedups})]
    if args.variants:  # several sets, each a comma list, separated by ";" ("+name" adds to the first set)
        sets = args.variants.split(";")
        first = sets[0]
        return [(v if not v.startswith("+") else f"first{v}", {"speedups": first + "," + v[1:] if v.startswith("+")
                 else v}) for v in sets]
    return [(f"speedups={args.speedups}", {"speedups": args.speedups})]


def _unserved(solution) -> str:
    out: dict[int, int] = {}
    for a in solution.allocations:
        if a.status not in ("ok", "zero-load", "invalid-input"):
            out[a.priority] = out.get(a.priority, 0) + 1
    return " ".join(f"p{p}:{n}" for p, n in sorted(out.items())) or "0"


def _same_answers(outcome: dict[str, list]) -> None:
    """With --compare: do both variants give the same statuses, unserved counts and value?"""
    if len(outcome) >= 2:
        plain, *others = outcome.values()
        for name, other in zip(list(outcome)[1:], others):
            same = sum(a == b for a, b in zip(plain, other))
            print(f"\n{name}: same status, unserved counts and objective as {next(iter(outcome))}: "
                  f"{same} of {len(plain)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    tab = sub.add_parser("table")
    tab.set_defaults(run=table)
    tab.add_argument("--servers", type=int, default=1000)
    tab.add_argument("--family", default="balanced", choices=sorted(FAMILIES))
    tab.add_argument("--seed", type=int, default=0)
    for name, fn in (("cycles", cycles), ("stages", stages), ("fleet", fleet), ("budgets", budgets)):
        p = sub.add_parser(name)
        p.set_defaults(run=fn)
        p.add_argument("--servers", type=int, default=1000 if name == "fleet" else 50)
        p.add_argument("--family", default="balanced", choices=sorted(FAMILIES))
        p.add_argument("--speedups", default="default")
        p.add_argument("--compare", action="store_true", help="also run --speedups none, interleaved")
        p.add_argument("--ablation", action="store_true", help="none, each speed-up alone and all, interleaved")
        p.add_argument("--against", help="also run this set of speed-ups (a comma list), "
                       "interleaved: before and after in one run")
        p.add_argument("--variants", help="speed-up sets separated by ';' (each a comma list; '+a,b' means the "
                       "first set plus a and b), run interleaved")
        p.add_argument("--time-limit", type=float, default=120.0 if name == "fleet" else 60.0)
    flo = sub.add_parser("floor")
    flo.set_defaults(run=floor)
    flo.add_argument("--servers", type=int, default=50)
    flo.add_argument("--family", default="balanced", choices=sorted(FAMILIES))
    flo.add_argument("--speedups", default="default")
    flo.add_argument("--time-limit", type=float, default=600.0)
    flo.add_argument("--seeds", default="0", help="fleet seeds (comma-separated), each with its --cycles")
    flo.add_argument("--gap", type=float, default=1e-7, help="mip_gap of solve() (1e-7: its default)")
    for name in ("cycles", "stages", "budgets", "floor"):
        cyc = sub.choices[name]
        cyc.add_argument("--cycles", type=int, default=200 if name == "cycles" else 20)
        if name != "floor":
            cyc.add_argument("--seed", type=int, default=0)
        cyc.add_argument("--sigma", type=float, default=0.1, help="log-normal spread of the load per cycle")
        cyc.add_argument("--tightness", type=float, help="capacity relative to demand, instead of the family's "
                         "(2.0: capacity does not bind)")
    sub.choices["cycles"].add_argument("--incremental", action="store_true",
                                       help="also run each variant through one Solver object kept across cycles")
    bud = sub.choices["budgets"]
    bud.add_argument("--limits", default="0.1,0.2,0.5", help="time limits (s, comma-separated) of the cycles")
    bud.add_argument("--cpu-clock", action="store_true", help="as for fleet")
    fl = sub.choices["fleet"]
    fl.add_argument("--seeds", default="0,1,2")
    fl.add_argument("--gap", type=float, default=1e-4)
    fl.add_argument("--heterogeneous", action="store_true")
    fl.add_argument("--cpu-clock", action="store_true", help="the staged solve's time limit counts this process's "
                    "CPU seconds (HiGHS's own limit per stage stays wall time): fairer on a shared machine")
    args = parser.parse_args(argv)
    if args.command == "stages" and (args.compare or args.ablation or args.against or args.variants):
        parser.error("stages profiles one set of speed-ups (--speedups); --compare, --ablation, --against and "
                     "--variants are for cycles, budgets and fleet")
    args.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
