"""Optimal concurrency (queue-analysis v0.8, spec §2.5): the smallest max batch size M* with near-peak
SLO-feasible throughput.

f(M) = Size(targets).throughput of the replica with max batch M (0 where the targets are infeasible).
mu(B) does not depend on N, so every M shares one chain prefix: throughput_curve() sizes all
M = 1..M_max in one vectorised pass (exact), and optimal_concurrency() takes
M* = the smallest M with f(M) >= (1 - eps/2) max_M f (default), or runs Go's formula-guided onset
search with its probe sequence (compat: anchor f(M_max), closed-form brackets M_ITL/M_TPF, at most
6 bisection probes, a confirmatory probe).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .errors import QueueingError
from .results import Sizing
from .sizing import size_specs

if TYPE_CHECKING:  # pragma: no cover
    from .perf import PerfModel

__all__ = ["Curve", "Concurrency", "throughput_curve", "throughput_curves", "optimal_concurrency",
           "closed_form_brackets", "DEFAULT_EPSILON", "DEFAULT_MAX_ITERS"]

DEFAULT_EPSILON = 0.02  # Go DefaultOnsetEpsilon: near-peak means >= (1 - eps/2) of the peak
DEFAULT_MAX_ITERS = 6  # Go DefaultOnsetMaxIters


@dataclass(frozen=True)
class Curve:
    """SLO-feasible throughput f(M) (req/s, 0 where infeasible) for M = max_batch[0..]."""

    max_batch: np.ndarray  # 1..M_max
    throughput: np.ndarray  # f(M), req/s
    rate: np.ndarray  # lambda*(M), req/s (0 where infeasible)
    sizings: tuple  # Sizing or InfeasibleTarget per M

    @property
    def peak_batch(self) -> int:
        """Exact argmax of f (smallest M on ties); 1 if infeasible everywhere."""
        return int(self.max_batch[int(np.argmax(self.throughput))])

    @property
    def peak_throughput(self) -> float:
        return float(self.throughput.max())

    def onset(self, epsilon: float = DEFAULT_EPSILON) -> int:
        """Smallest M with f(M) >= (1 - eps/2) max f; the smallest M if infeasible everywhere."""
        peak = self.peak_throughput
        if not peak > 0:
            return int(self.max_batch[0])
        return int(self.max_batch[int(np.argmax(self.throughput >= (1.0 - epsilon / 2.0) * peak))])

    def sizing(self, m: int):
        return self.sizings[int(m) - int(self.max_batch[0])]


@dataclass(frozen=True)
class Concurrency:
    """Result of optimal_concurrency (Go's ConcurrencyResult plus the exact peak)."""

    concurrency: int  # M*
    throughput: float  # f(M*), req/s
    feasible: bool
    m_itl: int  # closed-form ITL bracket
    m_tpf: int  # closed-form TTFT-prefill bracket
    anchor_throughput: float  # f(M_max)
    calls: int  # oracle calls with f > 0 (Go counts only these)
    probes: tuple[int, ...]  # probe sequence (onset search; empty for the exact curve)
    method: str  # "onset" (Go) or "exact"
    sizing: Sizing | None = None  # Size() at M*
    curve: Curve | None = None  # exact method only
    peak_batch: int | None = None  # exact method only: argmax_M f
    peak_throughput: float | None = None


def _queues(model: "PerfModel", ms: np.ndarray, max_queue, queue_ratio) -> np.ndarray:
    if queue_ratio is not None:
        return int(queue_ratio) * ms
    return np.full(ms.shape, model.max_queue if max_queue is None else int(max_queue), dtype=np.int64)


def throughput_curves(models: Sequence["PerfModel"], targets: Sequence[tuple[float, float, float]], *,
                      m_max=None, max_queue=None, queue_ratio=None) -> list[Curve]:
    """f(M) for M = 1..m_max of every model (m_max <= its max_batch; default max_batch), in one pass.

    Queue per M: queue_ratio * M if queue_ratio is set, else max_queue, else the model's max_queue.
    Each of m_max / max_queue / queue_ratio may be a scalar or one value per model.
    """
    k = len(models)

    def per_model(v):
        return list(v) if isinstance(v, (list, tuple, np.ndarray)) else [v] * k

    tops, mqs, ratios = per_model(m_max), per_model(max_queue), per_model(queue_ratio)
    mi, ns, qs, tg, spans = [], [], [], [], []
    offset = 0
    for i, model in enumerate(models):
        top = model.max_batch if tops[i] is None else int(tops[i])
        if not 1 <= top <= model.max_batch:
            raise QueueingError(f"m_max must be in [1, max_batch={model.max_batch}], got {tops[i]!r}")
        ms = np.arange(1, top + 1, dtype=np.int64)
        spans.append((offset, top))
        offset += top
        mi.append(np.full(top, i))
        ns.append(ms)
        qs.append(_queues(model, ms, mqs[i], ratios[i]))
        tg.append(np.tile(np.asarray(targets[i], dtype=np.float64), (top, 1)))
    results = size_specs(models, np.concatenate(mi), np.concatenate(ns), np.concatenate(qs), np.concatenate(tg))
    curves = []
    for start, top in spans:
        res = results[start:start + top]
        thr = np.array([r.throughput if isinstance(r, Sizing) else 0.0 for r in res])
        rate = np.array([r.rate if isinstance(r, Sizing) else 0.0 for r in res])
        curves.append(Curve(max_batch=np.arange(1, top + 1), throughput=thr, rate=rate, sizings=tuple(res)))
    return curves


def throughput_curve(model: "PerfModel", ttft: float = 0.0, itl: float = 0.0, tps: float = 0.0, *,
                     m_max: int | None = None, max_queue: int | None = None,
                     queue_ratio: int | None = None) -> Curve:
    """f(M) for M = 1..m_max (default: the model's max_batch) with the model's mode (compat or default)."""
    return throughput_curves([model], [(ttft, itl, tps)], m_max=m_max, max_queue=max_queue,
                             queue_ratio=queue_ratio)[0]


def _largest_feasible(metric: np.ndarray, target: float, compat: bool) -> int:
    """Largest B (1-based) with metric(B) <= target, or 1 if none (Go largestFeasibleBatch)."""
    if compat:
        ok = metric.astype(np.float32) <= np.float32(target)
    else:
        ok = metric <= target
    hits = np.flatnonzero(ok)
    return int(hits[-1]) + 1 if hits.size else 1


def closed_form_brackets(model: "PerfModel", ttft: float, itl: float, m_max: int) -> tuple[int, int]:
    """(M_ITL, M_TPF): largest B <= m_max with closed-form itl(B) <= ITL and prefill(B) <= TTFT."""
    prefill, itl_b = model.service.primitives()
    return (_largest_feasible(itl_b[:m_max], itl, model.compat),
            _largest_feasible(prefill[:m_max], ttft, model.compat))


def optimal_concurrency(model: "PerfModel", ttft: float = 0.0, itl: float = 0.0, tps: float = 0.0, *,
                        m_min: int = 1, m_max: int | None = None, epsilon: float = DEFAULT_EPSILON,
                        max_iters: int = DEFAULT_MAX_ITERS, method: str | None = None) -> Concurrency:
    """M* for `model` (its in/out tokens, params, max_queue; its max_batch is the default m_max).

    method "onset" (default in compat) is Go's ConcurrencyOptimizer.Find; "exact" (default
    otherwise) sizes every M and returns the smallest near-peak M and the exact argmax.
    """
    m_max = model.max_batch if m_max is None else int(m_max)
    if not 1 <= m_min <= m_max <= model.max_batch:
        raise QueueingError(f"need 1 <= m_min <= m_max <= max_batch={model.max_batch}, got {m_min}, {m_max}")
    if not 0 < epsilon < 2:
        raise QueueingError(f"epsilon must be in (0, 2), got {epsilon!r}")
    method = method or ("onset" if model.compat else "exact")
    m_itl, m_tpf = closed_form_brackets(model, ttft, itl, m_max)
    if method == "exact":
        curve = throughput_curve(model, ttft, itl, tps, m_max=m_max)
        sub = curve.throughput[m_min - 1:]
        peak = float(sub.max())
        star = m_min + (int(np.argmax(sub >= (1.0 - epsilon / 2.0) * peak)) if peak > 0 else 0)
        f_star = float(curve.throughput[star - 1])
        sizing = curve.sizing(star)
        return Concurrency(concurrency=star, throughput=f_star, feasible=f_star > 0, m_itl=m_itl, m_tpf=m_tpf,
                           anchor_throughput=float(curve.throughput[-1]), calls=int((sub > 0).sum()), probes=(),
                           method="exact", sizing=sizing if isinstance(sizing, Sizing) else None, curve=curve,
                           peak_batch=m_min + int(np.argmax(sub)), peak_throughput=peak)
    if method != "onset":
        raise QueueingError(f"unknown method {method!r}; expected 'onset' or 'exact'")
    return _onset_search(model, ttft, itl, tps, m_min, m_max, epsilon, max_iters, m_itl, m_tpf)


def _onset_search(model, ttft, itl, tps, m_min, m_max, epsilon, max_iters, m_itl, m_tpf) -> Concurrency:
    """Go's formula-guided onset search, float32 comparisons as in Go."""
    memo: dict = {}
    probes: list[int] = []
    calls = 0

    def probe(m: int) -> float:
        nonlocal calls
        probes.append(m)
        if m not in memo:
            memo[m] = size_specs([model], [0], [m], [model.max_queue], np.array([[ttft, itl, tps]]))[0]
        res = memo[m]
        f = float(np.float32(res.throughput)) if isinstance(res, Sizing) else 0.0
        calls += f > 0
        return f

    f_anchor = probe(m_max)
    if f_anchor <= 0:
        return Concurrency(concurrency=m_min, throughput=0.0, feasible=False, m_itl=m_itl, m_tpf=m_tpf,
                           anchor_throughput=0.0, calls=calls, probes=tuple(probes), method="onset")
    eps32 = np.float32(epsilon)
    threshold = (np.float32(1) - eps32 / np.float32(2)) * np.float32(f_anchor)
    lo = max(m_min, min(m_itl, m_tpf))
    hi = max(lo, min(m_max, max(3 * max(m_itl, m_tpf), lo + 1), m_max))
    it = 0
    while lo < hi and it < max_iters:
        mid = (lo + hi) // 2
        if np.float32(probe(mid)) >= threshold:
            hi = mid
        else:
            lo = mid + 1
        it += 1
    star = max(m_min, min(m_max, hi))
    f_star = probe(star)
    res = memo[star]
    return Concurrency(concurrency=star, throughput=f_star, feasible=f_star > 0, m_itl=m_itl, m_tpf=m_tpf,
                       anchor_throughput=f_anchor, calls=calls, probes=tuple(probes), method="onset",
                       sizing=res if isinstance(res, Sizing) else None)
