"""Statistics of the state-dependent M/M/1/K birth-death chain, in float64 log space.

States k = 0..K (K = N + Q requests in system), arrival rate lam in states 0..K-1, departure
rate mu(min(k, N)) in state k. States N..K form a geometric block with ratio r = lam/mu(N),
summed in closed form, so a solve costs O(N) whatever Q is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["BirthDeathChain", "ChainStats", "solve_chain", "solve_rows", "solve_lw"]


@dataclass(frozen=True)
class ChainStats:
    """Chain statistics, one entry per arrival rate (times in the rates' reciprocal unit).

    p_head[:, k] is p_k for k = 0..N-1; p_block is P(k >= N) (batch full).
    """

    lam: np.ndarray
    p_head: np.ndarray
    p_block: np.ndarray
    blocking: np.ndarray  # p_K
    num_in_system: np.ndarray  # L
    num_in_service: np.ndarray  # L_s
    num_waiting: np.ndarray  # Lq = sum_{k>N} (k-N) p_k
    throughput: np.ndarray  # X = lam (1 - p_K)
    resp_time: np.ndarray  # R = L/X
    service_time: np.ndarray  # S = L_s/X
    wait_time: np.ndarray  # W = Lq/X (bug B1: never R - S)

    @property
    def p0(self) -> np.ndarray:
        return self.p_head[:, 0]


def _log_geom_sum(x: np.ndarray, q: int) -> np.ndarray:
    """log sum_{i=0..q} exp(x i), stable for any sign of x."""
    ax = np.abs(x)
    pos = ax > 0
    if pos.all():  # the usual case: no x = 0 to patch (same values as below)
        return np.maximum(x, 0.0) * q + np.log(-np.expm1(-ax * (q + 1))) - np.log(-np.expm1(-ax))
    safe = np.where(pos, ax, 1.0)
    val = np.maximum(x, 0.0) * q + np.log(-np.expm1(-safe * (q + 1))) - np.log(-np.expm1(-safe))
    return np.where(pos, val, np.log(q + 1.0))


def _bernoulli_f(y: np.ndarray) -> np.ndarray:
    """f(y) = 1/(1 - e^-y) - 1/y, smooth through y = 0 (f(0) = 1/2)."""
    small = np.abs(y) < 1e-2
    if not small.any():  # only the closed form is needed (same values as below)
        with np.errstate(over="ignore", divide="ignore"):
            return 1.0 / (-np.expm1(-y)) - 1.0 / y
    ys = np.where(small, 1.0, y)
    with np.errstate(over="ignore", divide="ignore"):
        big = 1.0 / (-np.expm1(-ys)) - 1.0 / ys
    if np.ndim(big) == 0:
        y2 = y * y
        return np.where(small, 0.5 + y * (1.0 / 12.0 - y2 * (1.0 / 720.0 - y2 / 30240.0)), big)
    i = np.flatnonzero(small)  # the series at the few small |y| only
    ys = y[i]
    y2 = ys * ys
    big[i] = 0.5 + ys * (1.0 / 12.0 - y2 * (1.0 / 720.0 - y2 / 30240.0))
    return big


def _geom_tail(x: np.ndarray, q: np.ndarray, q1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(_log_geom_sum(x, q), _geom_mean(x, q)) for per-rate arrays, q1 = q + 1: the same values, less work."""
    ax = np.abs(x)
    if not ((ax > 0).all() and q.all()):
        return _log_geom_sum(x, q), _geom_mean(x, q)
    neg = -ax
    lz = np.maximum(x, 0.0) * q + np.log(-np.expm1(neg * q1)) - np.log(-np.expm1(neg))
    return lz, q1 * _bernoulli_f(q1 * x) - _bernoulli_f(x)


def _geom_mean(x: np.ndarray, q) -> np.ndarray:
    """Mean of i in {0..q} with weights exp(x i) (truncated geometric); q scalar or per-rate array."""
    if np.ndim(q) == 0 and q == 0:
        return np.zeros_like(x)
    # d/dx log sum_{i<=q} e^{xi} = (q+1) f((q+1)x) - f(x); the 1/x poles cancel analytically.
    q1 = q + 1
    val = q1 * _bernoulli_f(q1 * x) - _bernoulli_f(x)
    return val if np.all(q != 0) else np.where(q == 0, 0.0, val)


def _log_geom_sum_1(x: float, q: int) -> float:
    """Scalar _log_geom_sum (math module: much cheaper than numpy for a few rates)."""
    if x == 0.0:
        return math.log(q + 1.0)
    ax = abs(x)
    return max(x, 0.0) * q + math.log(-math.expm1(-ax * (q + 1))) - math.log(-math.expm1(-ax))


def _bernoulli_f_1(y: float) -> float:
    if abs(y) < 1e-2:
        y2 = y * y
        return 0.5 + y * (1.0 / 12.0 - y2 * (1.0 / 720.0 - y2 / 30240.0))
    if y < -700.0:
        return -1.0 / y
    return 1.0 / (-math.expm1(-y)) - 1.0 / y


def _geom_mean_1(x: float, q: int) -> float:
    if q == 0:
        return 0.0
    return (q + 1) * _bernoulli_f_1((q + 1) * x) - _bernoulli_f_1(x)


_SCALAR_LOOP_MAX = 32  # below this many rates the tail terms are computed with the math module


class BirthDeathChain:
    """A prepared chain (mu prefix, N, Q): solve(lam) for any 1-D array of rates."""

    def __init__(self, log_mu_prefix: np.ndarray, n_max: int, q: int):
        log_mu = np.asarray(log_mu_prefix, dtype=np.float64)[:n_max]
        if n_max < 1 or log_mu.shape[0] != n_max or q < 0:
            raise ValueError("BirthDeathChain: need log mu for B = 1..N, N >= 1, Q >= 0")
        self.n_max, self.q = n_max, q
        self.log_mu = log_mu
        self.log_mu_n = float(log_mu[-1])
        self.k = np.arange(n_max + 1, dtype=np.float64)
        self.cum = np.concatenate(([0.0], np.cumsum(log_mu)))
        self.mu_dep = np.exp(log_mu[: n_max - 1])
        self.mu_n = float(np.exp(log_mu[-1]))

    def solve(self, lam) -> ChainStats:
        """Statistics for every rate in lam (> 0, same time unit as mu)."""
        n_max, q = self.n_max, self.q
        lam = np.atleast_1d(np.asarray(lam, dtype=np.float64))
        log_lam = np.log(lam)
        lw = log_lam[:, None] * self.k[None, :] - self.cum[None, :]  # log p_k (unnormalised), k = 0..N
        x = log_lam - self.log_mu_n  # log r of the geometric block of states N..K
        if lam.shape[0] <= _SCALAR_LOOP_MAX:
            lz = np.array([_log_geom_sum_1(v, q) for v in x.tolist()])
            gm = np.array([_geom_mean_1(v, q) for v in x.tolist()])
        else:
            lz, gm = _log_geom_sum(x, q), _geom_mean(x, q)
        block = lw[:, n_max] + lz
        top = np.maximum(lw[:, :n_max].max(axis=1), block)
        e_head = np.exp(lw[:, :n_max] - top[:, None])
        lognorm = top + np.log(e_head.sum(axis=1) + np.exp(block - top))
        p_head = e_head * np.exp(top - lognorm)[:, None]
        p_block = np.exp(block - lognorm)
        blocking = np.exp(lw[:, n_max] + q * x - lognorm)
        ls = p_head @ self.k[:n_max] + n_max * p_block
        lq = p_block * gm
        # Departure form of X (= lam (1 - p_K)): a sum of positive terms, no cancellation in overload.
        xput = p_head[:, 1:] @ self.mu_dep + self.mu_n * p_block
        big_l = ls + lq
        return ChainStats(
            lam=lam,
            p_head=p_head,
            p_block=p_block,
            blocking=blocking,
            num_in_system=big_l,
            num_in_service=ls,
            num_waiting=lq,
            throughput=xput,
            resp_time=big_l / xput,
            service_time=ls / xput,
            wait_time=lq / xput,
        )


def solve_chain(log_mu_prefix: np.ndarray, lam, n_max: int, q: int) -> ChainStats:
    """Solve the chain for every rate in `lam` (1-D, > 0) at once.

    log_mu_prefix: log mu(B) for B = 1..>=n_max (only the first n_max are used, so one prefix
    can be shared by all batch sizes M <= len, e.g. for an all-M concurrency search).
    n_max = N >= 1, q = Q >= 0. Prepare a BirthDeathChain to solve repeatedly.
    """
    return BirthDeathChain(log_mu_prefix, n_max, q).solve(lam)


def solve_rows(cum: np.ndarray, log_mu: np.ndarray, lam: np.ndarray, n: np.ndarray, q: np.ndarray, *,
               cum_n: np.ndarray | None = None, log_mu_n: np.ndarray | None = None,
               mask: bool = True) -> ChainStats:
    """Solve R chains at once, one rate each, on padded arrays (row r uses states 0..n[r]+q[r]).

    cum: (R or 1, W+1) with cum[:, k] = sum_{j<=k} log mu(j) (cum[:, 0] = 0); log_mu: (R or 1, W),
    log mu(B) at column B-1 (only log mu(n[r]) is used: pass it as log_mu_n to skip log_mu);
    lam, n (1 <= n <= W), q: (R,).
    Columns beyond n[r] are ignored (mask=True), so one mu prefix can serve every batch size
    M <= W; mask=False is allowed when cum is +inf from column n[r] on in every row, with the
    finite cum[r, n[r]] given as cum_n. p_head has W columns, zero from column n[r] on.
    """
    lam = np.asarray(lam, dtype=np.float64)
    n = np.asarray(n, dtype=np.int64)
    q = np.asarray(q, dtype=np.float64)
    width = cum.shape[1] - 1
    k = np.arange(width + 1, dtype=np.float64)
    log_lam = np.log(lam)
    lw = np.multiply(log_lam[:, None], k[None, :])
    lw -= cum
    lw_n = lw[np.arange(lam.shape[0]), n] if cum_n is None else log_lam * n - cum_n
    if log_mu_n is None:
        log_mu_n = log_mu[0 if log_mu.shape[0] == 1 else np.arange(lam.shape[0]), n - 1]
    return solve_lw(lw[:, :width], k, lam, log_lam, n, q, lw_n, log_mu_n, mask=mask)


def solve_lw(head: np.ndarray, k: np.ndarray, lam: np.ndarray, log_lam: np.ndarray, n: np.ndarray, q: np.ndarray,
             lw_n: np.ndarray, log_mu_n: np.ndarray, *, mask: bool = True) -> ChainStats:
    """solve_rows from head[r, j] = j log lam[r] - cum[r, j], j < W (R, W), which it overwrites with p_head.

    k = arange(>= W) (float), lw_n = n log lam - cum[r, n[r]] (finite), log_mu_n = log mu(n[r]), q float.
    A C-contiguous head is fastest (whole-array passes).
    """
    width = head.shape[1]
    r_idx = np.arange(lam.shape[0])
    x = log_lam - log_mu_n
    lz, gm = _geom_tail(x, q, q + 1)
    if mask:
        np.copyto(head, -np.inf, where=k[None, :width] >= n[:, None])
    block = lw_n + lz
    top = np.maximum(head.max(axis=1), block)
    p_head = np.subtract(head, top[:, None], out=head)
    np.exp(p_head, out=p_head)
    head_sum = p_head.sum(axis=1)
    lognorm = top + np.log(head_sum + np.exp(block - top))
    scale = np.exp(top - lognorm)
    p_head *= scale[:, None]
    p_block = np.exp(block - lognorm)
    blocking = np.exp(lw_n + q * x - lognorm)
    # einsum, not BLAS: a row's sums must not depend on the other rows of the batch
    ls = np.einsum("ij,j->i", p_head, k[:width]) + n * p_block
    lq = p_block * gm
    # Departures: sum_{k=1}^{n-1} p_k mu(k) = lam sum_{k=0}^{n-2} p_k (detailed balance) + mu(n) p_block;
    # positive terms only (no 1 - p_K cancellation in overload) and no per-row mu table needed.
    below = head_sum * scale - p_head[r_idx, n - 1]
    xput = lam * np.maximum(below, 0.0) + np.exp(log_mu_n) * p_block
    big_l = ls + lq
    return ChainStats(lam=lam, p_head=p_head, p_block=p_block, blocking=blocking, num_in_system=big_l,
                      num_in_service=ls, num_waiting=lq, throughput=xput, resp_time=big_l / xput,
                      service_time=ls / xput, wait_time=lq / xput)
