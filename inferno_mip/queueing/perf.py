"""PerfModel: one replica's queueing model (chain + service model) with analyze() and size()."""

from __future__ import annotations

import dataclasses
import math
from functools import lru_cache
from numbers import Real
from typing import Mapping

import numpy as np

from .chain import BirthDeathChain
from .chunks import DEFAULT_MAX_NUM_TOKENS
from .errors import QueueingError
from .limits import MAX_BATCH, MAX_PARAM, MAX_QUEUE, MAX_TOKENS
from .iteration import IterationModel
from .models import PARAM_KEYS, NewModel, OldModel, ServiceModel, V01Model, V02Model
from .results import Metrics, Sizing
from .rows import EPSILON, RowSet
from .sizing import STABILITY_SAFETY_FRACTION, size_models, size_rows
from .versions import PERF_MODELS

__all__ = ["PERF_MODELS", "EPSILON", "STABILITY_SAFETY_FRACTION", "PerfModel", "make_perf_model"]

_UNITS = {"ttft": "ms", "itl": "ms", "tps": "tokens/s"}


class PerfModel:
    """Performance model of one replica. Immutable; build with make_perf_model()."""

    def __init__(self, kind: str, service: ServiceModel, *, in_tokens, out_tokens, max_batch, max_queue,
                 max_num_tokens, compat, in_tokens_cv=0.0, out_tokens_cv=0.0):
        self.kind, self.service, self.compat = kind, service, compat
        self.in_tokens, self.out_tokens = in_tokens, out_tokens
        self.in_tokens_cv, self.out_tokens_cv = in_tokens_cv, out_tokens_cv
        self.max_batch, self.max_queue, self.max_num_tokens = max_batch, max_queue, max_num_tokens
        mu = np.exp(service.log_mu)
        self._lam_min = float(mu[0] * EPSILON)  # req/ms
        self._lam_max = float(mu[-1] * (1.0 - EPSILON))
        if not (0 < self._lam_min < self._lam_max and math.isfinite(self._lam_max)):
            raise QueueingError(f"{kind} perf model: empty rate range [{1000 * self._lam_min}, {1000 * self._lam_max}] req/s")
        self.chain = BirthDeathChain(service.log_mu, max_batch, max_queue)
        self._size_cache: dict = {}

    def __repr__(self) -> str:
        cvs = (f", in_cv={self.in_tokens_cv}, out_cv={self.out_tokens_cv}"
               if self.in_tokens_cv or self.out_tokens_cv else "")
        return (f"PerfModel({self.kind!r}, n={self.in_tokens}, m={self.out_tokens}{cvs}, N={self.max_batch}, "
                f"Q={self.max_queue}, compat={self.compat})")

    @property
    def rate_range(self) -> tuple[float, float]:
        """[eps mu(1), (1-eps) mu(N)] in req/s."""
        return 1000.0 * self._lam_min, 1000.0 * self._lam_max

    @property
    def max_rate(self) -> float:
        return 1000.0 * self._lam_max

    # -- evaluation -------------------------------------------------------------------------
    def _go_k1_invalid(self) -> bool:
        # B2: Go's stale validity check rejects every solve when K = N + Q = 1.
        return self.compat and self.max_batch + self.max_queue == 1

    def _evaluate(self, lam_ms: np.ndarray) -> Metrics:
        """All metrics for rates in req/ms (1-D array, > 0); no range checks."""
        st, pf, itl, ttft = self.service.latencies(self.chain.solve(lam_ms))
        ls = st.num_in_service
        return Metrics(
            throughput=1000.0 * st.throughput,
            offered_rate=1000.0 * st.lam,
            resp_time=st.resp_time,
            wait_time=st.wait_time,
            prefill_time=pf,
            itl=itl,
            ttft=ttft,
            num_in_service=ls,
            rho=np.minimum(np.maximum(ls / self.max_batch, 0.0), 1.0),
            blocking=st.blocking,
            max_rate=np.full(ls.shape, self.max_rate),
        )

    def _metric_scalar(self, name: str, lam_ms: float) -> float:
        return getattr(self._metrics_scalar(lam_ms), name)

    def _metrics_scalar(self, lam_ms: float, offered: float | None = None) -> Metrics:
        """_evaluate for one rate, with float fields (cheaper than converting a Metrics of arrays)."""
        st, pf, itl, ttft = self.service.latencies(self.chain.solve(np.array([lam_ms])))
        ls = float(st.num_in_service[0])
        return Metrics(
            throughput=1000.0 * float(st.throughput[0]),
            offered_rate=1000.0 * lam_ms if offered is None else offered,
            resp_time=float(st.resp_time[0]),
            wait_time=float(st.wait_time[0]),
            prefill_time=float(pf[0]),
            itl=float(itl[0]),
            ttft=float(ttft[0]),
            num_in_service=ls,
            rho=min(max(ls / self.max_batch, 0.0), 1.0),
            blocking=float(st.blocking[0]),
            max_rate=self.max_rate,
        )

    def analyze(self, rate) -> Metrics:
        """Metrics at offered rate(s) in req/s (scalar or 1-D array)."""
        if isinstance(rate, (float, int)) and not isinstance(rate, bool):  # fast path for scalars
            r = float(rate)
            if not (math.isfinite(r) and r > 0):
                raise QueueingError(f"request rate must be finite and > 0 req/s, got {rate!r}")
            self._check_rates(r)
            return self._metrics_scalar(r / 1000.0, r)
        arr = np.asarray(rate, dtype=np.float64)
        if arr.ndim > 1:
            raise QueueingError(f"rate must be a scalar or 1-D array, got shape {arr.shape}")
        flat = np.atleast_1d(arr)
        if flat.size == 0:
            raise QueueingError("rate array is empty")
        if not np.all(np.isfinite(flat) & (flat > 0)):
            bad = flat[~(np.isfinite(flat) & (flat > 0))][0]
            raise QueueingError(f"request rate must be finite and > 0 req/s, got {bad!r}")
        self._check_rates(float(flat.max()))
        if arr.ndim == 0:
            return self._metrics_scalar(float(arr) / 1000.0, float(arr))
        return self._evaluate(flat / 1000.0)

    def _check_rates(self, max_rate_asked: float) -> None:
        if self._go_k1_invalid():
            raise QueueingError("invalid model: K = N + Q = 1 is rejected by Go's stale validity check (B2)")
        if self.compat and self.kind in ("v01", "v02", "old3") and max_rate_asked > self.max_rate:
            raise QueueingError(
                f"rate {max_rate_asked!r} req/s exceeds max rate {self.max_rate!r} req/s ({self.kind}, compat)"
            )

    # -- sizing ---------------------------------------------------------------------------------
    def size(self, ttft: float = 0.0, itl: float = 0.0, tps: float = 0.0) -> Sizing:
        """Max per-replica rate meeting the targets (TTFT ms, ITL ms, TPS tokens/s; 0 = not set).

        Raises InfeasibleTarget if a target cannot be met at any rate. Same search as
        sizing.size_models (which sizes many models at once).
        """
        targets = {"ttft": ttft, "itl": itl, "tps": tps}
        for name, v in targets.items():
            if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(v) or v < 0:
                raise QueueingError(f"{name} target must be finite and >= 0 ({_UNITS[name]}), got {v!r}")
        res = size_models([self], [(ttft, itl, tps)])[0]
        if isinstance(res, Exception):
            raise res
        return dataclasses.replace(res, target_rates=dict(res.target_rates))

    def _remember(self, key: tuple, result) -> None:
        """Cache a sizing result (or InfeasibleTarget) for targets key; bounded, pure cache."""
        if len(self._size_cache) < 256:
            self._size_cache[key] = result

    def _size_default(self, ttft: float, itl: float, tps: float) -> Sizing:
        """Uncached default-mode sizing (for timing)."""
        return size_rows(self._rowset(), ttft, itl, tps)[0]

    def _rowset(self) -> RowSet:
        return RowSet([self], [0], [self.max_batch], [self.max_queue])


def _check_number(name: str, v, *, lo: float, strict: bool = False, hi: float = math.inf) -> float:
    if isinstance(v, bool) or not isinstance(v, Real):
        raise QueueingError(f"{name} must be a number, got {v!r}")
    f = float(v)
    if not math.isfinite(f) or f < lo or (strict and f <= lo):
        raise QueueingError(f"{name} must be finite and {'>' if strict else '>='} {lo}, got {v!r}")
    if f > hi:
        raise QueueingError(f"{name} {v!r} exceeds the supported maximum {hi:,.0f}")
    return f


def _check_int(name: str, v, *, lo: int, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(float(v)) or float(v) != int(v):
        raise QueueingError(f"{name} must be an integer, got {v!r}")
    if int(v) < lo:
        raise QueueingError(f"{name} must be >= {lo}, got {v!r}")
    if hi is not None and int(v) > hi:
        raise QueueingError(f"{name} {v!r} exceeds the supported maximum {hi:,}")
    return int(v)


@lru_cache(maxsize=8192)
def _build(kind, params: tuple, n, m, max_batch, max_queue, max_num_tokens, compat, in_cv, out_cv) -> PerfModel:
    p = dict(params)
    if kind == "v01":
        service = V01Model(p, n, m, max_batch, compat)
    elif kind == "v02":
        service = V02Model(p, n, m, max_batch, compat)
    elif kind in ("old3", "old"):
        service = OldModel(p, n, m, max_batch, compat, v03=kind == "old3")
    elif kind == "iteration":
        service = IterationModel(p, n, m, max_batch, compat, max_num_tokens=max_num_tokens, in_cv=in_cv,
                                 out_cv=out_cv)
    else:
        service = NewModel(p, n, m, max_batch, compat, max_num_tokens=max_num_tokens)
    return PerfModel(kind, service, in_tokens=n, out_tokens=m, max_batch=max_batch, max_queue=max_queue,
                     max_num_tokens=max_num_tokens, compat=compat, in_tokens_cv=in_cv, out_tokens_cv=out_cv)


def make_perf_model(kind: str, params: Mapping[str, float], *, in_tokens: float, out_tokens: float,
                    max_batch: int, max_queue: int, max_num_tokens: float = 8192, compat: bool = False,
                    in_tokens_cv: float | None = None, out_tokens_cv: float | None = None) -> PerfModel:
    """Build (or fetch from cache) the perf model of one replica; raises QueueingError on bad input.

    kind: "v01" (alpha, beta; decode only), "v02" (alpha, beta, gamma, delta), "old3", "old", "new",
    "iteration" (alpha, beta, gamma). in/out_tokens_cv: coefficients of variation of the token counts
    (None = 0, equal lengths); only "iteration" uses them (the others evaluate the work at the mean).
    """
    if kind not in PERF_MODELS:
        raise QueueingError(f"unknown perf model kind {kind!r}; expected one of {PERF_MODELS}")
    if not isinstance(params, Mapping):
        raise QueueingError(f"params must be a mapping, got {type(params).__name__}")
    keys = PARAM_KEYS[kind]
    missing = [k for k in keys if k not in params]
    if missing:
        raise QueueingError(f"{kind} perf model params missing {missing} (need {list(keys)})")
    vals = tuple((k, _check_number(f"param {k}", params[k], lo=0.0, hi=MAX_PARAM)) for k in keys)
    if all(v == 0 for _, v in vals):
        raise QueueingError(f"{kind} perf model params are all zero: {dict(vals)}")
    n = _check_number("in_tokens", in_tokens, lo=0.0, hi=MAX_TOKENS)
    m = _check_number("out_tokens", out_tokens, lo=1.0, hi=MAX_TOKENS)
    if kind in ("v01", "v02") and compat:  # Go's optimizer and REST v0.1 use int token counts
        n, m = float(int(n)), float(int(m))
    big_n = _check_int("max_batch", max_batch, lo=1, hi=MAX_BATCH)
    q = _check_int("max_queue", max_queue, lo=0, hi=MAX_QUEUE)
    mt = _check_number("max_num_tokens", max_num_tokens, lo=0.0) or DEFAULT_MAX_NUM_TOKENS
    cvs = [0.0 if v is None else _check_number(name, v, lo=0.0)
           for name, v in (("in_tokens_cv", in_tokens_cv), ("out_tokens_cv", out_tokens_cv))]
    if kind != "iteration":
        cvs = [0.0, 0.0]  # one cached model per input that matters
    return _build(kind, vals, n, m, big_n, q, mt, bool(compat), *cvs)
