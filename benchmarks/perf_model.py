"""Perf models against measurements: the one-replica simulator and real vLLM runs.

Run from the repository root:  python -m benchmarks.perf_model  [--quick] [--out benchmarks/results]
Prints the RESULTS.md section "Perf model vs measurements" and writes perf-model-grid.csv, perf-model-real.csv
and perf-model-vs-sim.png under --out.

1. Simulator grid. 11 parameter sets (the six queue-analysis scenarios, four inferno-large models on H100, the
   Qwen-14B set of the real vLLM runs), max batch M in {8, 32, 128}, Q = 128, equal and geometric output
   lengths, loads of 10-90 % of the capacity the simulator measures (30,000 completions at twice the predicted
   capacity). Each point: `inferno_mip.sim.simulate_replica` with --seeds independent seeds (Poisson arrivals;
   6,000 completions at loads up to 50 %, 20,000 above; their mean and its standard error are stored) against
   `analyze` of the perf models at the same rate; --sets runs a subset (e.g. in parallel processes), --rescore
   evaluates the models again on stored runs. `iteration` gets the length CV of
   the simulated distribution; `new` and `old3` evaluate the work at the mean; `v02` gets decode/prefill
   parameters mapped from alpha/beta/gamma (ITL(x) = alpha + x W/(1+m), Pf(x) = alpha + (beta+gamma) n + x W/(1+m)).
   Variants of the iteration model's queueing-delay correction (queue_factor, with and without the occupancy spread
   factor of a fixed residence) are scored on the same runs. A point is resolved
   when two standard errors of the simulator's mean are at most 5 % of it.
   --refine adds seeds (blocks of 4, the same run length) at a stored grid's unresolved points until they are
   resolved or used --cpu-cap CPU seconds, in --shard parts (parallel processes); --merge puts the refined rows
   back into the grid (then --rescore it). Refine one grid in shards of one call: different calls reuse seed
   numbers, so a merge keeps the refinement with more seeds and does not pool them.
2. Real data (../shared/reference/data/vllm-runs/observations.csv): benchmarks/perf_model_real.py, fit on half of
   the control cycles and predict the other half (run alone: python -m benchmarks.perf_model_real).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from pathlib import Path

import numpy as np

from inferno_mip.queueing import iteration, make_perf_model
from inferno_mip.queueing.errors import QueueingError
from inferno_mip.sim import LengthDist, ReplicaConfig, simulate_replica

from .perf_model_composition import composition_factor
from .perf_model_real import run_real, write_details

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT.parent / "shared" / "reference" / "golden" / "queue-analysis" / "scenarios.json"
LARGE = ROOT / "scenarios" / "inferno-large"
BATCHES = (8, 32, 128)
QUEUE = 128
LOADS = (0.1, 0.3, 0.5, 0.7, 0.8, 0.9)
MODELS = ("iteration", "new", "old3", "v02")
TOLERANCE = 0.10
NO_BUDGET = 1e12  # the simulator runs without a per-iteration token budget


def parameter_sets() -> list[dict]:
    """(name, alpha, beta, gamma, n, m) of the 9 sets."""
    sets = []
    for s in json.loads(SCENARIOS.read_text())["scenarios"]:
        sets.append(dict(name=s["name"], alpha=s["alpha"], beta=s["beta"], gamma=s["gamma"],
                         n=float(s["AvgInputTokens"]), m=float(s["AvgOutputTokens"])))
    perf = json.loads((LARGE / "model-data.json").read_text())["models"]
    servers = json.loads((LARGE / "server-data.json").read_text())["servers"]
    for model in ("granite_13b", "llama_7b", "llama_70b", "mixtral_8_7b"):
        p = next(x["perfParms"] for x in perf if x["name"] == model and x["acc"] == "H100")
        load = {k.lower(): v for k, v in next(s for s in servers if s["model"] == model)["currentAlloc"]["load"].items()}
        sets.append(dict(name=f"{model}/H100", alpha=p["alpha"], beta=p["beta"], gamma=p["gamma"],
                         n=float(load["avgintokens"]), m=float(load["avgouttokens"])))
    sets.append(dict(name="qwen-14b/H100 (vLLM)", alpha=10.645377, beta=0.04176, gamma=5.8e-5, n=1000.0, m=500.0))
    return sets


def perf_model(kind: str, s: dict, batch: int, out_cv: float):
    if kind == "v02":
        w = make_perf_model("new", s, in_tokens=s["n"], out_tokens=s["m"], max_batch=1, max_queue=0,
                            max_num_tokens=NO_BUDGET).service.w_tot[1]
        per = w / (1.0 + s["m"])
        params = dict(alpha=s["alpha"], beta=per, gamma=s["alpha"] + (s["beta"] + s["gamma"]) * s["n"],
                      delta=per / s["n"])
    else:
        params = {k: s[k] for k in ("alpha", "beta", "gamma")}
    return make_perf_model(kind, params, in_tokens=s["n"], out_tokens=s["m"], max_batch=batch, max_queue=QUEUE,
                           max_num_tokens=NO_BUDGET, out_tokens_cv=out_cv if kind == "iteration" else None)


def run_setup(s: dict, batch: int, geometric: bool, rate: float, completions: int):
    """(replica configuration, output-length distribution, warm-up s, duration s) of one simulator run at a point."""
    cfg = ReplicaConfig(alpha=s["alpha"], beta=s["beta"], gamma=s["gamma"], max_batch=batch, max_queue=QUEUE)
    out = LengthDist.geometric(s["m"]) if geometric else LengthDist.fixed(s["m"])
    residence = s["m"] * (s["alpha"] + batch * (s["beta"] + s["gamma"] * (s["n"] + s["m"]))) / 1000.0
    warmup = max(5.0 * residence, 0.1 * completions / rate)
    return cfg, out, warmup, warmup + completions / rate


def simulate(s: dict, batch: int, geometric: bool, rate: float, completions: int, seed: int):
    cfg, out, warmup, duration = run_setup(s, batch, geometric, rate, completions)
    return simulate_replica(cfg, rate, LengthDist.fixed(s["n"]), out, duration=duration, warmup=warmup, seed=seed)


# --------------------------------------------------------------------------- queueing-delay variants
def _variant(weight: str, rho_kind: str, cap: bool = True):
    """The queueing-delay factor with c_s^2 weighted by `weight` between the residence and the work share,
    and the M/D/c ratio taken at utilisation lambda E[s] ("share") or L_s/N ("ls")."""
    def factor(p, batch, st):
        es, es2 = iteration.share_moments(p, batch)
        scv_s, scv_i = es2 / (es * es) - 1.0, p.ei2 / (p.ei * p.ei) - 1.0
        c = np.asarray(batch, dtype=np.float64)
        rho_q = np.minimum(st.lam * es, 1.0)
        rho = np.clip(rho_q if rho_kind == "share" else st.num_in_service / c, 1e-9, 1.0)
        w = {"p_full": st.p_block, "sqrt p_full": np.sqrt(st.p_block), "rho": rho_q, "one": 1.0}[weight]
        scv = np.maximum(scv_i + w * (scv_s - scv_i), 0.0)
        det = 0.5 + iteration.cosmetatos_slope(c) * (1.0 - rho) / rho
        return iteration.variability_factor(scv, np.minimum(det, 1.0) if cap else det)
    return factor


def _factor_none(p, batch, st):
    return 1.0 + 0.0 * st.p_block


def _no_spread(p, st):
    return 1.0


def _no_composition(p, st):
    return 0.0


ORIGINAL_FACTOR, ORIGINAL_SPREAD = iteration.queue_factor, iteration.occupancy_spread_factor
ORIGINAL_COMPOSITION = iteration.composition_delay
# queue_factor variants, each with the model's occupancy spread factor (fixed residence) and composition term
# (filling batch) unless named in NO_SPREAD / NO_COMPOSITION
VARIANTS = {"default": ORIGINAL_FACTOR,
            "default without the composition term (before)": ORIGINAL_FACTOR,
            "default without the occupancy spread factor": ORIGINAL_FACTOR,
            "default without either (before both)": ORIGINAL_FACTOR,
            "w = P(full), M/D/c at L_s/N, uncapped (before)": _variant("p_full", "ls", cap=False),
            "w = P(full), M/D/c at L_s/N": _variant("p_full", "ls"),
            "w = P(full), M/D/c at lambda E[s]": _variant("p_full", "share"),
            "w = sqrt P(full), M/D/c at lambda E[s]": _variant("sqrt p_full", "share"),
            "w = lambda E[s], M/D/c at lambda E[s]": _variant("rho", "share"),
            "w = 1 (work share only), M/D/c at lambda E[s]": _variant("one", "share"),
            "composition solved per rate (the exact balance) instead of the model's table": composition_factor,
            "none (the chain's delay)": _factor_none}
NO_SPREAD = {"default without the occupancy spread factor", "default without either (before both)",
             "none (the chain's delay)"}
NO_COMPOSITION = {"default without the composition term (before)", "default without either (before both)",
                  "composition solved per rate (the exact balance) instead of the model's table",
                  "none (the chain's delay)"}


def score(row: dict, s: dict) -> dict:
    """Model predictions at a simulated point (row: set, batch, lengths, rate), with the set's parameters and the
    iteration model's output-length CV (so the stored grid can be scored without the reference files)."""
    batch, geometric, rate = int(row["batch"]), row["lengths"] == "geometric", float(row["rate"])
    cv = math.sqrt(1.0 - 1.0 / s["m"]) if geometric else 0.0
    row.update({f"set_{k}": s[k] for k in ("alpha", "beta", "gamma", "n", "m")}, out_cv=cv)
    for kind in MODELS:
        try:
            m = perf_model(kind, s, batch, cv).analyze(rate)
            row.update({f"{kind}_ttft": m.ttft, f"{kind}_itl": m.itl, f"{kind}_thr": m.throughput})
        except QueueingError:
            row.update({f"{kind}_ttft": math.nan, f"{kind}_itl": math.nan, f"{kind}_thr": math.nan})
    pred = perf_model("iteration", s, batch, cv)
    for name, fn in VARIANTS.items():
        iteration.queue_factor = fn
        iteration.occupancy_spread_factor = _no_spread if name in NO_SPREAD else ORIGINAL_SPREAD
        iteration.composition_delay = _no_composition if name in NO_COMPOSITION else ORIGINAL_COMPOSITION
        try:
            row[f"variant:{name}"] = pred.analyze(rate).ttft
        finally:
            iteration.queue_factor, iteration.occupancy_spread_factor = ORIGINAL_FACTOR, ORIGINAL_SPREAD
            iteration.composition_delay = ORIGINAL_COMPOSITION
    return row


SIM_METRICS = ("ttft", "itl", "thr", "running", "wait")


def run_metrics(s: dict, batch: int, geometric: bool, rate: float, completions: int, seed: int) -> dict:
    """One simulator run's values of SIM_METRICS (ms, req/s, requests)."""
    res = simulate(s, batch, geometric, rate, completions, seed)
    return dict(ttft=res.ttft_mean, itl=res.itl_mean, thr=res.throughput, running=res.running_mean,
                wait=1000.0 * float(np.mean(res.sample.done_wait)))


def simulate_point(s: dict, batch: int, geometric: bool, rate: float, completions: int, seeds) -> dict:
    """Simulator means over independent seeds at one point, with their standard errors (NaN for one seed)."""
    runs = [run_metrics(s, batch, geometric, rate, completions, seed) for seed in seeds]
    out = {}
    for k in SIM_METRICS:
        v = np.array([r[k] for r in runs])
        out[f"sim_{k}"] = float(v.mean())
        out[f"sim_{k}_se"] = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else math.nan
    out["sim_seeds"] = len(runs)
    return out


def _sums(row: dict, k: str) -> tuple[int, float, float]:
    """(count, sum, sum of squares) of the per-seed values behind a stored mean and standard error."""
    n = int(float(row.get("sim_seeds") or 4))
    mean, se = float(row[f"sim_{k}"]), float(row[f"sim_{k}_se"])
    var = se * se * n if n > 1 else 0.0
    return n, n * mean, (n - 1) * var + n * mean * mean


def refine_point(row: dict, s: dict, target: float, cpu_cap: float, step: int = 4, min_seeds: int = 0) -> dict:
    """More seeds at one stored point until two standard errors of the mean TTFT are at most `target` of it or
    the point has used cpu_cap seconds of CPU; seeds in blocks of `step` (stopping is checked per block, which
    limits the bias of stopping when the sample happens to look tight). The same run length per seed, so
    the pooled mean and standard error are those of all seeds."""
    batch, geometric = int(row["batch"]), row["lengths"] == "geometric"
    rate, load = float(row["rate"]), float(row["load"])
    completions = 6000 if load <= 0.5 else 20000
    acc = {k: list(_sums(row, k)) for k in SIM_METRICS}
    seed, t0 = 2 + acc["ttft"][0], time.process_time()

    def stats(k):
        n, s1, s2 = acc[k]
        mean = s1 / n
        return mean, math.sqrt(max(s2 - n * mean * mean, 0.0) / (n - 1) / n)

    while True:
        mean, se = stats("ttft")
        enough = acc["ttft"][0] >= min_seeds and 2.0 * se <= target * mean
        if enough or time.process_time() - t0 >= cpu_cap:
            break
        for _ in range(step):
            vals = run_metrics(s, batch, geometric, rate, completions, seed)
            seed += 1
            for k, v in vals.items():
                acc[k][0] += 1
                acc[k][1] += v
                acc[k][2] += v * v
    out = dict(row)
    for k in SIM_METRICS:
        out[f"sim_{k}"], out[f"sim_{k}_se"] = stats(k)
    out["sim_seeds"] = acc["ttft"][0]
    out["refine_cpu_s"] = time.process_time() - t0
    return out


def refine(path: Path, out: Path, shard: tuple[int, int], target: float, cpu_cap: float, min_seeds: int = 0,
           where=None) -> None:
    """Stored grid rows (path) with unresolved TTFT (or fewer than min_seeds seeds) refined by refine_point, this
    shard's share of them (cheapest first: the fewest seeds the stored standard error says they need), each row
    written to out as it ends; `where` (batch, load) limits the rows."""
    sets = {s["name"]: s for s in parameter_sets()}
    with path.open() as f:
        stored = list(csv.DictReader(f))
    todo = [i for i, r in enumerate(stored)
            if (2.0 * float(r["sim_ttft_se"]) > target * float(r["sim_ttft"])
                or int(float(r.get("sim_seeds") or 4)) < min_seeds)
            and (where is None or (int(r["batch"]), float(r["load"])) == where)]
    todo.sort(key=lambda i: float(stored[i]["sim_ttft_se"]) / float(stored[i]["sim_ttft"]))
    mine = todo[shard[0]::shard[1]]
    keep = ("set", "batch", "lengths", "load", "rate", "capacity", "sim_seeds", "refine_cpu_s",
            *(f"sim_{k}{se}" for k in SIM_METRICS for se in ("", "_se")))
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["row", *keep], extrasaction="ignore")
        w.writeheader()
        for i in mine:
            point = refine_point(stored[i], sets[stored[i]["set"]], target, cpu_cap, min_seeds=min_seeds)
            w.writerow(dict(row=i, **point))
            f.flush()


def merge_refined(path: Path, refined: list[Path], out: Path) -> None:
    """The stored grid with the refined rows' simulator columns replaced (rows matched by index; of two
    refinements of a row, the one with more seeds: they share seed numbers, so they are not pooled)."""
    with path.open() as f:
        stored = list(csv.DictReader(f))
    for r in stored:
        r.setdefault("sim_seeds", "4")
    for p in refined:
        with p.open() as f:
            for r in csv.DictReader(f):
                row = stored[int(r.pop("row"))]
                assert (row["set"], row["batch"], row["lengths"], row["load"]) == \
                    (r["set"], r["batch"], r["lengths"], r["load"])
                if int(float(r["sim_seeds"])) >= int(float(row["sim_seeds"])):
                    row.update({k: v for k, v in r.items() if k.startswith("sim_")})
    fields = list(stored[0])
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(stored)


def run_grid(quick: bool, seeds: int = 1, only: str | None = None, batches=BATCHES, loads=LOADS) -> list[dict]:
    rows = []
    sets = parameter_sets()
    if quick:
        sets = sets[:2]
    if only:
        sets = [s for s in sets if s["name"] in only.split(",")]
    for s in sets:
        for batch in batches:
            for geometric in (False, True):
                pred = perf_model("iteration", s, batch, math.sqrt(1.0 - 1.0 / s["m"]) if geometric else 0.0)
                cap = simulate(s, batch, geometric, 2.0 * pred.max_rate, 4000 if quick else 30000, 1).throughput
                for load in loads:
                    rate = load * cap
                    completions = (2000 if quick else 6000) if load <= 0.5 else (5000 if quick else 20000)
                    sim = simulate_point(s, batch, geometric, rate, completions, range(2, 2 + seeds))
                    rows.append(score(dict(set=s["name"], batch=batch, lengths="geometric" if geometric else "equal",
                                           load=load, rate=rate, capacity=cap, **sim), s))
    return rows


def rescore(path: Path) -> list[dict]:
    """The stored simulator results of a previous run, with the perf models evaluated again (no simulation)."""
    sets = {s["name"]: s for s in parameter_sets()}
    with path.open() as f:
        stored = list(csv.DictReader(f))
    keep = ("set", "batch", "lengths", "load", "rate", "capacity", "sim_seeds",
            *(f"sim_{k}{se}" for k in SIM_METRICS for se in ("", "_se")))
    rows = []
    for r in stored:
        row = {k: r.get(k) or ("4" if k == "sim_seeds" else "nan") for k in keep}
        for k in keep[3:]:
            row[k] = float(row[k] or "nan")
        rows.append(score(row, sets[row["set"]]))
    return rows


def _err(pred, meas):
    return (np.asarray(pred, dtype=float) - np.asarray(meas, dtype=float)) / np.asarray(meas, dtype=float)


def _resolved(se: np.ndarray, sim: np.ndarray) -> np.ndarray:
    """Points whose simulated mean is known to +-5 % (two standard errors); none with one seed (no s.e.)."""
    return np.isfinite(se) & (2.0 * se <= 0.05 * sim)


def _share(flags: np.ndarray) -> str:
    return f"{100 * flags.mean():.0f} %" if flags.size else "n/a"


def grid_tables(rows: list[dict]) -> list[str]:
    lines = ["| model | lengths | TTFT within 10 % | median TTFT error | ITL within 10 % | median ITL error | "
             "throughput within 10 % | worst throughput error |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for kind in MODELS:
        for lengths in ("equal", "geometric", "all"):
            sel = [r for r in rows if lengths == "all" or r["lengths"] == lengths]
            e = {k: _err([r[f"{kind}_{k}"] for r in sel], [r[f"sim_{k}"] for r in sel]) for k in ("ttft", "itl", "thr")}
            within = {k: np.mean(np.abs(v) <= TOLERANCE) for k, v in e.items()}
            worst = e["thr"][np.nanargmax(np.abs(e["thr"]))]
            lines.append(f"| {kind} | {lengths} | {100 * within['ttft']:.0f} % | {100 * np.nanmedian(e['ttft']):+.1f} % | "
                         f"{100 * within['itl']:.0f} % | {100 * np.nanmedian(e['itl']):+.1f} % | "
                         f"{100 * within['thr']:.0f} % | {100 * worst:+.1f} % |")
    lines += ["", "The simulator's own noise: its mean over the seeds has a standard error (s.e.); a point is resolved "
              "when two s.e. are at most 5 % of the mean. `within 10 % + 2 s.e.`: the model is within 10 % of some "
              "value in "
              "the simulator's 95 % interval.", "",
              "| model | metric | within 10 % | resolved points | within 10 % of resolved | within 10 % + 2 s.e. |",
              "|---|---|---:|---:|---:|---:|"]
    for kind in MODELS:
        for k in ("ttft", "itl", "thr"):
            pred = np.array([r[f"{kind}_{k}"] for r in rows], dtype=float)
            sim = np.array([r[f"sim_{k}"] for r in rows], dtype=float)
            se = np.array([r.get(f"sim_{k}_se", math.nan) for r in rows], dtype=float)
            ok = np.abs(pred - sim) <= TOLERANCE * sim
            resolved = _resolved(se, sim)
            se = np.nan_to_num(se)  # one seed: no interval
            lines.append(f"| {kind} | {k} | {100 * ok.mean():.0f} % | {resolved.sum()} of {len(rows)} | "
                         f"{_share(ok[resolved])} | "
                         f"{100 * np.mean(np.abs(pred - sim) <= TOLERANCE * sim + 2.0 * se):.0f} % |")
    lines += ["", "Queueing-delay correction of the iteration model (TTFT within 10 % of the simulator):", "",
              "| variant | equal | geometric | all | resolved points | within 10 % + 2 s.e. | worst TTFT error |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    sim = np.array([r["sim_ttft"] for r in rows], dtype=float)
    se = np.array([r.get("sim_ttft_se", math.nan) for r in rows], dtype=float)
    resolved = _resolved(se, sim)
    se = np.nan_to_num(se)
    for name in VARIANTS:
        cells = []
        for lengths in ("equal", "geometric", "all"):
            sel = [r for r in rows if lengths == "all" or r["lengths"] == lengths]
            e = _err([r[f"variant:{name}"] for r in sel], [r["sim_ttft"] for r in sel])
            cells.append(f"{100 * np.mean(np.abs(e) <= TOLERANCE):.0f} %")
        pred = np.array([r[f"variant:{name}"] for r in rows], dtype=float)
        e = _err(pred, sim)
        cells += [_share(np.abs(e[resolved]) <= TOLERANCE),
                  f"{100 * np.mean(np.abs(pred - sim) <= TOLERANCE * sim + 2.0 * se):.0f} %"]
        lines.append(f"| {name} | {' | '.join(cells)} | {100 * e[np.nanargmax(np.abs(e))]:+.0f} % |")
    return lines


def plot_grid(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 7), sharex=True)
    colours = {"iteration": "tab:green", "new": "tab:blue", "old3": "tab:orange", "v02": "tab:red"}
    for i, lengths in enumerate(("equal", "geometric")):
        sel = [r for r in rows if r["lengths"] == lengths]
        for j, (metric, label) in enumerate((("ttft", "TTFT"), ("itl", "ITL"), ("thr", "throughput"))):
            ax = axes[i, j]
            for k, kind in enumerate(MODELS):
                e = _err([r[f"{kind}_{metric}"] for r in sel], [r[f"sim_{metric}"] for r in sel])
                x = np.array([r["load"] for r in sel]) + (k - 1.5) * 0.012
                ax.scatter(x, np.clip(100 * e, -100, 300), s=8, alpha=0.6, color=colours[kind], label=kind)
            ax.axhspan(-100 * TOLERANCE, 100 * TOLERANCE, color="grey", alpha=0.15)
            ax.set_title(f"{label}, {lengths} output lengths")
            ax.set_ylim(-100, 300 if metric == "ttft" else 100)
            if j == 0:
                ax.set_ylabel("model vs simulator (%)")
            if i == 1:
                ax.set_xlabel("load (fraction of simulated capacity)")
    axes[0, 0].legend(loc="upper left", fontsize=8)
    fig.suptitle("Perf models vs the one-replica simulator (grey: within 10 %; clipped at -100/+300 %)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 parameter sets, shorter runs (a smoke test)")
    ap.add_argument("--seeds", type=int, default=4, help="independent simulator runs per point (default 4)")
    ap.add_argument("--sets", help="comma-separated parameter-set names to simulate (default: all)")
    ap.add_argument("--batches", type=lambda v: tuple(int(x) for x in v.split(",")), default=BATCHES,
                    help="comma-separated max batch sizes (default 8,32,128)")
    ap.add_argument("--loads", type=lambda v: tuple(float(x) for x in v.split(",")), default=LOADS,
                    help="comma-separated loads, fractions of the simulated capacity (default 0.1,...,0.9)")
    ap.add_argument("--rescore", type=Path, nargs="+", help="evaluate the perf models again on previous runs' "
                    "perf-model-grid.csv (no simulation)")
    ap.add_argument("--refine", type=Path, help="a stored perf-model-grid.csv: add seeds at its points whose TTFT "
                    "is not resolved (adaptive, --target, --cpu-cap), --shard's share, rows written to --refined")
    ap.add_argument("--target", type=float, default=0.05, help="two standard errors over the mean to reach (0.05)")
    ap.add_argument("--cpu-cap", type=float, default=40.0, help="CPU seconds per refined point (default 40)")
    ap.add_argument("--min-seeds", type=int, default=0, help="refine also points with fewer seeds than this")
    ap.add_argument("--where", help="batch,load: refine only the points at this max batch and load")
    ap.add_argument("--shard", default="0/1", help="i/k: refine every k-th unresolved point from the i-th")
    ap.add_argument("--refined", type=Path, nargs="+", help="output of --refine; with --merge: the files to merge")
    ap.add_argument("--merge", type=Path, help="a stored perf-model-grid.csv: write it with the --refined rows "
                    "replaced to --merge-out (then --rescore it)")
    ap.add_argument("--merge-out", type=Path)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "perf-model"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.refine:
        i, k = (int(x) for x in args.shard.split("/"))
        where = None if not args.where else (int(args.where.split(",")[0]), float(args.where.split(",")[1]))
        refine(args.refine, args.refined[0], (i, k), args.target, args.cpu_cap, args.min_seeds, where)
        return 0
    if args.merge:
        merge_refined(args.merge, args.refined, args.merge_out)
        return 0
    t0 = time.process_time()
    if args.rescore:
        rows = [r for path in args.rescore for r in rescore(path)]
    else:
        rows = run_grid(args.quick, args.seeds, args.sets, args.batches, args.loads)
    t_grid = time.process_time() - t0
    write_details(rows, out / "perf-model-grid.csv")
    plot_grid(rows, out / "perf-model-vs-sim.png")
    t1 = time.process_time()
    real, details = run_real()
    t_real = time.process_time() - t1
    write_details(details, out / "perf-model-real.csv")
    print("## Perf model vs measurements\n")
    print(f"`python -m benchmarks.perf_model` ({len(rows)} simulator points, {t_grid:.0f} s CPU; real-data fits "
          f"{t_real:.0f} s CPU; a shared 2-core machine). Errors are (model - measured)/measured.\n")
    print("### Against the one-replica simulator\n")
    print("\n".join(grid_tables(rows)))
    print("\n![perf models vs simulator](results/perf-model/perf-model-vs-sim.png)\n")
    print("### Real vLLM runs: fit on half of the cycles, predict the other half\n")
    print("\n".join(real))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
