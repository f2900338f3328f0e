"""The "iteration" perf model: what a continuous-batching (vLLM-style) server measures.

Same per-iteration cost as queue-analysis v0.7 (iteration time = alpha + beta * tokens computed + gamma *
context tokens read), same birth-death chain, four corrections measured against the request-level simulator:

1. Iteration-boundary wait: a request that arrives while an iteration runs is admitted when that iteration
   ends. Arriving to k >= 1 in service it waits the residual of an iteration of mean length T(k) = alpha +
   k delta; prefills joining an iteration (about Poisson(lambda T) of them) and the requests' differing
   contexts make its length vary, so the mean residual is T(k)/2 + lambda E[w_p^2]/2 + k Var(cost)/(2 T(k)),
   and the arrival's prefill iteration, with the same long contexts, is longer by k Var(cost)/T(k). An arrival
   to an idle server starts at once; one to a full batch also waits in the queue (the chain's wait).
2. Work from the length distribution, not at the mean: decode work grows with the square of the output length,
   so the mean work per request uses E[m^2] = m^2 (1 + cv^2) (output and input lengths independent).
3. Service variability: the chain's departures from a full batch are memoryless; the queueing delay is scaled
   by (1 + c_s^2)/2 (Allen-Cunneen, Poisson arrivals; below c_s^2 = 1 interpolated towards Cosmetatos' M/D/c
   delay), c_s^2 between the squared CV of a request's residence (c + m - 1 iterations) and, as the full
   batch's utilisation grows, that of its share of a full batch's time, s = (c + m - 1) alpha/N + W
   (queue_factor).
   Equal lengths about halve the chain's wait near saturation; long-tailed ones raise it, since the
   context-read work grows with the square of the length. A residence of a fixed number of iterations also
   changes how often the batch fills: the occupancy is then a self-exciting count whose spread depends on when
   in its residence a request does its work (late context reads: less than the chain's; an early long
   prefill: more), and P(full) is scaled accordingly (occupancy_spread_factor, output CV < 1). With long-tailed
   lengths a small batch fills most often when its contexts are long, so a full batch iterates slower than the
   mean field; the light-traffic end of the delay is that of the chain slowed by the batch's composition
   (composition_term: a closed form per model, tabulated in the utilisation; composition_delay, output CV > 0;
   with it, the full batch's queue_factor and the term come from one table, full_batch_factor).
4. Metrics as vLLM reports them: the first token is emitted by the prefill iteration (c + m - 1 iterations per
   request); TTFT = wait + boundary wait + prefill at admission (batch min(k + 1, N)); ITL = mean decode
   interval = (S - mean-field prefill)/(m - 1), S the chain's mean service time.
"""

from __future__ import annotations

import math
import threading
from types import SimpleNamespace

import numpy as np

from .chain import ChainStats
from .chunks import chunk_counts
from .models import ServiceModel, _at, _head_dot, new_primitives, pad_rows

__all__ = ["IterationModel", "request_work"]


def request_work(beta, gamma, n, m, c, in_cv=0.0, out_cv=0.0):
    """Mean prefill work w_p(c), mean total work W(c) and E[w_p^2] per request (ms), vLLM token accounting.

    Prefill in c chunks reads sum_k k n/c context tokens; the prefill iteration emits token 1, then decode
    iteration j = 1..m-1 computes one token reading n + j context tokens. Lengths are independent with
    means n, m and coefficients of variation in_cv, out_cv; E[d(d+1)] of d = m - 1 uses E[m^2].
    """
    w_p = (beta + gamma * (c + 1) / 2.0) * n
    d = m - 1.0
    dd1 = out_cv * out_cv * m * m + d * m  # E[d(d+1)] = Var(m) + (m-1)m
    w_d = beta * d + gamma * (n * d + dd1 / 2.0)
    return w_p, w_p + w_d, w_p * w_p * (1.0 + in_cv * in_cv)


def length_moments(mean: float, cv: float, order: int = 4) -> list[float]:
    """E[X^j], j = 0..order, of a length with this mean and CV, taken as gamma distributed.

    Only mean and CV are known; the gamma family (exponential at cv = 1, like geometric lengths; a point
    mass at cv = 0) fixes the higher moments: E[X^j] = mean^j prod_{i<j} (1 + i cv^2).
    """
    out, v = [1.0], 1.0
    for j in range(order):
        v *= mean * (1.0 + j * cv * cv)
        out.append(v)
    return out


def work_moments(beta, gamma, n, m, c, in_cv=0.0, out_cv=0.0) -> tuple[float, float, float, float, float]:
    """(E[W], E[W^2], E[W I], E[I], E[I^2]) of a request's work W (ms) and iterations I = c + m - 1.

    W = a + b d + q d^2 with d = m - 1 decode iterations, a = w_p(c) (prefill), b = beta + gamma (n + 1/2),
    q = gamma/2; n and m independent, gamma-distributed (length_moments).
    """
    mm = length_moments(m, out_cv)
    d1 = mm[1] - 1.0  # moments of d = m - 1 by the binomial expansion
    d2 = mm[2] - 2.0 * mm[1] + 1.0
    d3 = mm[3] - 3.0 * mm[2] + 3.0 * mm[1] - 1.0
    d4 = mm[4] - 4.0 * mm[3] + 6.0 * mm[2] - 4.0 * mm[1] + 1.0
    n2 = n * n * (1.0 + in_cv * in_cv)
    u1 = beta + gamma * (c + 1) / 2.0
    b0, q = beta + gamma / 2.0, gamma / 2.0
    ea, ea2 = u1 * n, u1 * u1 * n2
    eb, eb2, eab = b0 + gamma * n, b0 * b0 + 2.0 * b0 * gamma * n + gamma * gamma * n2, u1 * (b0 * n + gamma * n2)
    ew = ea + eb * d1 + q * d2
    ew2 = ea2 + eb2 * d2 + q * q * d4 + 2.0 * eab * d1 + 2.0 * q * ea * d2 + 2.0 * q * eb * d3
    ewi = c * ew + ea * d1 + eb * d2 + q * d3
    return ew, ew2, ewi, c + d1, c * c + 2.0 * c * d1 + d2


def decode_cost_variance(gamma, n, m, in_cv=0.0, out_cv=0.0) -> float:
    """Variance of one request's cost in a decode iteration (ms^2), over all decode iterations of all requests.

    Decode iteration j = 1..d (d = m - 1) reads n + j context tokens, so the cost varies with the age j
    (uniform over a request's iterations, requests weighted by d) and the prompt length n (independent).
    """
    mm = length_moments(m, out_cv, order=3)
    d1 = mm[1] - 1.0
    if d1 <= 0.0:
        return 0.0
    d2 = mm[2] - 2.0 * mm[1] + 1.0
    d3 = mm[3] - 3.0 * mm[2] + 3.0 * mm[1] - 1.0
    ej = (d2 + d1) / (2.0 * d1)  # E[d(d+1)/2]/E[d]
    ej2 = (2.0 * d3 + 3.0 * d2 + d1) / (6.0 * d1)  # E[d(d+1)(2d+1)/6]/E[d]
    return gamma * gamma * (max(ej2 - ej * ej, 0.0) + (n * in_cv) ** 2)


SHARE_TERMS = ("ew", "ew2", "ewi", "ei", "ei2")  # work_moments, per model


def share_moments(p, batch) -> tuple[np.ndarray, np.ndarray]:
    """(E[s], E[s^2]) of a request's share of a full batch's time, s = I alpha/N + W (N = batch; p: the model's
    ew, ew2, ewi, ei, ei2 of work_moments and alpha; stacked rows carry them as one table, p.share_terms)."""
    terms = getattr(p, "share_terms", None)
    if terms is None:
        ew, ew2, ewi, ei, ei2 = (getattr(p, name) for name in SHARE_TERMS)
    else:  # (models, 5), or its rows (a lazy row view)
        ew, ew2, ewi, ei, ei2 = (terms.table[terms.idx] if hasattr(terms, "idx") else terms).T
    u = p.alpha / np.asarray(batch, dtype=np.float64)
    return ew + u * ei, ew2 + u * (2.0 * ewi + u * ei2)


def cosmetatos_slope(c):
    """(c - 1)(sqrt(4 + 5c) - 2)/(32 c): Cosmetatos' M/D/c delay over M/M/c's is 1/2 + slope (1 - rho)/rho."""
    return (c - 1.0) * (np.sqrt(4.0 + 5.0 * c) - 2.0) / (32.0 * c)


def at_max_batch(p, batch) -> bool:
    """Whether every row is at its model's max batch: stacked rows carry the answer (p.at_max_batch, set by
    RowSet), a model or other parameters compare."""
    known = getattr(p, "at_max_batch", None)
    return bool(np.all(batch == p.max_batch)) if known is None else known


def queue_factor(p, batch, st: ChainStats) -> np.ndarray:
    """Factor on the chain's queueing delay for the variability of service (Poisson arrivals).

    c_s^2 is weighted between two regimes by the full batch's utilisation rho = lambda E[s]: near saturation
    the batch stays full and the replica is one server working through each request's share
    s = I alpha/N + W (I iterations resident, alpha shared by N, W its own work), and over a long run a full
    batch's departures have exactly the variability of s (context reads growing with the length make it large
    for long-tailed lengths); at light load N requests run side by side and a slot frees after a residence
    of I iterations, so that of I counts. c_s^2 >= 1: Allen-Cunneen, (1 + c_s^2)/2. c_s^2 < 1: between M/M/c
    (c_s^2 = 1) and M/D/c by Cosmetatos' ratio at utilisation rho (capped at 1: a deterministic service does
    not queue longer). p: the model's scalars (or stacked rows); where every row is at its max_batch the
    precomputed scv_s, e_s and slope are used. Chosen among weightings by P(full), sqrt P(full), rho and 1 against the simulator grid
    (benchmarks/RESULTS.md).
    """
    if at_max_batch(p, batch):  # (row_adjust's test: a model alone in stacked form takes this path too)
        scv_s, es, slope = p.scv_s, p.e_s, p.slope
        high, low = getattr(p, "scv_high", False), getattr(p, "scv_low", False)  # both c_s^2 >= 1 (< 1) in all rows
    else:  # rows of an all-batch-sizes curve
        es, es2 = share_moments(p, batch)
        scv_s, slope = es2 / (es * es) - 1.0, cosmetatos_slope(np.asarray(batch, dtype=np.float64))
        high = low = False
    rho = np.multiply(st.lam, es)
    np.minimum(rho, 1.0, out=rho)
    return service_variability(rho, p.scv_i, scv_s, slope, high, low)


def service_variability(rho, scv_i, scv_s, slope, high=False, low=False) -> np.ndarray:
    """queue_factor at the full batch's utilisation rho (an array it may overwrite): c_s^2 = max(scv_i + rho
    (scv_s - scv_i), 0); high (low): c_s^2 >= 1 (< 1) in every row."""
    scv = np.multiply(rho, scv_s - scv_i)
    scv += scv_i
    np.maximum(scv, 0.0, out=scv)
    if high:  # so is their mix: Allen-Cunneen only
        scv += 1.0
        scv *= 0.5
        return scv
    if low:
        deterministic = mdc_ratio(slope, rho)
        return scv + (1.0 - scv) * deterministic
    # variability_factor(scv, mdc_ratio(slope, rho)) with fewer passes (this runs for every evaluated rate):
    # (1 + scv)/2 + max(1 - scv, 0) (M/D/c ratio - 1/2)
    excess = np.subtract(1.0, rho)  # the M/D/c ratio's excess over 1/2, capped at 1/2
    np.maximum(rho, 1e-9, out=rho)
    excess /= rho
    excess *= slope
    np.minimum(excess, 0.5, out=excess)
    below = np.subtract(1.0, scv)
    np.maximum(below, 0.0, out=below)
    excess *= below
    scv += 1.0
    scv *= 0.5
    scv += excess
    return scv


def mdc_ratio(slope, rho):
    """Cosmetatos' M/D/c delay over M/M/c's at utilisation rho (slope: cosmetatos_slope), capped at 1."""
    return np.minimum(0.5 + slope * (1.0 - rho) / np.maximum(rho, 1e-9), 1.0)


def variability_factor(scv, deterministic):
    """Factor on an M/M/c delay for a service of squared CV scv >= 0: Allen-Cunneen (1 + scv)/2 from 1 on,
    below it between M/M/c and the M/D/c ratio `deterministic` (queue_factor)."""
    low = np.minimum(scv, 1.0)
    return np.where(scv < 1.0, low + (1.0 - low) * deterministic, 0.5 * (1.0 + scv))


def work_timing(beta, gamma, n, m, c, w_p, w_tot) -> float:
    """theta = 2 (1 - (a + 1/2)/I) of equal-length requests, a the work-weighted mean age (iterations) at which
    a request's work is done, I = c + m - 1 its iterations: 1 when the work is spread evenly over the residence,
    2 when all of it is done at admission, 0 when all at the end.

    Prefill chunks run at ages 0..c-1 (w_p/c each), decode token j = 1..m-1 at age c - 1 + j costs
    beta + gamma (n + j): context reads make the work late (theta < 1), a long prompt's prefill makes it early.
    """
    d, iters = m - 1.0, c + m - 1.0
    if w_tot <= 0.0:  # no work (alpha only): no timing
        return 1.0
    s1, s2 = d * (d + 1.0) / 2.0, d * (d + 1.0) * (2.0 * d + 1.0) / 6.0
    b0 = beta + gamma * n
    moment = w_p * (c - 1.0) / 2.0 + b0 * (s1 + (c - 1.0) * d) + gamma * (s2 + (c - 1.0) * s1)
    return 2.0 * (1.0 - (moment / w_tot + 0.5) / iters)


def occupancy_spread_factor(p, st: ChainStats) -> np.ndarray:
    """Factor on the chain's P(batch full), hence on its queueing delay, for a residence of a fixed number of
    iterations (output CV < 1).

    Below a full batch an arrival joins at once, so the occupancy is the number of arrivals in the last I
    iterations, and arrivals per iteration are Poisson(lambda T) with T the iteration time, which every resident
    raises by its work at its age: a self-exciting count with branching ratio nu = lambda E[W]. The chain (a
    residence without memory, the work spread evenly) gives it the variance-to-mean ratio 1/(1 - nu); with the
    fixed residence it is 1/((1 - nu)(1 - (theta - 1) nu)), theta = work_timing (exact when all work is at
    admission, at the end or spread evenly, and at first order in nu). A full batch is a tail event of the
    occupancy, whose log-probability scales as 1/variance: P(full) -> P(full)^(1 - (theta - 1) nu). Between a
    fixed (CV 0) and a memoryless (CV 1) residence the exponent's change is weighted by 1 - CV^2 (p.spread_k =
    (1 - CV^2)(theta - 1); p.spread_kw = -spread_k E[W]).
    """
    x = np.maximum(st.p_block, 1e-300)  # in place from here: this runs for every evaluated rate
    np.log(x, out=x)
    x *= p.spread_kw
    x *= st.lam
    return np.exp(x, out=x)


COMPOSITION_POINTS = 17  # utilisations rho = j/16 at which a model tabulates composition_term
_COMPOSITION_RHO = np.linspace(0.0, 1.0, COMPOSITION_POINTS)
_COMPOSITION_LOAD = (1.0 - _COMPOSITION_RHO)[:, None]  # 1 - rho, a column
QUADRATURE_NODES = 65  # points of k at which composition_term sums log r_k for max batches beyond EXACT_SLOTS
EXACT_SLOTS = 64  # up to this max batch every k is summed


def quadrature_nodes(n_max) -> np.ndarray:
    """Points of k at which composition_term sums log r_k for a model of max batch n_max: every k (0) up to
    EXACT_SLOTS, QUADRATURE_NODES beyond."""
    return np.where(np.asarray(n_max, dtype=np.int64) <= EXACT_SLOTS, 0, QUADRATURE_NODES)


def composition_term(alpha, c0, gamma, m, var_age, n_max, e_s, scv_i, slope, nodes: int = 0) -> np.ndarray:
    """Per model (all arguments (M,) arrays, n_max >= 1 integers), the term composition_delay adds to queue_factor
    at COMPOSITION_POINTS utilisations rho = lambda E[s] = j/(G - 1): (G, M).

    With memoryless output lengths and context reads that grow with a request's age, a batch holding old, long
    requests iterates slowly, and arrivals come per iteration in proportion to its length, so a full small batch
    iterates slower than the mean field T_mf(k) = alpha + k s (s = c0 + gamma m): by a factor r_k = 1 + gamma
    e_k/T_mf(k), e_k the residents' excess age sum. Balancing that age sum per occupancy state (var_age: Var of a
    resident's age, tokens^2; g v = gamma var_age) gives a tridiagonal system in e whose expansion to first order
    in lambda, e_k = max(e0_k + lambda e1_k, 0), is two forward recurrences (T = T_mf + gamma e0):
        e0_k = e0_{k-1} + g v (k-1)/T_{k-1},
        e1_k = e1_{k-1} + (m/k) (T_k k/(k+1) e0_{k+1} - T_k e0_k - g v k) - g v (k-1) gamma e1_{k-1}/T_{k-1}^2  (k < N),
        e1_N = e1_{N-1} - T_N m e0_N/N^2 - g v (N-1) gamma e1_{N-1}/T_{N-1}^2.
    Since T_k (e0_{k+1} - e0_k) = g v k, e1's inner source is -m T_k e0_{k+1}/(k (k+1)); both run as w = gamma e0
    (w_k = w_{k-1} + G (k-1)/T_{k-1}, G = gamma g v) and gamma e1, one k at a time for all models at once. The
    sum over k of log r_k takes every k up to EXACT_SLOTS, beyond that the trapezoid rule (quadrature_nodes). The
    chain whose mu(k) is slowed by r_k has its delay W_c = W r_N prod_k r_k (the block's weight, and a queued
    request waits r_N longer; the head's normalisation is left out: at light load it is 1, and the term is
    weighted by 1 - rho, so it is 0 at rho = 1). Against the balance solved to convergence per rate
    (benchmarks/perf_model_composition.py) this scores the same TTFT grid points (benchmarks/RESULTS.md)."""
    n_max = np.asarray(n_max, dtype=np.int64)
    # every k summed, or `nodes` points of quadrature (each model by its own max batch; nodes > 0: every k up to
    # nodes, that many points beyond), each group at once
    def tier_of(n):  # (non-decreasing in N)
        return quadrature_nodes(n) if nodes == 0 else np.where(n <= nodes, 0, nodes)
    smallest, largest = int(n_max.min()), int(n_max.max())
    if tier_of(smallest) != tier_of(largest):
        tier = tier_of(n_max)
        out = np.empty((COMPOSITION_POINTS, n_max.shape[0]))
        for value in np.unique(tier).tolist():
            rows = tier == value
            out[:, rows] = composition_term(*(np.asarray(v, dtype=np.float64)[rows] for v in
                                             (alpha, c0, gamma, m, var_age)), n_max[rows],
                                           *(np.asarray(v, dtype=np.float64)[rows] for v in (e_s, scv_i, slope)),
                                           nodes=nodes)
        return out
    nodes = int(tier_of(largest))
    alpha, c0, gamma, m, var_age, e_s, scv_i, slope = (np.asarray(v, dtype=np.float64) for v in
                                                        (alpha, c0, gamma, m, var_age, e_s, scv_i, slope))
    # k along axis 0, the models along axis 1: each step of a recurrence is one row operation over all models
    rows, width = n_max.shape[0], largest + 1
    same = smallest == largest  # (the usual case: one max batch for every model)
    s = c0 + gamma * m
    k = np.arange(width, dtype=np.float64)[:, None]
    t_mf, gk, w, t, e1, decay = _scratch((6, width, rows), slot=1)  # (k, models) arrays, reused memory
    np.multiply(s, k, out=t_mf)
    t_mf += alpha
    np.multiply(gamma * gamma * var_age, k, out=gk)
    w[0] = 0.0
    tmp = np.empty(rows)
    add, divide, multiply = np.add, np.divide, np.multiply
    w_k, t_k, gk_k, t_mf_k = list(w), list(t), list(gk), list(t_mf)  # row views, made once (positional out: faster)
    for j in range(1, width):  # w_k = w_{k-1} + G (k-1)/T_{k-1}, T_{k-1} = T_mf(k-1) + w_{k-1}
        add(t_mf_k[j - 1], w_k[j - 1], t_k[j - 1])
        divide(gk_k[j - 1], t_k[j - 1], tmp)
        add(w_k[j - 1], tmp, w_k[j])
    add(t_mf_k[-1], w_k[-1], t_k[-1])
    # gamma e1_k = decay_k gamma e1_{k-1} + m base_k, base_k = -T_k w_{k+1}/(k (k+1)) (k < N), -T_N w_N/N^2 (k = N)
    multiply(t[1:-1], w[2:], out=e1[1:-1])
    e1[1:-1] /= k[1:-1] * -(k[1:-1] + 1.0)
    e1[0] = 0.0
    if same:
        multiply(t[-1], w[-1], out=e1[-1])
        e1[-1] /= -float(width - 1) ** 2
    else:
        cols = np.arange(rows)
        e1[k >= n_max[None, :]] = 0.0  # beyond N: no term (r_k = 1)
        e1[n_max, cols] = t[n_max, cols] * w[n_max, cols] / -(n_max * n_max).astype(np.float64)
    e1 *= m
    multiply(t[:-1], t[:-1], out=decay[1:])  # decay_k = 1 - G (k-1)/T_{k-1}^2
    divide(gk[:-1], decay[1:], out=decay[1:])
    np.subtract(1.0, decay[1:], out=decay[1:])
    e1_k, decay_k = list(e1), list(decay)
    for j in range(2, width):
        multiply(e1_k[j - 1], decay_k[j], tmp)
        add(e1_k[j], tmp, e1_k[j])
    # r_k = max(a_k + rho b_k, 1), a = T/T_mf = 1 + gamma e0/T_mf, b = gamma e1/(T_mf E[s]) (lambda = rho/E[s]);
    # at rho = 0 it is a_k (>= 1), and the term is 0 at rho = 1: the product over k runs at the inner utilisations,
    # as (utilisations, points, models)
    if nodes == 0:  # every k
        a, b = divide(t[1:], t_mf[1:]), divide(e1[1:], t_mf[1:])
        b /= e_s
        if not same:  # k > N: r_k = 1
            beyond = k[1:] > n_max[None, :]
            a[beyond], b[beyond] = 1.0, 0.0
        ratio = np.empty((COMPOSITION_POINTS, rows))
        ratio[-1] = 1.0  # (rho = 1: no term)
        last = -1 if same else (n_max - 1, np.arange(rows))
        np.multiply.reduce(a, axis=0, out=ratio[0])  # rho = 0: r_k = a_k
        ratio[0] *= a[last]
        r = _clipped(a, b)
        np.multiply.reduce(r, axis=1, out=ratio[1:-1])
        ratio[1:-1] *= r[:, -1] if same else r[:, last[0], last[1]]
    else:
        ratio = _quadrature_ratio(t, w, e1, n_max, s, alpha, e_s, nodes, same)
    # term = (1 - rho) queue_factor at the residence's c_s^2 (M/D/c by Cosmetatos below 1) (ratio - 1)
    weight = service_variability(_table_rho(rows), scv_i, scv_i, slope)  # (c_s^2 constant in rho: scv_i)
    weight *= _COMPOSITION_LOAD  # 1 - rho
    ratio -= 1.0
    np.maximum(ratio, 0.0, out=ratio)
    ratio *= weight
    return ratio


def _table_rho(models: int) -> np.ndarray:
    """composition_term's utilisations for each of `models` models, (G, M) (for service_variability to overwrite)."""
    return np.repeat(_COMPOSITION_RHO[:, None], models, axis=1)


def _clipped(a, b) -> np.ndarray:
    """r_k = max(a_k + rho b_k, 1) at composition_term's inner utilisations rho (a, b: (points, models)), as
    (utilisations, points, models) in scratch memory."""
    inner = _COMPOSITION_RHO[1:-1]
    r = np.multiply(inner[:, None, None], b, out=_scratch((inner.shape[0],) + b.shape))
    r += a
    np.fmax(r, 1.0, out=r)  # (no NaN here: fmax is np.maximum without its NaN test, faster)
    return r


def _quadrature_ratio(t, w, e1, n_max, s, alpha, e_s, nodes, same) -> np.ndarray:
    """composition_term's W_c/W at its utilisations (G, models), the sum over k of log r_k by the trapezoid rule
    on `nodes` points of k in [1, N] plus half the end points and the end-slope term (Euler-Maclaurin: sum f =
    trapezoid_h + (f(1) + f(N))/2 + (1 - h^2)/12 (f'(N) - f'(1)), the slopes by second-order differences at k = 1,
    2, 3 and N - 2, N - 1, N; w, e1 and T_mf are smooth in k, interpolated linearly between integers), so that the
    (points x utilisations x models) work does not grow with N."""
    rows = n_max.shape[0]
    nn = n_max[None, :].astype(np.float64)
    span = nn[:, :1] if same else nn
    pos = np.concatenate((1.0 + (span - 1.0) * np.linspace(0.0, 1.0, nodes)[:, None], 2.0 + 0.0 * span,
                          3.0 + 0.0 * span, span - 2.0, span - 1.0))  # the nodes, then the slopes' integer points
    low = np.minimum(np.maximum(pos.astype(np.int64), 1), (n_max - 1)[None, :1 if same else None])
    frac = pos - low
    if same:  # whole rows of k
        def at(x):
            lo = x[low[:, 0]]
            return lo + (x[low[:, 0] + 1] - lo) * frac
    else:  # each model its own k: flat positions
        low *= rows
        low += np.arange(rows)
        def at(x):
            lo = np.take(x, low)
            return lo + (np.take(x, low + rows) - lo) * frac
    t_pos = alpha + s * pos
    a = at(w)  # a = 1 + w/T_mf, b = gamma e1/(T_mf E[s]) at the points
    a /= t_pos
    a += 1.0
    b = at(e1)
    b /= t_pos
    b /= e_s
    ratio = np.empty((COMPOSITION_POINTS, rows))
    ratio[-1] = 1.0  # (rho = 1: no term)
    h = (nn[0] - 1.0) / (nodes - 1)
    _trapezoid_product(a[None], nodes, h, ratio[:1])  # rho = 0: r_k = a_k
    _trapezoid_product(_clipped(a, b), nodes, h, ratio[1:-1])
    return ratio


def _trapezoid_product(r, q, h, out) -> None:
    """out = exp(sum over k = 1..N of log r_k) r_N from r at _quadrature_ratio's points (axis 1: q equally spaced
    nodes, then k = 2, 3, N - 2, N - 1): equal weights h inside, h/2 + 1/2 at the ends, and the end-slope term;
    powers of products instead of a log per point."""
    r1, r_n = r[:, 0], r[:, q - 1]
    ends = np.sqrt(r1 * r_n)  # ratio = P^h ends^(h + 1), P the product of the inner points
    np.multiply.reduce(r[:, 1:q - 1], axis=1, out=out)
    out *= ends
    out **= h
    out *= ends
    r2, r3, rm2, rm1 = r[:, q], r[:, q + 1], r[:, q + 2], r[:, q + 3]
    out *= ((r_n * r_n * r_n * rm2) * (r1 * r1 * r1 * r3) / ((rm1 * rm1) * (rm1 * rm1) * (r2 * r2) * (r2 * r2))) \
        ** ((1.0 - h * h) / 24.0)
    out *= r_n


_POOL = threading.local()


def _scratch(shape: tuple, slot: int = 0) -> np.ndarray:
    """A float64 array of this shape for use within one composition_term call (slot 0 or 1: two at once):
    memory reused across calls (in this thread), since touching fresh memory costs more than the arithmetic done
    in it."""
    need = math.prod(shape)
    bufs = getattr(_POOL, "bufs", None)
    if bufs is None:
        bufs = _POOL.bufs = [np.empty(0), np.empty(0)]
    if bufs[slot].shape[0] < need:
        bufs[slot] = np.empty(need)
    return bufs[slot][:need].reshape(shape)


COMPOSITION_CHUNK = 512  # models per composition_term call (bounds its scratch: points x G x models floats)


def set_composition_tables(models, args: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """composition_term of the models that have none yet, computed together (one set of array operations), and
    the full-batch factor tables, queue_factor + that term at the same utilisations; returns the term's table, its
    steps between points, the factor's table and its steps, each (G, M) over all the models (zeros where the term
    is off). args: the models' comp_args as columns (10, M), if at hand."""
    todo = [i for i, mdl in enumerate(models) if mdl.comp_on and mdl._comp_src is None]
    if todo:
        every = len(todo) == len(models)
        if args is None:
            args = np.array([mdl.comp_args for mdl in models]).T
        cols = args if every else args[:, todo]
        src = np.empty((4, COMPOSITION_POINTS, cols.shape[1]))  # term, its steps, factor, its steps
        for lo in range(0, cols.shape[1], COMPOSITION_CHUNK):
            part = cols[:, lo:lo + COMPOSITION_CHUNK]
            src[0, :, lo:lo + COMPOSITION_CHUNK] = composition_term(*part[:5], part[5].astype(np.int64), *part[6:9])
        # queue_factor at the table's utilisations, plus the term
        np.add(service_variability(_table_rho(cols.shape[1]), cols[7], cols[9], cols[8]), src[0], out=src[2])
        np.subtract(src[0::2, 1:], src[0::2, :-1], out=src[1::2, :-1])
        src[1::2, -1] = 0.0
        for row, i in enumerate(todo):  # each model keeps its column (a later sizing reuses it)
            models[i]._comp_src = src, row
        if every:
            return tuple(src)
    # the models' columns, where they were computed (usually all in one call: one gather)
    sources = [mdl._comp_src if mdl.comp_on else None for mdl in models]
    first = next(s for s in sources if s is not None)[0]
    if all(s is not None and s[0] is first for s in sources):
        return tuple(first[:, :, [s[1] for s in sources]])
    out = np.zeros((4, COMPOSITION_POINTS, len(models)))
    for i, s in enumerate(sources):
        if s is not None:
            out[:, :, i] = s[0][:, :, s[1]]
    return tuple(out)


def _interpolate(p, st: ChainStats, table, step) -> np.ndarray:
    """A table at COMPOSITION_POINTS utilisations interpolated linearly at rho = min(lambda E[s], 1) (step: the
    steps between its points): one model's (G,), or stacked rows' (lazy row views of (G, M) tables)."""
    pos = np.multiply(st.lam, p.e_s)
    np.minimum(pos, 1.0, out=pos)
    pos *= COMPOSITION_POINTS - 1
    j = pos.astype(np.int64)  # (at rho = 1 the last point, whose step is 0)
    pos -= j  # the weight of the upper point
    if hasattr(table, "idx"):  # stacked rows: the flat position of point j of each row's model
        j *= table.table.shape[1]
        j += table.idx
        table, step = table.table, step.table
    pos *= step.take(j)
    pos += table.take(j)
    return pos


def composition_delay(p, st: ChainStats) -> np.ndarray:
    """Term added to queue_factor for the composition of a filling batch (output CV > 0), at the model's max batch:
    composition_term interpolated linearly in rho = lambda E[s]."""
    return _interpolate(p, st, p.comp_table, p.comp_step)


def full_batch_factor(p, st: ChainStats) -> np.ndarray:
    """queue_factor + composition_delay at the model's max batch from one table (output CV > 0; row_adjust's path
    unless either function is swapped, as benchmarks/perf_model.py does for its variants): both at the table's
    utilisations, interpolated linearly between them. Between them queue_factor's M/D/c curve is off by at most
    1.6 % on random sizing workloads, N = 8-256 (the composition term's own interpolation is coarser)."""
    return _interpolate(p, st, p.factor_table, p.factor_step)


_QUEUE_FACTOR, _COMPOSITION_DELAY = queue_factor, composition_delay  # the model's own (row_adjust)


class IterationModel(ServiceModel):
    """Continuous batching at iteration level (module docstring); alpha, beta, gamma as queue-analysis v0.7.

    Tables per batch size B = 0..N: nc (prefill chunks), prefill_table (mean-field prefill at batch B) and
    admit_table (boundary wait + prefill of an arrival that finds B in service, B < N).
    """

    kind = "iteration"
    SCALARS = ("m", "alpha", "ew", "ew2", "ewi", "ei", "ei2", "half_alpha", "half_delta_n", "var_term",
               "half_var_cost", "chunk_var_cost", "max_batch", "scv_i", "scv_s", "e_s", "slope", "spread_kw")
    TABLES = ("prefill_table", "admit_table")

    def __init__(self, params, n, m, max_batch, compat, *, max_num_tokens: float, in_cv: float = 0.0,
                 out_cv: float = 0.0):
        super().__init__(n, m, max_batch, compat)
        a, b, g = params["alpha"], params["beta"], params["gamma"]
        self.alpha, self.beta, self.gamma, self.max_num_tokens = a, b, g, max_num_tokens
        self.in_cv, self.out_cv = in_cv, out_cv
        self.nc = chunk_counts(n, m, max_num_tokens, max_batch, float32=False)  # B = 0..N (non-decreasing)
        self.affine = bool(self.nc[0] == self.nc[-1])
        c1 = float(self.nc[-1])
        c = c1 if self.affine else self.nc.astype(np.float64)  # without chunking: scalars, the same values
        iters = c + m - 1.0  # iterations a request is resident
        self.w_p, self.w_tot, w_p2 = request_work(b, g, n, m, c, in_cv, out_cv)
        self.delta = self.w_tot / iters
        bs = np.arange(max_batch + 1, dtype=np.float64)
        self._tables = None  # prefill_table, admit_table: built on first use (only chunked prefills read them)
        wp1, wt1, d1 = (float(v) if self.affine else float(v[-1]) for v in (self.w_p, self.w_tot, self.delta))
        # boundary residual T(k)/2 = (alpha + k delta)/2, delta taken at N (it varies only with chunking)
        self.half_alpha, self.half_delta_n = 0.5 * a, 0.5 * d1
        self.var_term = 0.5 * float(w_p2 if self.affine else w_p2[-1])  # lambda E[w_p^2]/2: prefills joining an
        # iteration vary its length, and so do the requests' contexts: with k decoding, Var T = k Var(cost); an
        # arrival at a random time finds a length-biased iteration, E[T^2]/(2 E[T]) = T(k)/2 + k Var(cost)/(2 T(k)),
        # and its prefill iteration (the next one: the same requests, one token older) is longer by k Var(cost)/T(k)
        # per chunk
        var_cost = decode_cost_variance(g, n, m, in_cv, out_cv)
        self.half_var_cost, self.chunk_var_cost = 0.5 * var_cost, c1 * var_cost
        self.ew, self.ew2, self.ewi, self.ei, self.ei2 = work_moments(b, g, n, m, c1, in_cv, out_cv)
        self.e_s, es2 = (float(v) for v in share_moments(self, max_batch))  # queue_factor's terms at N
        self.scv_s, self.scv_i = es2 / (self.e_s * self.e_s) - 1.0, self.ei2 / (self.ei * self.ei) - 1.0
        self.slope = float(cosmetatos_slope(float(max_batch)))
        self.scv_high = self.scv_s >= 1.0 and self.scv_i >= 1.0
        self.scv_low = self.scv_s < 1.0 and self.scv_i < 1.0
        theta = work_timing(b, g, n, m, c1, wp1, wt1)
        self.spread_k = max(1.0 - out_cv * out_cv, 0.0) * (theta - 1.0)  # occupancy_spread_factor
        self.spread_on, self.spread_kw = self.spread_k != 0.0, -self.spread_k * self.ew
        # composition_delay (no age variance without output-length spread)
        self.var_age = out_cv * out_cv * decode_cost_variance(1.0, n, m, 0.0, out_cv) if out_cv > 0.0 else 0.0
        self.comp_on = bool(g > 0.0 and self.var_age > 0.0 and not compat)
        self.comp_all = self.comp_on  # (stacked rows: whether every model's is on)
        self.single_slot, self.all_decode = max_batch <= 1, m >= 2.0
        self.comp_args = (a, b + g * n, g, m, self.var_age, max_batch, self.e_s, self.scv_i, self.slope, self.scv_s)
        self._comp_src = None  # (its (4, G, M) block, column) once set_composition_tables has run
        self.pf_base, self.pf_slope = c1 * (a - d1) + wp1, c1 * d1  # prefill(B), B >= 1
        self.iters_n = c1 + m - 1.0  # ITL = S/I + (c delta - w_p)/(m - 1) (row_latencies)
        self.itl_offset = (c1 * d1 - wp1) / (m - 1.0) if m >= 2.0 else 0.0
        self._set_tau((iters * a + bs * self.w_tot)[1:])
        # one array per model: stack() joins many of them far faster than tuples
        self.scalar_values = np.array(tuple(getattr(self, name) for name in self.SCALARS + self.AFFINE_SCALARS) +
                                      self.comp_args, dtype=np.float64)

    def _prefill_tables(self) -> tuple[np.ndarray, np.ndarray]:
        if self._tables is None:
            c, bs = self.nc.astype(np.float64), np.arange(self.max_batch + 1, dtype=np.float64)
            prefill = c * np.maximum(0.0, self.alpha + (bs - 1) * self.delta) + self.w_p
            # an arrival that finds k < N in service prefills in a batch of k + 1 (a queued one: N)
            self._tables = prefill, prefill[np.minimum(bs + 1, self.max_batch).astype(np.int64)]
        return self._tables

    @property
    def prefill_table(self) -> np.ndarray:
        """Mean-field prefill (ms) at batch B = 0..N."""
        return self._prefill_tables()[0]

    @property
    def admit_table(self) -> np.ndarray:
        """Prefill (ms) of an arrival that finds B = 0..N-1 in service (batch min(B + 1, N)), then N."""
        return self._prefill_tables()[1]

    @property
    def comp_table(self) -> np.ndarray:
        """composition_term of this model (computed on first use; stack() computes many at once)."""
        return self._composition(0)

    @property
    def comp_step(self) -> np.ndarray:
        """comp_table's steps between consecutive points (0 after the last)."""
        return self._composition(1)

    @property
    def factor_table(self) -> np.ndarray:
        """queue_factor + comp_table at the same utilisations (full_batch_factor)."""
        return self._composition(2)

    @property
    def factor_step(self) -> np.ndarray:
        """factor_table's steps between consecutive points (0 after the last)."""
        return self._composition(3)

    def _composition(self, which: int) -> np.ndarray:
        if not self.comp_on:
            return np.zeros(COMPOSITION_POINTS)
        if self._comp_src is None:
            set_composition_tables([self])
        src, row = self._comp_src
        return src[which, :, row]

    @staticmethod
    def row_adjust(p, st: ChainStats, n) -> ChainStats:
        """Wait = the chain's queueing delay scaled for service variability + the mean iteration-boundary wait."""
        # Every admitted arrival that finds k >= 1 in the system waits for the running iteration to end (a queued
        # one too: admissions and departures happen at boundaries). Lost arrivals (k = N + Q) are left out.
        # (in place where a temporary is ours: this runs for every evaluated rate)
        lost, p_block = st.blocking, st.p_block
        below = np.subtract(1.0, st.p_head[:, 0])  # 0 < k < N
        below -= p_block
        np.maximum(below, 0.0, out=below)
        full = at_max_batch(p, n)
        if p.single_slot if full else np.any(n <= 1):  # exact 0 at N = 1 (1 - p_0 - p_block cancels)
            below = np.where(n > 1, below, 0.0)
        busy = p_block - lost  # admitted arrivals that find k >= 1
        np.maximum(busy, 0.0, out=busy)
        busy += below
        in_service = n * lost  # sum_k min(k, N) p_k over admitted arrivals
        np.subtract(st.num_in_service, in_service, out=in_service)
        np.maximum(in_service, 0.0, out=in_service)
        mean_half = p.half_delta_n * in_service  # half the mean iteration's work part, T/2 - alpha/2
        spread = np.add(mean_half, p.half_alpha)  # k Var(cost)/(2 T): half_var_cost in_service/(2 (T/2))
        spread += 1e-300
        np.divide(p.half_var_cost * in_service, spread, out=spread)
        spread *= 0.5
        boundary = st.lam * p.var_term
        boundary += p.half_alpha
        boundary *= busy
        boundary += mean_half
        boundary += spread
        boundary /= np.maximum(1.0 - lost, 1e-300)
        if p.comp_all and full and queue_factor is _QUEUE_FACTOR and composition_delay is _COMPOSITION_DELAY:
            factor = full_batch_factor(p, st)  # every output CV > 0: one lookup
        else:
            factor = queue_factor(p, n, st)
            if p.comp_on and full:
                factor = factor + composition_delay(p, st)
        if p.spread_on:  # some output CV < 1 (stacked rows: any of them)
            factor = factor * occupancy_spread_factor(p, st)
        wait = st.wait_time * factor
        wait += boundary
        waiting = st.throughput * wait
        return ChainStats(lam=st.lam, p_head=st.p_head, p_block=p_block, blocking=lost,
                          num_in_system=st.num_in_service + waiting, num_in_service=st.num_in_service,
                          num_waiting=waiting, throughput=st.throughput, resp_time=st.service_time + wait,
                          service_time=st.service_time, wait_time=wait)

    AFFINE_SCALARS = ("pf_base", "pf_slope", "iters_n", "itl_offset")

    @classmethod
    def stack(cls, models: list["ServiceModel"], width: int) -> SimpleNamespace:
        """Per-model parameters as arrays; without chunking (nc constant) the prefill tables are affine in B,
        so only their coefficients are stacked and the latencies take closed forms (no table passes)."""
        affine = all(m.affine for m in models)
        out = {"compat": models[0].compat, "affine": affine, "scv_high": all(m.scv_high for m in models),
               "scv_low": all(m.scv_low for m in models), "spread_on": any(m.spread_on for m in models),
               "comp_on": any(m.comp_on for m in models), "comp_all": all(m.comp_on for m in models),
               "single_slot": any(m.single_slot for m in models), "all_decode": all(m.all_decode for m in models)}
        columns = np.array([mdl.scalar_values for mdl in models]).T.copy()  # one pass over the models
        names = cls.SCALARS + cls.AFFINE_SCALARS
        comp_args, columns = columns[len(names):], columns[:len(names)]
        share = [names.index(name) for name in SHARE_TERMS]  # read only below the max batch: a lazy row table
        kept = [i for i in range(len(names)) if i not in share]
        names, out["share_terms"] = tuple(names[i] for i in kept), columns[share].T.copy()
        columns = columns[kept]
        out.update(zip(names, columns), scalar_names=names, scalar_matrix=columns)  # gather takes them at once
        if not affine:
            for name in cls.TABLES:
                out[name] = pad_rows([getattr(mdl, name) for mdl in models], width + 1)
        if out["comp_on"]:
            out["comp_table"], out["comp_step"], out["factor_table"], out["factor_step"] = \
                set_composition_tables(models, comp_args)
        return SimpleNamespace(**out)

    @staticmethod
    def row_latencies(p, st, n):
        lost = st.blocking
        admitted = np.maximum(1.0 - lost, 1e-300)
        if p.affine:  # prefill(B) = pf_base + pf_slope B for B >= 1
            # E[min(k + 1, N)] over admitted arrivals = L_s + 1 - P(k >= N) - N p_K
            admit = st.num_in_service + 1.0
            admit -= st.p_block
            admit -= n * lost
            admit *= p.pf_slope
            admit /= admitted
            admit += p.pf_base
        else:
            head = _head_dot(st.p_head, p.admit_table)  # sum_{k<N} p_k Pf(min(k + 1, N))
            pf_n = _at(p.prefill_table, n)
            admit = (head + (st.p_block - lost) * pf_n) / admitted  # per admitted request
            # departure-weighted prefill: p_k mu(k) = lam p_{k-1} below N (detailed balance), mu(N) P(k >= N) = X -
            # lam sum_{k <= N-2} p_k
            last = np.broadcast_to(np.asarray(n, dtype=np.int64) - 1, st.p_block.shape)
            p_last = np.take_along_axis(st.p_head, last[:, None], axis=1)[:, 0]
            below = np.maximum(1.0 - st.p_block - p_last, 0.0)
            pf_dep = (st.lam * (head - p_last * pf_n) + np.maximum(st.throughput - st.lam * below, 0.0) * pf_n) / \
                np.maximum(st.throughput, 1e-300)
        # arrivals admitted at once (k < N) see the batch at a random time: its contexts are length-biased
        seen = st.num_in_service - n * st.p_block
        np.maximum(seen, 0.0, out=seen)
        seen *= p.chunk_var_cost
        length = 2.0 * p.half_delta_n * st.num_in_service
        length += p.alpha
        length += 1e-300
        length *= admitted
        seen /= length
        admit += seen
        # ITL: the decode share of the mean service time S over the m - 1 decode iterations. S = L_s/X weights
        # the batch sizes by departures, so the prefill S contains is weighted the same way (sum_k p_k mu(k)
        # Pf(k)/X); with c constant it is c (S/I - delta) + w_p (I = c + m - 1 iterations), and
        # ITL = S/I + (c delta - w_p)/(m - 1) rises with S (with the load).
        if p.affine and p.all_decode:  # every m >= 2
            itl = st.service_time / p.iters_n
            itl += p.itl_offset
            return admit, itl, st.wait_time + admit
        many = p.m >= 2.0
        if p.affine:
            itl = np.where(many, st.service_time / p.iters_n + p.itl_offset, st.service_time / p.m)
        else:
            itl = np.where(many, (st.service_time - pf_dep) / np.where(many, p.m - 1.0, 1.0), st.service_time / p.m)
        return admit, itl, st.wait_time + admit

    def primitives(self):
        p = new_primitives(self.alpha, self.beta, self.gamma, self.n, self.m,
                           np.arange(1, self.max_batch + 1), max_num_tokens=self.max_num_tokens, float32=False)
        return p["prefill"], p["itl"]
