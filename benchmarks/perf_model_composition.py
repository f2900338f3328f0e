"""The composition of a filling batch, for all rates at once, and the queueing delay it implies (a variant).

With memoryless (geometric) output lengths and context reads that grow with a request's age, a batch holding
old, long requests iterates slowly, and arrivals come per iteration in proportion to its length (lambda T), so a
full small batch iterates slower than the chain's mean field alpha + k delta (benchmarks/perf_model_occupancy.py
measures it and gives the age balance, composition_ratio, one rate at a time). composition_log_ratio solves the
same balance for many rates in one tridiagonal system per sweep; tilted_wait is the chain's delay with mu(k)
slowed by it.

composition_factor is the queueing-delay variant scored by `perf_model --rescore`: the model's factor already
interpolates linearly in rho = lambda E[s] between a light-traffic end (the residence's c_s^2) and a heavy-traffic
end (the work shares' c_s^2, the batch always full with the stationary composition: the mean field). The variant
takes the light-traffic end's delay from the composition-corrected chain instead:
W = W_chain f + (1 - rho) (W_c - W_chain) f_i. Nothing is fitted. Solved per rate it made sizing 7-23x slower than
`new` with varying lengths (RESULTS.md); the model carries its closed form instead (iteration.composition_term,
composition_delay), and this module is the reference it is checked against (the model's own term is switched off
wherever this one is scored, see without_model_term).

Paid once per model by sweeps (log_ratio_table: log(W_c/W_chain) at a few utilisations, interpolated by
tabulated_factor) it was still too slow: `python -m benchmarks.perf_model_composition` measures how many table
points the scores need and what one point costs against the sizing itself (RESULTS.md).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np

from inferno_mip.queueing import iteration
from inferno_mip.queueing.chain import _geom_tail

_MODEL_FACTOR = iteration.queue_factor  # the model's own (benchmarks swap iteration.queue_factor for variants)


@contextmanager
def without_model_term():
    """The iteration model without its own composition term (so that this module's is not counted twice)."""
    own = iteration.composition_delay
    iteration.composition_delay = lambda p, st: 0.0
    try:
        yield
    finally:
        iteration.composition_delay = own

SWEEPS = 8  # damped fixed-point sweeps: converged to < 1e-4 in log T on the grid sets, loads 0.1-1.2
DAMPING = 0.7  # weight of the new sweep (the first sweep is undamped)


def composition_log_ratio(lam, n, q, alpha, c0, gamma, m, var_age, width: int, sweeps: int = SWEEPS) -> np.ndarray:
    """log(T(k)/T_mf(k)), k = 1..width, per row (R, width); zero from column n on (k > n).

    Rows: arrival rate lam (req/ms), max batch n (1 <= n <= width), max queue q, alpha (ms), c0 = beta + gamma n_in
    (ms per resident per iteration), gamma (ms per context token), m (mean output tokens), var_age (Var of one
    resident's age in tokens^2, 0: no correction). All (R,) arrays.
    """
    from scipy.linalg import lapack

    lam, n, q = (np.asarray(v, dtype=np.float64) for v in (lam, n, q))
    alpha, c0, gamma, m, var_age = (np.asarray(v, dtype=np.float64) for v in (alpha, c0, gamma, m, var_age))
    rows, size = lam.shape[0], width + 1
    k = np.arange(size, dtype=np.float64)[None, :]
    nn = n[:, None]
    t_mf = alpha[:, None] + k * (c0 + gamma * m)[:, None]
    inner = (k >= 1.0) & (k < nn)
    at_n = k == nn
    lam_c, m_c, g_c, v_c = lam[:, None], m[:, None], gamma[:, None], (gamma * var_age)[:, None]
    lower = np.where(inner, -k / m_c, 0.0)
    km1 = np.maximum(k - 1.0, 0.0)
    e = np.zeros((rows, size))
    for sweep in range(sweeps):
        t = t_mf + g_c * e
        t_prev = np.empty_like(t)
        t_prev[:, 0] = t[:, 0]
        t_prev[:, 1:] = t[:, :-1]
        lt = lam_c * t
        # rows 1..n-1: -(k/m) e_{k-1} + (k/m + lam t_k) e_k - lam t_k k/(k+1) e_{k+1}
        #            = gamma v (k(k-1)/(m t_{k-1}) - lam k)
        diag = np.where(inner, k / m_c + lt, 1.0)
        upper = np.where(inner, -lt * k / (k + 1.0), 0.0)
        rhs = np.where(inner, v_c * (k * km1 / (m_c * t_prev) - lam_c * k), 0.0)
        # row n, divided by g = sum_{i<=q} r^i (r = lam T(n) m/n, the block's ratio in iteration time):
        # -(n/g) e_{n-1} + (1 + (n - 1)/g) e_n = (n/g) gamma v (n - 1)/T(n - 1)
        t_n = t[np.arange(rows), n.astype(np.int64)]
        log_g, _ = _geom_tail(np.log(lam * t_n * m / n), q, q + 1.0)
        inv_g = np.exp(-log_g)[:, None]
        diag = np.where(at_n, 1.0 + (nn - 1.0) * inv_g, diag)
        low = np.where(at_n, -nn * inv_g, lower)
        rhs = np.where(at_n, inv_g * nn * v_c * km1 / t_prev, rhs)
        # one tridiagonal system of all rows (decoupled: row k = 0 has no lower, row k = n no upper entry)
        _, _, _, new, info = lapack.dgtsv(low.ravel()[1:], diag.ravel(), upper.ravel()[:-1], rhs.ravel(),
                                          overwrite_d=1, overwrite_b=1)
        if info != 0:  # pragma: no cover - the system is diagonally dominant
            raise ArithmeticError(f"composition_log_ratio: tridiagonal solve failed (info={info})")
        new = new.reshape(rows, size)
        e = new if sweep == 0 else DAMPING * new + (1.0 - DAMPING) * e
    ratio = 1.0 + g_c * e / t_mf
    return np.where(k[:, 1:] <= nn, np.log(np.maximum(ratio[:, 1:], 1e-12)), 0.0)


def tilted_wait(st, log_ratio: np.ndarray, n, q, log_x) -> np.ndarray:
    """The chain's queueing delay Lq/X (same unit as st) with mu(k) divided by exp(log_ratio[:, k-1]), k = 1..n.

    st: the chain's statistics with mu(k) (p_head, p_block, lam); log_x = log(lam/mu(n)) per row, q per row. The
    head weights p_k become p_k prod_{j<=k} ratio_j; the block N..N+Q keeps its shape with ratio x + log ratio_n.
    """
    n = np.asarray(n, dtype=np.int64)
    q = np.asarray(q, dtype=np.float64)
    rows = st.lam.shape[0]
    width = st.p_head.shape[1]
    cum = np.cumsum(log_ratio[:, :width], axis=1)  # sum_{j<=k} log ratio_j at column k - 1
    lift = np.zeros((rows, width))
    lift[:, 1:] = cum[:, :width - 1]
    lift_n = cum[np.arange(rows), n - 1]
    log_x2 = log_x + log_ratio[np.arange(rows), n - 1]
    lz, _ = _geom_tail(log_x, q, q + 1.0)
    lz2, gm2 = _geom_tail(log_x2, q, q + 1.0)
    log_block = lift_n + lz2 - lz  # block weight over the chain's p_block
    top = np.maximum(np.max(np.where(st.p_head > 0.0, lift, -np.inf), axis=1), log_block)
    top = np.where(np.isfinite(top), top, 0.0)
    head = np.einsum("ij,ij->i", st.p_head, np.exp(lift - top[:, None]))
    block = st.p_block * np.exp(log_block - top)
    total = head + block
    p_block = block / total
    p_lost = st.p_block * np.exp(lift_n + q * log_x2 - lz - top) / total  # p_K
    return p_block * gm2 / np.maximum(st.lam * (1.0 - p_lost), 1e-300)


def composition_factor(p, batch, st) -> np.ndarray:
    """The iteration model's queueing factor with the composition's light-traffic delay added (module docstring),
    as a factor on the chain's delay; p: an IterationModel (the single-model path of `analyze`), Q = 128 (the
    grid's). Equal lengths (out_cv = 0): the model's factor."""
    from .perf_model import QUEUE

    base = _MODEL_FACTOR(p, batch, st)
    if p.out_cv <= 0.0 or p.gamma <= 0.0 or st.p_head is None:
        return base
    rows = st.lam.shape[0]
    ones = np.ones(rows)
    # the balance is derived for memoryless lengths (cv = 1); taken in proportion to cv^2, none for equal lengths
    # (measured full-batch ratio 1.00 there)
    var_age = p.out_cv ** 2 * iteration.decode_cost_variance(1.0, p.n, p.m, 0.0, p.out_cv)
    log_ratio = composition_log_ratio(st.lam, batch * ones, QUEUE * ones, p.alpha * ones,
                                      (p.beta + p.gamma * p.n) * ones, p.gamma * ones, p.m * ones, var_age * ones,
                                      batch)
    log_x = np.log(st.lam) - p.log_mu[batch - 1]
    w_c = tilted_wait(st, log_ratio, np.full(rows, batch), QUEUE * ones, log_x)
    rho = np.minimum(st.lam * p.e_s, 1.0)
    extra = (1.0 - rho) * np.maximum(w_c - st.wait_time, 0.0) * light_factor(p, rho)
    return base + np.where(st.wait_time > 0.0, extra / np.maximum(st.wait_time, 1e-300), 0.0)


def light_factor(p, rho) -> np.ndarray:
    """f_i: the model's factor at the light-traffic end (the residence's c_s^2) at utilisation rho (M/D/c side
    as queue_factor)."""
    return iteration.variability_factor(max(p.scv_i, 0.0), iteration.mdc_ratio(p.slope, rho))


def log_ratio_table(model, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(rho, log(W_c/W_chain)) of composition_factor at `size` utilisations rho = lambda E[s] = j/(size - 1) (the
    first at 1e-3) of a PerfModel with output CV > 0, at its max batch. Where the chain's delay underflows
    (W = 0, a large batch at light load) the next utilisation's value is taken."""
    p = model.service
    rho = np.linspace(0.0, 1.0, size)
    rho[0] = 1e-3
    st = model.chain.solve(rho / p.e_s)
    added = composition_factor(p, model.max_batch, st) - _MODEL_FACTOR(p, model.max_batch, st)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ratio = np.log1p(added / ((1.0 - rho) * light_factor(p, rho)))
    log_ratio[~np.isfinite(log_ratio)] = np.nan
    for j in range(size - 2, -1, -1):
        if np.isnan(log_ratio[j]):
            log_ratio[j] = log_ratio[j + 1]
    return rho, np.nan_to_num(log_ratio)


def tabulated_factor(rho_grid: np.ndarray, table: np.ndarray):
    """composition_factor with log(W_c/W_chain) interpolated (linearly in rho) from log_ratio_table: a queueing
    factor for iteration.queue_factor."""
    def factor(p, batch, st):
        rho = np.minimum(st.lam * p.e_s, 1.0)
        added = (1.0 - rho) * light_factor(p, rho) * np.expm1(np.interp(rho, rho_grid, table))
        return _MODEL_FACTOR(p, batch, st) + added
    return factor


# --------------------------------------------------------------------------- is a table fast enough?
def interpolation_scores(path, sizes) -> list[str]:
    """TTFT within 10 % of the simulator at the geometric-length points of a stored grid, with the exact
    composition (composition_factor) and with log_ratio_table of each size interpolated, and the largest TTFT
    difference between the two."""
    import csv
    import math

    from . import perf_model as pm

    sets = {s["name"]: s for s in pm.parameter_sets()}
    with open(path) as f:
        rows = [r for r in csv.DictReader(f) if r["lengths"] == "geometric"]
    models = []
    for r in rows:
        s = sets[r["set"]]
        models.append((pm.perf_model("iteration", s, int(r["batch"]), math.sqrt(1.0 - 1.0 / s["m"])),
                       float(r["rate"]), float(r["sim_ttft"])))
    exact = []
    iteration.queue_factor = composition_factor
    try:
        exact = [model.analyze(rate).ttft for model, rate, _ in models]
    finally:
        iteration.queue_factor = _MODEL_FACTOR
    hits = sum(abs(t / sim - 1.0) <= 0.10 for t, (_, _, sim) in zip(exact, models))
    out = [f"| {Path(path).name}, {len(rows)} geometric points | exact per rate | {hits} | 0 |"]
    for size in sizes:
        got = []
        for model, rate, _ in models:
            iteration.queue_factor = tabulated_factor(*log_ratio_table(model, size))
            try:
                got.append(model.analyze(rate).ttft)
            finally:
                iteration.queue_factor = _MODEL_FACTOR
        hits = sum(abs(t / sim - 1.0) <= 0.10 for t, (_, _, sim) in zip(got, models))
        worst = max(abs(g / e - 1.0) for g, e in zip(got, exact))
        out.append(f"| | table of {size} utilisations | {hits} | {100 * worst:.1f} % |")
    return out


def point_costs(repeats: int) -> list[str]:
    """CPU time of sizing (new, iteration; benchmarks.perf_model_speed's workloads, output CV 1) against one
    table point per model: one sweep of composition_log_ratio, and the chain with tilted_wait."""
    import statistics
    import time

    from inferno_mip.queueing.chain import solve_rows
    from inferno_mip.queueing.sizing import size_models

    from .perf_model_speed import _models
    from .sizing import BATCHES, candidates

    def cpu(fn) -> float:
        t0 = time.process_time()
        fn()
        return time.process_time() - t0

    out = []
    for big_n in BATCHES:
        cands = candidates(big_n, 256, seed=0)
        targets = [(c["ttft"], c["itl"], 0.0) for c in cands]
        times = {"new": [], "iteration": [], "sweep": [], "chain": []}
        for r in range(repeats):
            for kind in ("new", "iteration"):
                models = _models(cands, kind, bump=1e-9 * (r + 1), out_cv=1.0)
                times[kind].append(cpu(lambda: size_models(models, targets)))
            sv = [m.service for m in models]
            col = lambda name: np.array([float(getattr(x, name)) for x in sv])  # noqa: E731
            n = np.array([x.max_batch for x in sv], dtype=np.int64)
            q = np.array([float(m.max_queue) for m in models])
            lam = 0.7 / col("e_s")
            var_age = np.array([iteration.decode_cost_variance(1.0, x.n, x.m, 0.0, 1.0) for x in sv])
            args = (lam, n, q, col("alpha"), col("beta") + col("gamma") * col("n"), col("gamma"), col("m"),
                    var_age, big_n)
            times["sweep"].append(cpu(lambda: composition_log_ratio(*args, sweeps=1)))
            log_ratio = composition_log_ratio(*args)
            log_mu = np.array([x.log_mu[:big_n] for x in sv])
            cum = np.zeros((len(sv), big_n + 1))
            cum[:, 1:] = np.cumsum(log_mu, axis=1)

            def chain():
                st = solve_rows(cum, log_mu, lam, n, q)
                tilted_wait(st, log_ratio, n, q, np.log(lam) - log_mu[:, -1])
            times["chain"].append(cpu(chain))
        med = {k: statistics.median(v) for k, v in times.items()}
        ratio = lambda g, s: (med["iteration"] + g * (s * med["sweep"] + med["chain"])) / med["new"]  # noqa: E731
        out.append(f"| N = {big_n} | {1e3 * med['new']:.1f} | {med['iteration'] / med['new']:.2f} | "
                   f"{1e3 * med['sweep']:.2f} | {1e3 * med['chain']:.2f} | {ratio(1, 1):.2f} | {ratio(5, 1):.2f} | "
                   f"{ratio(9, 8):.2f} | {(med['new'] + 5 * (med['sweep'] + med['chain'])) / med['new']:.2f} |")
    return out


def main(argv=None) -> int:
    import argparse

    from .perf_model import ROOT

    grids = ROOT / "benchmarks" / "results" / "perf-model"
    ap = argparse.ArgumentParser(description="The composition tabulated once per model: accuracy and cost")
    ap.add_argument("--grids", type=Path, nargs="+",
                    default=[grids / "perf-model-grid.csv", grids / "perf-model-grid-heldout.csv"])
    ap.add_argument("--sizes", type=lambda v: [int(x) for x in v.split(",")], default=[3, 5, 9, 17, 33])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--no-cost", action="store_true")
    args = ap.parse_args(argv)
    with without_model_term():  # the model before its closed form: what these measurements compared against
        return _report(args)


def _report(args) -> int:
    print("| stored grid | composition | TTFT within 10 % | largest TTFT difference to the exact solve |")
    print("|---|---|---:|---:|")
    for path in args.grids:
        print("\n".join(interpolation_scores(path, args.sizes)))
    if args.no_cost:
        return 0
    print("\n| workload (256 candidates, output CV 1) | new (CPU ms) | iteration/new | one sweep per point (ms) | "
          "chain + tilted wait per point (ms) | 1 point, 1 sweep | 5 points, 1 sweep | 9 points, 8 sweeps | "
          "5 points, 1 sweep, on new's own time |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(point_costs(args.repeats)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

