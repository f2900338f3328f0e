"""Fuzzing: mutated scenarios, ``solve()`` options and ``analyze``/``size`` arguments, outcomes counted per class.

Run from the repository root:  python -m benchmarks.fuzz --cases 10000 --seed 0 [--jobs 2] [--write]
Cases are drawn by hypothesis (seeded, so a run is reproducible) and each runs in a worker process with a
memory limit and a wall-clock watchdog, so a hang or a dead process is counted rather than fatal. ``--write``
replaces the "## Fuzzing" section of benchmarks/RESULTS.md with the report.

Outcome classes: ``result`` and ``clean-error`` are fine; every other class is a defect:
traceback (an exception other than a one-line ScenarioError/ValueError/TypeError), multi-line-error, hang (the
case took more than --hang CPU seconds, or was killed after --kill wall seconds), worker-death, missing-server (an input server has no
entry), nan-output, capacity-exceeded, ok-over-slo (an ``ok`` server whose predicted ITL/TTFT exceed its
targets), nondeterministic (a different answer for the same input with its lists shuffled).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import math
import multiprocessing as mp
import random
import re
import resource
import sys
import time
import traceback
from collections import Counter, defaultdict
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
BASES = ("inferno-small", "inferno-large", "inferno-legacy-small", "inferno-legacy-large")
SECTION_FILES = {"acceleratorData": "accelerator-data.json", "capacityData": "capacity-data.json",
                 "modelData": "model-data.json", "serviceClassData": "serviceclass-data.json",
                 "serverData": "server-data.json", "optimizerData": "optimizer-data.json"}
SOLVERS = ("greedy", "highs", "unlimited")
FINE = ("result", "clean-error")
DEFECTS = ("traceback", "multi-line-error", "hang", "worker-death", "missing-server", "nan-output",
           "capacity-exceeded", "ok-over-slo", "nondeterministic")
OUTCOMES = FINE + DEFECTS
KINDS = ("scenario", "options", "sizing")

NUMBERS = (math.nan, math.inf, -math.inf, -1, -1e-9, 0, 0.5, 1, 2**31, 2**63, 10**6, 1e308, 1e-308)
EXTREME_FIELDS = ("maxBatchSize", "atTokens", "avgInTokens", "avgOutTokens", "maxQueueSize", "accCount",
                  "minNumReplicas", "numReplicas", "arrivalRate", "count", "multiplicity")
EXTREMES = (0, 1, 0.5, -5, 10**6, 2**31, 2**63, 1e308, math.nan, math.inf)
NAMES = st.one_of(st.text(min_size=0, max_size=12), st.sampled_from(["", " ", "ü-模型-🚀", "a" * 300, "nonesuch"]))
JUNK = st.one_of(st.none(), st.booleans(), st.text(max_size=8), st.lists(st.integers(), max_size=3),
                 st.dictionaries(st.text(max_size=4), st.integers(), max_size=2), st.sampled_from(NUMBERS))


def raw_scenario(name: str) -> dict:
    """A sample set as inferno's SystemData dict, exactly as its files hold it."""
    folder = ROOT / "scenarios" / name
    return {"system": {key: json.loads((folder / file).read_text(encoding="utf-8"))
                       for key, file in SECTION_FILES.items()}}


RAW = {name: raw_scenario(name) for name in BASES}


# ----------------------------------------------------------------------------------------------- cases

def _slots(obj, out: list) -> list:
    """Every (container, key) in a JSON tree, containers first."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for key, value in items:
        out.append((obj, key))
        _slots(value, out)
    return out


def _mutate(draw, data: dict) -> str:
    slots = _slots(data, [])
    if not slots:
        return "nothing left"
    container, key = slots[draw(st.integers(0, len(slots) - 1))]
    value = container[key]
    ops = ["drop", "mistype", "number"]
    if isinstance(container, dict):
        ops.append("rename")
    if isinstance(value, list):
        ops += ["empty", "duplicate", "duplicate"]
    if key in ("name", "model", "class", "acc", "type", "accelerator"):
        ops += ["unicode", "dangling"]
    op = draw(st.sampled_from(ops))
    if op == "drop":
        del container[key]
    elif op == "rename":
        new = draw(st.sampled_from([key.upper(), key + "x", "_" + key, key.replace("a", "ä")]))
        container[new] = container.pop(key)
    elif op == "mistype":
        container[key] = draw(JUNK)
    elif op == "number":
        container[key] = draw(st.sampled_from(NUMBERS))
    elif op == "empty":
        container[key] = []
    elif op == "duplicate" and value:
        value.append(copy.deepcopy(value[draw(st.integers(0, len(value) - 1))]))
    elif op == "unicode":
        container[key] = draw(NAMES)
    elif op == "dangling":
        container[key] = "nonesuch-" + str(key)
    return f"{op} {key}"


def _extreme(draw, data: dict) -> str:
    slots = [(c, k) for c, k in _slots(data, []) if isinstance(c, dict) and k in EXTREME_FIELDS]
    if not slots:
        return _mutate(draw, data)
    container, key = slots[draw(st.integers(0, len(slots) - 1))]
    container[key] = draw(st.sampled_from(EXTREMES))
    return f"extreme {key}={container[key]!r}"


@st.composite
def scenario_cases(draw) -> dict:
    base = draw(st.sampled_from(BASES))
    data = copy.deepcopy(RAW[base])
    done = [(_extreme if draw(st.integers(0, 2)) == 0 else _mutate)(draw, data)
            for _ in range(draw(st.integers(1, 3)))]
    return {"kind": "scenario", "base": base, "what": "; ".join(done), "data": data,
            "solver": draw(st.sampled_from(SOLVERS)), "shuffle": draw(st.integers(0, 2**16))}


OPTION_VALUES = {
    "time_limit": st.sampled_from([math.nan, -1, 0, 1e-9, 0.5, 5, math.inf, "10", None]),
    "mip_gap": st.sampled_from([math.nan, -1e-9, 0, 1e-4, 1, 2, math.inf]),
    "threads": st.sampled_from([0, 1, 2, -1, 1.5, 10**9, True]),
    "seed": st.sampled_from([0, 1, -1, 2**63, 1.5]),
    "warm_start": st.sampled_from(["greedy", "current", "none", "bogus", 3]),
    "saturation_policy": st.sampled_from(["None", "PriorityExhaustive", "PriorityRoundRobin", "RoundRobin", "x", 1]),
    "perf_model": st.sampled_from(["v01", "v02", "old3", "old", "new", "v99", ""]),
    "batch_rule": st.sampled_from(["inferno", "optimal", "all", "largest"]),
    "queue_ratio": st.sampled_from([0, 1, 10, -3, 10**6, 2.5]),
    "max_num_tokens": st.sampled_from([1, 8192, 0, -1, 10**9]),
    "max_replica_change": st.sampled_from([0, 1, -1, 10**9]),
    "heterogeneous": st.booleans(), "unlimited": st.booleans(), "compat": st.booleans(),
    "delayed_best_effort": st.booleans(), "best_effort": st.booleans(),
}


@st.composite
def option_cases(draw) -> dict:
    names = draw(st.lists(st.sampled_from(sorted(OPTION_VALUES)), min_size=1, max_size=4, unique=True))
    options = {name: draw(OPTION_VALUES[name]) for name in names}
    options = {k: v for k, v in options.items() if v is not None}
    base = draw(st.sampled_from(("inferno-small", "inferno-legacy-small")))
    return {"kind": "options", "base": base, "what": repr(options), "data": RAW[base], "options": options,
            "solver": draw(st.sampled_from(SOLVERS)), "shuffle": draw(st.integers(0, 2**16))}


PLAUSIBLE = st.one_of(st.sampled_from(["0.5", "7", "32.85", "0.016", "1243", "279", "379", "12.7", "64", "256"]),
                      st.floats(min_value=1e-4, max_value=1e4).map(lambda x: f"{x:.6g}"),
                      st.integers(1, 4096).map(str))
ODD = st.sampled_from(["0", "-1", "nan", "inf", "1e308", "2147483648", "1e-9", "abc", "", "1000000"])
# hypothesis favours small integers, so a rare branch is a middle value, not 0
SIZE_NUMBERS = st.integers(0, 19).flatmap(lambda k: ODD if k == 7 else PLAUSIBLE)  # most cases pass the checks
SIZE_INTEGERS = st.integers(0, 19).flatmap(lambda k: ODD if k == 7 else st.integers(1, 512).map(str))


@st.composite
def sizing_cases(draw) -> dict:
    command = draw(st.sampled_from(["analyze", "size"]))
    argv = [command]
    if draw(st.booleans()):
        flags = ["--alpha", "--beta", "--gamma"]
    else:
        flags = ["--decode-alpha", "--decode-beta", "--prefill-gamma", "--prefill-delta"]
    flags += ["--in-tokens", "--out-tokens", "--max-batch"]
    flags += ["--rate"] if command == "analyze" else ["--ttft", "--itl", "--tps"]
    optional = ["--max-queue", "--max-num-tokens", "--perf-model"] + (["--max-batch-limit"] if command == "size"
                                                                       else [])
    for flag in flags + draw(st.lists(st.sampled_from(optional), max_size=2, unique=True)):
        if draw(st.integers(0, 19)) == 7:
            continue  # a missing argument
        if flag == "--perf-model":
            value = draw(st.sampled_from(["v02", "x"] if "--decode-alpha" in flags else ["new", "old", "old3", "v02"]))
        elif flag in ("--max-batch", "--max-queue", "--max-batch-limit"):
            value = draw(SIZE_INTEGERS)
        else:
            value = draw(SIZE_NUMBERS)
        argv += [flag, value]
    for switch in ("--compat", "--json", "--optimal-batch"):
        if draw(st.integers(0, 3)) == 0 and (switch != "--optimal-batch" or command == "size"):
            argv.append(switch)
    return {"kind": "sizing", "what": " ".join(argv), "argv": argv}


CASES = st.one_of(scenario_cases(), scenario_cases(), option_cases(), sizing_cases())


def draw_cases(n: int, seed_value: int) -> list[dict]:
    """`n` cases drawn by hypothesis from `seed_value` (the same list for the same arguments)."""
    out: list[dict] = []

    @seed(seed_value)
    @settings(max_examples=n, phases=[Phase.generate], database=None, deadline=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(CASES)
    def collect(case):
        out.append(case)

    collect()
    return out[:n]


# ----------------------------------------------------------------------------------------------- one case

def _shuffled(data, rng: random.Random):
    """`data` with every list of entries (objects) in a random order; values that are lists keep theirs."""
    if isinstance(data, dict):
        return {k: _shuffled(v, rng) for k, v in data.items()}
    if isinstance(data, list):
        items = [_shuffled(v, rng) for v in data]
        if all(isinstance(v, dict) for v in items):
            rng.shuffle(items)
        return items
    return data


def _one_line(text: str) -> bool:
    return "\n" not in text.strip()


def _fingerprint(solution) -> str:
    """The answer without timings and without input positions (``servers[7]``), which shuffling moves."""
    d = solution.to_dict()
    d.pop("timings", None)
    unplaced = json.loads(re.sub(r"\[\d+\]", "[]", json.dumps(d, default=str)))
    unplaced["issues"] = sorted(unplaced["issues"])
    return json.dumps(unplaced, sort_keys=True)


def _solution_defects(system, solution) -> list[str]:
    names = {a.name for a in solution.allocations}
    expected = {s.name for s in system.servers} | {s.name for s in system.invalid_servers}
    found = []
    if expected - names:
        found.append("missing-server")
    numbers = [solution.total_cost] + [x for a in solution.allocations
                                       for x in (a.cost, a.itl, a.ttft, a.rho, a.served_rate, a.arrival_rate)]
    if any(isinstance(x, float) and not math.isfinite(x) for x in numbers):
        found.append("nan-output")
    if not system.optimizer.unlimited and solution.solver != "unlimited":
        if any(used > solution.capacity.get(t, math.inf) + 1e-9 for t, used in solution.units_used.items()):
            found.append("capacity-exceeded")
    if any(a.status == "ok" and a.replicas and not a.meets_slo for a in solution.allocations):
        found.append("ok-over-slo")
    return found


def run_case(case: dict) -> tuple[str, str]:
    """(outcome, detail) of one case, run in this process."""
    from inferno_mip import ScenarioError, parse_system, solve

    if case["kind"] == "sizing":
        return _run_cli(case["argv"])
    options = dict(case.get("options", {}))
    options.setdefault("time_limit", 10.0)
    try:
        system = parse_system(copy.deepcopy(case["data"]))
        solution = solve(system, solver=case["solver"], **options)
    except Exception as exc:  # a deliberate one-line error of ours is clean; anything else is a defect
        if isinstance(exc, (ScenarioError, ValueError, TypeError)) and _raised_by_us(exc):
            return ("clean-error" if _one_line(str(exc)) else "multi-line-error"), f"{type(exc).__name__}: {exc}"
        return "traceback", _where(exc)
    defects = _solution_defects(system, solution)
    if defects:
        return defects[0], ", ".join(defects)
    duplicates = any("duplicate" in str(issue) for issue in system.issues)  # shuffled, another entry wins
    if case["solver"] in ("greedy", "unlimited") and not duplicates:  # cheap enough to solve twice
        again = solve(parse_system(_shuffled(copy.deepcopy(case["data"]), random.Random(case["shuffle"]))),
                      solver=case["solver"], **options)
        if _fingerprint(again) != _fingerprint(solution):
            return "nondeterministic", "answer changed with the input lists shuffled"
    return "result", solution.status


def _run_cli(argv: list[str]) -> tuple[str, str]:
    from inferno_mip.cli import main

    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 2
    except Exception as exc:
        return "traceback", _where(exc)
    text = err.getvalue().strip()
    if code in (0, 1):
        output = out.getvalue()
        if "nan" in output.lower().replace("nanosec", ""):
            return "nan-output", output[:120]
        return "result", f"exit {code}"
    if not text.startswith("error:") or not _one_line(text):
        return "multi-line-error", text[:200]
    return "clean-error", text


def _raised_by_us(exc: BaseException) -> bool:
    """The exception was raised in the project's own code (not deep inside numpy, pydantic or a backend)."""
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and any(part in frames[-1].filename for part in ("inferno_mip", "/solvers/", "/models/"))


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    here = next((f for f in reversed(frames) if "inferno_mip" in f.filename or "/solvers/" in f.filename
                 or "/models/" in f.filename), frames[-1] if frames else None)
    place = f" at {Path(here.filename).name}:{here.lineno}" if here else ""
    return f"{type(exc).__name__}{place}: {str(exc)[:120]}"


# ----------------------------------------------------------------------------------------------- workers

def _worker(conn, memory_mb: int) -> None:
    if memory_mb:
        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    while True:
        case = conn.recv()
        if case is None:
            return
        started = time.process_time()
        outcome, detail = run_case(case)
        conn.send((outcome, detail, time.process_time() - started))


class Pool:
    """Worker processes that run cases one at a time under a watchdog; a hung or dead worker is replaced."""

    def __init__(self, jobs: int, memory_mb: int):
        self.ctx, self.memory_mb = mp.get_context("fork"), memory_mb
        self.workers = [self._start() for _ in range(max(1, jobs))]

    def _start(self):
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=_worker, args=(child, self.memory_mb), daemon=True)
        proc.start()
        child.close()
        return proc, parent

    def run(self, cases: list[dict], hang_s: float, kill_s: float, progress=None) -> list[tuple[str, str, float]]:
        results: list = [None] * len(cases)
        pending = list(range(len(cases)))
        busy: dict[int, tuple[int, float]] = {}  # worker slot -> (case index, wall start)
        while pending or busy:
            for slot in range(len(self.workers)):
                if slot not in busy and pending:
                    index = pending.pop(0)
                    self.workers[slot][1].send(cases[index])
                    busy[slot] = (index, time.monotonic())
            for slot, (index, began) in list(busy.items()):
                proc, conn = self.workers[slot]
                record = None
                if conn.poll(0.01):
                    try:
                        outcome, detail, cpu = conn.recv()
                        # CPU, not wall time: on a shared machine wall time measures the neighbours
                        record = ("hang", f"{cpu:.1f} CPU s: {detail}", cpu) if cpu > hang_s else (outcome, detail,
                                                                                                   cpu)
                    except (EOFError, OSError):
                        record = ("worker-death", f"exit code {proc.exitcode}", math.nan)
                elif not proc.is_alive():
                    record = ("worker-death", f"exit code {proc.exitcode}", math.nan)
                elif time.monotonic() - began > kill_s:
                    proc.kill()
                    record = ("hang", f"killed after {kill_s:.0f} s", math.nan)
                if record is not None:
                    results[index] = record
                    del busy[slot]
                    if not proc.is_alive() or record[0] == "worker-death":
                        proc.join(1)
                        self.workers[slot] = self._start()
                    if progress:
                        progress()
        return results

    def close(self) -> None:
        for proc, conn in self.workers:
            with contextlib.suppress(OSError):
                conn.send(None)
            proc.join(2)
            if proc.is_alive():
                proc.kill()


def fuzz(n: int, seed_value: int = 0, jobs: int = 1, hang_s: float = 20.0, kill_s: float = 120.0,
         memory_mb: int = 3072, progress: bool = False) -> tuple[list[dict], list[tuple[str, str, float]]]:
    """Draw `n` cases and run them; returns the cases and their (outcome, detail, CPU seconds)."""
    cases = draw_cases(n, seed_value)
    import inferno_mip.api  # noqa: F401  (loaded before forking: workers start warm)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(cases), unit="case", file=sys.stderr)
    pool = Pool(jobs, memory_mb)
    try:
        results = pool.run(cases, hang_s, kill_s, progress=bar.update if bar else None)
    finally:
        pool.close()
        if bar:
            bar.close()
    return cases, results


# ----------------------------------------------------------------------------------------------- report

def report(cases: list[dict], results: list[tuple[str, str, float]], cpu_s: float, seed_value: int) -> str:
    """Markdown: counts per kind and outcome, then up to three examples of each defect found."""
    counts: dict[str, Counter] = defaultdict(Counter)
    examples: dict[str, list[str]] = defaultdict(list)
    for case, (outcome, detail, _) in zip(cases, results):
        counts[case["kind"]][outcome] += 1
        if outcome in DEFECTS and len(examples[outcome]) < 3:
            examples[outcome].append(f"{case['kind']} `{case['what'][:100]}`"
                                     f"{' (' + case['base'] + ', ' + case['solver'] + ')' if 'base' in case else ''}"
                                     f": {detail[:160]}")
    lines = [f"{len(cases)} cases (seed {seed_value}), {cpu_s / 60:.1f} min of CPU in the workers, measured on a "
             "shared 2-core machine.", "",
             "| kind | " + " | ".join(OUTCOMES) + " |", "|---|" + "---:|" * len(OUTCOMES)]
    for kind in KINDS + ("all",):
        row = sum(counts.values(), Counter()) if kind == "all" else counts[kind]
        lines.append(f"| {kind} | " + " | ".join(str(row[o]) for o in OUTCOMES) + " |")
    defects = sum(sum(c[o] for o in DEFECTS) for c in counts.values())
    lines += ["", f"Defects: {defects}." if defects else "Defects: none."]
    for outcome, found in examples.items():
        lines += [f"- {outcome}:"] + [f"  - {e}" for e in found]
    return "\n".join(lines)


def write_results(text: str, path: Path = ROOT / "benchmarks" / "RESULTS.md") -> None:
    """Replace (or append) the "## Fuzzing" section of RESULTS.md."""
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    section = f"## Fuzzing\n\nCommand: `python -m benchmarks.fuzz --cases N --seed S --write`.\n\n{text}\n"
    if "## Fuzzing" in old:
        head, rest = old.split("## Fuzzing", 1)
        tail = rest[rest.index("\n## ") + 1:] if "\n## " in rest else ""
        path.write_text(head + section + ("\n" + tail if tail else ""), encoding="utf-8")
    else:
        path.write_text(old.rstrip("\n") + "\n\n" + section, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--hang", type=float, default=20.0, help="CPU seconds beyond which a case counts as a hang")
    parser.add_argument("--kill", type=float, default=120.0, help="wall seconds after which a case's worker is killed")
    parser.add_argument("--memory-mb", type=int, default=3072, help="address-space limit per worker (0: none)")
    parser.add_argument("--write", action="store_true", help="replace the Fuzzing section of benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    cases, results = fuzz(args.cases, args.seed, args.jobs, args.hang, args.kill, args.memory_mb, progress=True)
    cpu = sum(r[2] for r in results if r[2] == r[2])
    text = report(cases, results, cpu, args.seed)
    print(text)
    if args.write:
        write_results(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
