"""Service-time models of the queue-analysis versions (spec §1.3, §3.2, §3.4).

Each model gives log mu(B) for B = 1..N (aggregate departure rate in req/ms with B requests in
service) and turns chain statistics into (prefill, itl, ttft) in ms, following its version.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from .chain import ChainStats
from .chunks import chunk_counts
from .errors import QueueingError

__all__ = ["ServiceModel", "V02Model", "OldModel", "NewModel", "new_primitives", "PARAM_KEYS"]

PARAM_KEYS = {
    "v02": ("alpha", "beta", "gamma", "delta"),
    "old3": ("alpha", "beta", "gamma"),
    "old": ("alpha", "beta", "gamma"),
    "new": ("alpha", "beta", "gamma"),
}


class ServiceModel:
    """Base: log_mu[B-1] = log mu(B) for B = 1..N; latencies() maps chain stats to ms values."""

    kind: str
    log_mu: np.ndarray

    def __init__(self, n: float, m: float, max_batch: int, compat: bool):
        self.n, self.m, self.max_batch, self.compat = n, m, max_batch, compat

    def _set_tau(self, tau: np.ndarray) -> None:
        b = np.arange(1, self.max_batch + 1, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            mu = b / tau
        bad = ~(np.isfinite(mu) & (mu > 0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise QueueingError(
                f"{self.kind} perf model: service rate mu(B={i + 1}) = {mu[i]!r} req/ms is not finite and "
                f"positive (residence time {tau[i]!r} ms); check alpha/beta/gamma/delta and token counts"
            )
        self.log_mu = np.log(mu)

    def latencies(self, st: ChainStats) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError


class V02Model(ServiceModel):
    """queue-analysis v0.2.0 / inferno optimizer: Dec(x) = a + b x, Pf(x) = g + d n x; TTFT = W + Pf(n_e)."""

    kind = "v02"

    def __init__(self, params: Mapping[str, float], n, m, max_batch, compat):
        super().__init__(n, m, max_batch, compat)
        self.alpha, self.beta = params["alpha"], params["beta"]
        self.gamma_p, self.delta_p = params["gamma"], params["delta"]
        # m-1 decode steps; v0.2.0's fix (one decode when n = 0 and m = 1) is kept in both modes,
        # since optimizer HEAD's tau = 0 there would make mu infinite (Go loops forever, B5).
        self.n_dec = 1.0 if (n == 0 and m == 1) else m - 1.0
        pf0 = self.gamma_p if n > 0 else 0.0
        self.tau_a = pf0 + self.n_dec * self.alpha
        self.tau_b = (self.delta_p * n if n > 0 else 0.0) + self.n_dec * self.beta
        b = np.arange(1, max_batch + 1, dtype=np.float64)
        self._set_tau(self.tau_a + self.tau_b * b)

    def prefill_at(self, x):
        if self.n == 0:
            return np.zeros_like(x)
        return self.gamma_p + self.delta_p * self.n * x

    def effective_concurrency(self, st: ChainStats) -> np.ndarray:
        s = st.service_time
        num, den = s - self.tau_a, self.tau_b
        if self.compat:
            # Go's EffectiveConcurrency subtracts gamma_p even when n = 0 (B10).
            cden = self.delta_p * self.n + self.beta * (self.m - 1)
            if cden > 0:
                num, den = s - self.gamma_p - self.alpha * (self.m - 1), cden
        if den <= 0:  # tau constant in B: no batch size is implied by S; use the mean batch
            return st.num_in_service.copy()
        return np.clip(num / den, 0.0, float(self.max_batch))

    def latencies(self, st):
        ne = self.effective_concurrency(st)
        pf = self.prefill_at(ne)
        itl = self.alpha + self.beta * ne
        return pf, itl, st.wait_time + pf


class OldModel(ServiceModel):
    """queue-analysis v0.3.0 ("old3", decode gamma(n + m/2)) and v0.4-v0.6 ("old", gamma(n + (m+1)/2))."""

    def __init__(self, params, n, m, max_batch, compat, *, v03: bool):
        super().__init__(n, m, max_batch, compat)
        self.kind = "old3" if v03 else "old"
        a, b, g = params["alpha"], params["beta"], params["gamma"]
        self.alpha = a
        self.delta1 = b * (n + m) / (m + 1.0) + g * (n + m / 2.0)
        self.pf_extra = (b + g) * n
        self.dec_extra = b + g * (n + (m / 2.0 if v03 else (m + 1) / 2.0))
        bs = np.arange(1, max_batch + 1, dtype=np.float64)
        t = a + bs * self.delta1
        self._set_tau(self.prefill_at(bs, t) + m * (t + self.dec_extra))

    def prefill_at(self, bb, t=None):
        if t is None:
            t = self.alpha + bb * self.delta1
        if self.n == 0:
            return np.zeros_like(t)
        return t + self.pf_extra

    def latencies(self, st):
        pf = self.prefill_at(st.num_in_service)
        itl = (st.service_time - pf) / self.m
        return pf, itl, st.wait_time + pf + itl


def _new_work(alpha, beta, gamma, n, m, c):
    """Per-request prefill work w_p(c), total work W_tot(c) and per-iteration work delta(c)."""
    w_p = (beta + gamma * (c + 1) / 2.0) * n
    w_d = beta * m + gamma * m * (n + (m + 1) / 2.0)
    w_tot = w_p + w_d
    return w_p, w_tot, w_tot / (c + m)


def new_primitives(alpha, beta, gamma, n, m, batch, *, max_num_tokens=8192.0, float32=True) -> dict:
    """v0.7 latency primitives at integer batch sizes (spec §1.3): nc, iter_time, prefill, itl, tau."""
    bb = np.atleast_1d(np.asarray(batch, dtype=np.int64))
    nc = chunk_counts(n, m, max_num_tokens or 8192.0, int(bb.max()), float32=float32)[bb]
    c = nc.astype(np.float64)
    b = bb.astype(np.float64)
    w_p, w_tot, delta = _new_work(alpha, beta, gamma, n, m, c)
    bg = np.maximum(0.0, alpha + (b - 1) * delta)
    return {
        "nc": nc,
        "iter_time": alpha + b * delta,
        "prefill": c * bg + w_p,
        "itl": bg + beta + gamma * (n + (m + 1) / 2.0),
        "tau": (c + m) * alpha + b * w_tot,
    }


class NewModel(ServiceModel):
    """queue-analysis v0.7+ chunked-prefill model (spec §1).

    compat: prefill at the rounded mean batch, nc(round(B_bar)) (Go; discontinuous, B4).
    default: prefill averaged over the in-service distribution, sum_B P(B) prefill(B, nc(B)),
    which equals Go's value whenever nc is constant and the bg >= 0 clamp is inactive, and is
    continuous in the rate.
    """

    kind = "new"

    def __init__(self, params, n, m, max_batch, compat, *, max_num_tokens: float):
        super().__init__(n, m, max_batch, compat)
        a, b, g = params["alpha"], params["beta"], params["gamma"]
        self.alpha = a
        self.nc = chunk_counts(n, m, max_num_tokens, max_batch, float32=compat)  # B = 0..N
        c = self.nc.astype(np.float64)
        self.w_p, self.w_tot, self.delta = _new_work(a, b, g, n, m, c)
        bs = np.arange(max_batch + 1, dtype=np.float64)
        self.prefill_table = c * np.maximum(0.0, a + (bs - 1) * self.delta) + self.w_p
        self._set_tau(((c + m) * a + bs * self.w_tot)[1:])

    def latencies(self, st):
        bbar = st.num_in_service
        if self.compat:
            idx = np.clip(np.floor(bbar + 0.5), 1, self.max_batch).astype(np.int64)
            c = self.nc[idx].astype(np.float64)
            pf = c * np.maximum(0.0, self.alpha + (bbar - 1) * self.delta[idx]) + self.w_p[idx]
        else:
            pf = st.p_head @ self.prefill_table[:-1] + st.p_block * self.prefill_table[-1]
        itl = (st.service_time - pf) / self.m
        return pf, itl, st.wait_time + pf + itl
