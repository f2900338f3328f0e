"""Why the iteration model misses TTFT at small batches: the simulator's iteration time by batch occupancy.

Run from the repository root:
    python -m benchmarks.perf_model_occupancy ROW [ROW ...] [--seeds 40] [--grid perf-model-grid.csv]

For stored grid points (row numbers of the grid CSV), simulates --seeds fresh seeds (from 1000, the same runs as
`perf_model.simulate`) and measures per number of decoding requests k the mean iteration time against the
chain's mean field alpha + k delta, and the time-average occupancy. Then solves the model's birth-death chain
twice: with its own mu(k) = k/(I alpha + k W), and with mu(k) from the measured iteration times
(I alpha + k W scaled by the measured cost share); both go through the model's queueing factor and boundary wait.
If the second matches the simulator's P(batch full), wait and TTFT where the first does not, the error is in the
chain's per-state service rate (the composition of a full batch), not in the queueing factor.

A third solve takes the per-state iteration time from `composition_ratio`, a prediction without simulation (an
age balance per occupancy state, for memoryless output lengths), to show how far the mechanism is predictable.
"""

from __future__ import annotations

import argparse
import copy
import csv
import math
import time
from pathlib import Path

import numpy as np

from inferno_mip.queueing import iteration
from inferno_mip.queueing.chain import BirthDeathChain
from inferno_mip.sim import LengthDist
from inferno_mip.sim.single import run_replica

from .perf_model import QUEUE, ROOT, parameter_sets, perf_model, run_setup

GRID = ROOT / "benchmarks" / "results" / "perf-model" / "perf-model-grid.csv"


def replica_run(s: dict, batch: int, geometric: bool, rate: float, completions: int, seed: int):
    """(replica advanced to the end, warmup s): the run `perf_model.simulate` makes, with the replica kept for its
    iteration log."""
    cfg, out, warmup, duration = run_setup(s, batch, geometric, rate, completions)
    return run_replica(cfg, rate, LengthDist.fixed(s["n"]), out, duration, seed), warmup


def measure(s: dict, batch: int, geometric: bool, rate: float, completions: int, seeds) -> dict:
    """Pooled over seeds: iteration time (ms) summed and counted per decoding-request count k = 0..N, the
    time-average P(k in system) (k = 0..N+Q), and per seed the mean queue wait and TTFT (ms) of the window's
    arrivals."""
    iter_ms, iters = np.zeros(batch + 1), np.zeros(batch + 1)
    occupancy = np.zeros(batch + QUEUE + 1)
    waits, ttfts = [], []
    for seed in seeds:
        replica, warmup = replica_run(s, batch, geometric, rate, completions, seed)
        runs = replica.log.table("runs")
        runs = runs[runs[:, 0] >= warmup]
        _, a, b, c, d = runs.T
        np.add.at(iter_ms, d.astype(np.int64), 1000.0 * (c * a + b * c * (c + 1) / 2))
        np.add.at(iters, d.astype(np.int64), c)
        done = replica.log.table("done")
        arrival, admitted, first, finish = done[:, 0], done[:, 1], done[:, 2], done[:, 3]
        events = np.concatenate([np.c_[arrival, np.ones_like(arrival)], np.c_[finish, -np.ones_like(finish)]])
        events = events[np.argsort(events[:, 0], kind="stable")]
        k = np.cumsum(events[:, 1]).astype(np.int64)
        dt = np.diff(events[:, 0], append=events[-1, 0])
        window = events[:, 0] >= warmup
        occupancy += np.bincount(k[window], weights=dt[window], minlength=occupancy.size)[:occupancy.size]
        mine = arrival >= warmup
        waits.append(1000.0 * float(np.mean(admitted[mine] - arrival[mine])))
        ttfts.append(1000.0 * float(np.mean(first[mine] - arrival[mine])))
    return dict(iter_ms=iter_ms, iters=iters, occupancy=occupancy / occupancy.sum(), waits=np.array(waits),
                ttfts=np.array(ttfts))


def composition_ratio(s: dict, batch: int, rate: float, var_age: float, q: int = QUEUE,
                      sweeps: int = 400) -> np.ndarray:
    """Predicted mean iteration time with k requests decoding over the mean field alpha + k (c0 + gamma m), k = 0..N,
    for memoryless output lengths (a departing request is a random resident), at `rate` req/s.

    In iteration time, arrivals join at rate lambda T per iteration, T = alpha + k c0 + gamma X (X: the sum of the
    residents' ages, c0 = beta + gamma n) and each resident leaves with probability 1/m per iteration. Balancing
    the expected age sum a_k = E[X | k] per state (ageing, arrivals carrying X in, departures taking a random
    resident out) gives the mean field a_k = k m exactly at first order; the bias is second order: arrivals come
    in proportion to T, so the age sum they carry from state k - 1 is larger by gamma Var(X | k - 1)/T(k - 1), and
    those leaving state k take gamma Var(X | k) more. Var(X | k) = k var_age (independent ages). States N..N+Q
    (full batch, queue) are one block, where a departure lets a new request in at age 0.
    """
    alpha, beta, gamma, n, m = (s[x] for x in ("alpha", "beta", "gamma", "n", "m"))
    lam, c0 = rate / 1000.0, beta + gamma * n
    k = np.arange(batch + 1, dtype=np.float64)
    var = k * var_age
    a = k * m
    for _ in range(sweeps):
        t = alpha + k * c0 + gamma * a
        mat, rhs = np.zeros((batch + 1, batch + 1)), np.zeros(batch + 1)
        mat[0, 0] = 1.0
        for j in range(1, batch):
            mat[j, j - 1:j + 2] = -j / m, j / m + lam * t[j], -lam * t[j] * j / (j + 1)
            rhs[j] = j + (j / m) * gamma * var[j - 1] / t[j - 1] - lam * gamma * var[j]
        r = lam * t[batch] * m / batch
        g = float(np.sum(r ** np.arange(q + 1)))  # P(block) / P(exactly N), in iteration time
        mat[batch, batch - 1:] = -batch, batch + g - 1.0
        rhs[batch] = batch * g * m + batch * gamma * var[batch - 1] / t[batch - 1]
        new = np.linalg.solve(mat, rhs)
        done = np.max(np.abs(new - a)) <= 1e-9 * (1.0 + np.max(np.abs(a)))
        a = new if done else 0.5 * (a + new)
        if done:
            break
    return (alpha + k * c0 + gamma * a) / (alpha + k * (c0 + gamma * m))


def chain_metrics(service, log_mu: np.ndarray, rate: float) -> dict:
    """P(full), wait and TTFT (ms) of the iteration model with the chain's log mu(1..N) replaced; also the
    chain's P(full) scaled by occupancy_spread_factor, its occupancy's variance-to-mean ratio, and the wait
    without that factor (the model before it)."""
    n = service.max_batch
    st = BirthDeathChain(log_mu, n, QUEUE).solve(np.array([rate / 1000.0]))
    adj = service.row_adjust(service, st, n)
    _, _, ttft = service.row_latencies(service, adj, n)
    plain = copy.copy(service)
    plain.spread_on = False
    r = st.lam[0] / math.exp(log_mu[n - 1])  # the block N..N+Q is geometric with ratio r
    block = r ** np.arange(QUEUE + 1)
    dist = np.concatenate([st.p_head[0], float(st.p_block[0]) * block / block.sum()])
    k = np.arange(dist.size)
    mean = float(dist @ k)
    return dict(p_full=float(st.p_block[0]), wait=float(adj.wait_time[0]), ttft=float(ttft[0]),
                spread_p_full=float(st.p_block[0] * iteration.occupancy_spread_factor(service, st)[0]),
                vmr=float(dist @ (k - mean) ** 2) / mean, plain_wait=float(plain.row_adjust(plain, st, n).wait_time[0]))


def check_point(row: dict, s: dict, seeds) -> dict:
    batch, geometric, rate = int(row["batch"]), row["lengths"] == "geometric", float(row["rate"])
    completions = 6000 if float(row["load"]) <= 0.5 else 20000
    cv = math.sqrt(1.0 - 1.0 / s["m"]) if geometric else 0.0
    service = perf_model("iteration", s, batch, cv).service
    got = measure(s, batch, geometric, rate, completions, seeds)
    k = np.arange(batch + 1, dtype=np.float64)
    mean_field = s["alpha"] + k * float(service.delta[-1])
    ratio = np.where(got["iters"] > 0, got["iter_ms"] / np.maximum(got["iters"], 1.0) / mean_field, 1.0)
    # the measured cost share per request, alpha unchanged: tau(k) = I alpha + k W (ratio T(k) - alpha)/(k delta)
    iters = float(service.nc[-1]) + s["m"] - 1.0
    scale = (ratio[1:] * mean_field[1:] - s["alpha"]) / (k[1:] * float(service.delta[-1]))
    tau = iters * s["alpha"] + k[1:] * float(service.w_tot[-1]) * scale
    own = chain_metrics(service, service.log_mu, rate)
    measured = chain_metrics(service, np.log(k[1:] / tau), rate)
    predicted = np.ones(batch + 1)
    if geometric:  # the age balance assumes memoryless lengths; equal lengths: measured ratio 1.00 (RESULTS.md)
        var_age = iteration.decode_cost_variance(s["gamma"], s["n"], s["m"], 0.0, cv) / s["gamma"] ** 2
        predicted = composition_ratio(s, batch, rate, var_age)
    theory = chain_metrics(service, service.log_mu - np.log(predicted[1:]), rate)
    se = lambda v: 2.0 * float(v.std(ddof=1)) / math.sqrt(v.size)  # noqa: E731
    occ = got["occupancy"]
    k_sim = np.arange(occ.size)
    mean_sim = float(occ @ k_sim)
    # the occupancy's variance with a fixed residence: the chain's x 1/(1 - (theta - 1) nu), nu = lambda E[W]
    # (the change weighted by 1 - CV^2 as in the model: spread_k)
    nu = rate / 1000.0 * service.ew
    return dict(set=row["set"], batch=batch, lengths=row["lengths"], load=float(row["load"]), seeds=len(seeds),
                ratio_full=float(ratio[batch]), predicted_full=float(predicted[batch]),
                sim_p_full=float(got["occupancy"][batch:].sum()), chain_p_full=own["p_full"],
                measured_p_full=measured["p_full"], predicted_p_full=theory["p_full"],
                sim_wait=float(got["waits"].mean()), sim_wait_2se=se(got["waits"]),
                model_wait=own["wait"], measured_wait=measured["wait"], sim_ttft=float(got["ttfts"].mean()),
                sim_vmr=float(occ @ (k_sim - mean_sim) ** 2) / mean_sim, chain_vmr=own["vmr"],
                fixed_vmr=own["vmr"] / (1.0 - service.spread_k * nu), spread_p_full=own["spread_p_full"],
                plain_wait=own["plain_wait"],
                sim_ttft_2se=se(got["ttfts"]), model_ttft=own["ttft"], measured_ttft=measured["ttft"],
                predicted_ttft=theory["ttft"])


def table(rows: list[dict]) -> list[str]:
    lines = ["| point | seeds | T(N) / mean field, measured / predicted | P(full) sim / chain / measured / predicted | "
             "wait sim (2 s.e.) / model / measured, ms | TTFT sim (2 s.e.) / model / measured / predicted, ms |",
             "|---|---:|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['set']} M = {r['batch']} {r['lengths']} {100 * r['load']:.0f} % | {r['seeds']} | "
                     f"{r['ratio_full']:.2f} / {r['predicted_full']:.2f} | {r['sim_p_full']:.4f} / "
                     f"{r['chain_p_full']:.4f} / {r['measured_p_full']:.4f} / {r['predicted_p_full']:.4f} | "
                     f"{r['sim_wait']:,.0f} ({r['sim_wait_2se']:,.0f}) / {r['model_wait']:,.0f} / "
                     f"{r['measured_wait']:,.0f} | {r['sim_ttft']:,.0f} ({r['sim_ttft_2se']:,.0f}) / "
                     f"{r['model_ttft']:,.0f} / {r['measured_ttft']:,.0f} / {r['predicted_ttft']:,.0f} |")
    return lines


def spread_table(rows: list[dict]) -> list[str]:
    """The fixed-residence check (occupancy_spread_factor): occupancy variance-to-mean ratio, P(full) and wait."""
    lines = ["| point | seeds | occupancy var/mean sim / chain / fixed residence | P(full) sim / chain / x spread factor | "
             "wait sim (2 s.e.) / model without / with the spread factor, ms |", "|---|---:|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['set']} M = {r['batch']} {r['lengths']} {100 * r['load']:.0f} % | {r['seeds']} | "
                     f"{r['sim_vmr']:.2f} / {r['chain_vmr']:.2f} / {r['fixed_vmr']:.2f} | {r['sim_p_full']:.4f} / "
                     f"{r['chain_p_full']:.4f} / {r['spread_p_full']:.4f} | {r['sim_wait']:,.1f} "
                     f"({r['sim_wait_2se']:,.1f}) / {r['plain_wait']:,.1f} / {r['model_wait']:,.1f} |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rows", type=int, nargs="+", help="row numbers of the grid CSV (0-based, header excluded)")
    ap.add_argument("--seeds", type=int, default=40)
    ap.add_argument("--grid", type=Path, default=GRID)
    args = ap.parse_args(argv)
    sets = {s["name"]: s for s in parameter_sets()}
    with args.grid.open() as f:
        stored = list(csv.DictReader(f))
    t0 = time.process_time()
    rows = [check_point(stored[i], sets[stored[i]["set"]], range(1000, 1000 + args.seeds)) for i in args.rows]
    print("\n".join(table(rows)))
    print()
    print("\n".join(spread_table(rows)))
    print(f"\n({len(rows)} points, {time.process_time() - t0:.0f} s CPU)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
