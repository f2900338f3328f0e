"""Window statistics as vLLM exports them, from a replica's log and live state.

Each observation belongs to the window in which vLLM would record it: TTFT when the first token is emitted,
each inter-token gap when its token is emitted, token counts and per-request latencies at completion, arrivals
(offered, rejected) when they arrive. Windows are half-open, [t0, t1). Times in seconds inside; the summary
is in milliseconds. ITL mean and p95 are over every inter-token gap (vLLM's time-per-output-token histogram),
so long requests weigh by their tokens; the p95 of TTFT interpolates linearly, that of ITL is the smallest gap
with 95 % of the gaps at or below it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .replica import Replica

NAN = math.nan


@dataclass(frozen=True)
class Sample:
    """Raw observations of one window (one replica, or several merged)."""

    span: float
    offered: int
    rejected: int
    ttft: np.ndarray          # s, requests whose first token fell in the window
    gaps: np.ndarray          # s, inter-token gaps emitted in the window ...
    gap_weights: np.ndarray   # ... and how many tokens had each gap
    done_ttft: np.ndarray     # s, requests completed in the window: their TTFT,
    done_itl: np.ndarray      # s, their own mean ITL (NaN with one output token),
    done_in: np.ndarray       # their prompt and output tokens
    done_out: np.ndarray
    done_wait: np.ndarray     # s, their time from arrival to admission
    running_area: float       # request-seconds in the batch
    waiting_area: float       # request-seconds waiting

    @staticmethod
    def merge(samples: list[Sample], span: float) -> Sample:
        def cat(name):
            arrays = [getattr(s, name) for s in samples]
            return np.concatenate(arrays) if arrays else np.empty(0)
        return Sample(span, sum(s.offered for s in samples), sum(s.rejected for s in samples),
                      cat("ttft"), cat("gaps"), cat("gap_weights"), cat("done_ttft"), cat("done_itl"),
                      cat("done_in"), cat("done_out"), cat("done_wait"), sum(s.running_area for s in samples),
                      sum(s.waiting_area for s in samples))

    def summary(self) -> dict[str, float]:
        """Rates per second, latencies in ms (NaN when nothing was observed), time-averaged counts."""
        span = self.span
        done = len(self.done_in)
        w = self.gap_weights.sum()
        return {
            "offered_rate": self.offered / span,
            "completed_rate": done / span,
            "ttft_mean": 1000.0 * float(np.mean(self.ttft)) if len(self.ttft) else NAN,
            "ttft_p95": 1000.0 * float(np.quantile(self.ttft, 0.95)) if len(self.ttft) else NAN,
            "itl_mean": 1000.0 * float(self.gaps @ self.gap_weights / w) if w > 0 else NAN,
            "itl_p95": 1000.0 * weighted_quantile(self.gaps, self.gap_weights, 0.95) if w > 0 else NAN,
            "running_mean": self.running_area / span,
            "waiting_mean": self.waiting_area / span,
            "rejected": self.rejected,
            "completed": done,
            "in_tokens_mean": float(np.mean(self.done_in)) if done else NAN,
            "out_tokens_mean": float(np.mean(self.done_out)) if done else NAN,
            "in_tokens_cv": _cv(self.done_in),
            "out_tokens_cv": _cv(self.done_out),
        }

    def within_slo(self, itl_ms: float, ttft_ms: float) -> float:
        """Fraction of completed requests whose TTFT and own mean ITL meet the targets (0 = no target)."""
        if not len(self.done_in):
            return NAN
        ok = np.ones(len(self.done_in), dtype=bool)
        if ttft_ms > 0:
            ok &= self.done_ttft * 1000.0 <= ttft_ms
        if itl_ms > 0:
            ok &= ~(self.done_itl * 1000.0 > itl_ms)  # one output token: no gaps, meets any ITL target
        return float(ok.mean())


def _cv(x: np.ndarray) -> float:
    if not len(x):
        return NAN
    m = float(np.mean(x))
    return float(np.std(x) / m) if m > 0 else NAN


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """Smallest value whose cumulative weight reaches q of the total (inverted CDF, as a histogram would)."""
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(weights[order])
    i = int(np.searchsorted(cum, q * cum[-1], side="left"))
    return float(values[order][min(i, len(cum) - 1)])


def replica_sample(replica: Replica, t0: float, t1: float) -> Sample:
    """Observations of ``replica`` in [t0, t1); the replica must have been advanced to t1."""
    done = replica.log.table("done")
    i0 = int(np.searchsorted(done[:, 3], t0, side="left"))  # completions before t0 cannot touch the window
    live = replica.live_requests()
    rows = np.concatenate([done[i0:], np.array([(r.arrival, r.admitted, r.first_token, np.inf, r.n, r.m)
                                                for r in live]).reshape(-1, done.shape[1])])
    arrival, admitted, first, fin, n_in, n_out = rows.T

    rejected = np.frombuffer(replica.log.rejected) if len(replica.log.rejected) else np.empty(0)
    n_rej = int(np.searchsorted(rejected, t1, "left") - np.searchsorted(rejected, t0, "left"))
    offered = int(np.count_nonzero((arrival >= t0) & (arrival < t1))) + n_rej

    in_ttft = (first >= t0) & (first < t1)
    ok = (fin >= t0) & (fin < t1)
    with np.errstate(invalid="ignore", divide="ignore"):
        done_itl = np.where(n_out[ok] > 1, (fin[ok] - first[ok]) / (n_out[ok] - 1), np.nan)
    run_area = float(np.clip(np.minimum(fin, t1) - np.maximum(admitted, t0), 0, None).sum())
    wait_area = float(np.clip(np.minimum(admitted, t1) - np.maximum(arrival, t0), 0, None).sum())
    gaps, weights = _gaps(replica, t0, t1)
    return Sample(t1 - t0, offered, n_rej, first[in_ttft] - arrival[in_ttft], gaps, weights,
                  first[ok] - arrival[ok], done_itl, n_in[ok], n_out[ok], admitted[ok] - arrival[ok],
                  run_area, wait_area)


def _gaps(replica: Replica, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray]:
    """Inter-token gaps (iteration durations, one per decoding request) of iterations ending in [t0, t1)."""
    runs = replica.log.table("runs")
    lo = max(int(np.searchsorted(runs[:, 0], t0, "right")) - 1, 0)  # runs do not overlap: one may straddle t0
    hi = int(np.searchsorted(runs[:, 0], t1, "left"))
    runs = runs[lo:hi]
    block = replica.live_block()
    if block is not None and block[0] < t1:
        runs = np.vstack([runs, block])
    s, a, b, c, d = runs.T
    c = c.astype(np.int64)
    if not c.sum():
        return np.empty(0), np.empty(0)
    idx = np.repeat(np.arange(len(c)), c)
    j = np.arange(len(idx)) - np.repeat(np.cumsum(c) - c, c) + 1.0
    ai, bi = a[idx], b[idx]
    end = s[idx] + j * ai + bi * j * (j + 1) / 2
    keep = (end >= t0) & (end < t1)
    return (ai + bi * j)[keep], d[idx][keep]
