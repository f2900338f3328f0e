"""Vectorised sizing: the max rate per replica meeting TTFT/ITL targets, for many rows at once.

size_rows() runs one search for every row of a RowSet in lock-step, so a whole candidate table
(or every batch size M of a concurrency curve) costs a few dozen numpy passes, not thousands of
scalar chain solves. Default: first crossing of each target on a log-rate grid, refined by a
bracketing Illinois (regula falsi) iteration in log rate; the rate returned meets its target
(fixes B3). Compat: Go's BinarySearch (float32 x, 1e-6 relative y tolerance, end-point
direction inference), run in lock-step (spec §2.1-2.2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from .errors import InfeasibleTarget
from .results import Metrics, Sizing
from .rows import RowSet
from .search import GO_EPSILON, GO_MAX_ITERATIONS

if TYPE_CHECKING:  # pragma: no cover
    from .perf import PerfModel

__all__ = ["size_rows", "size_specs", "size_models", "analyze_models", "STABILITY_SAFETY_FRACTION"]

STABILITY_SAFETY_FRACTION = 0.1  # Go: lambda*_TPS = (1 - 0.1) lambda_max
GRID = 8  # rates per row in the bracketing grid (default mode)
XTOL = 1e-10  # bracket width in log rate (relative rate precision)
LOPSIDED = 4.0  # residual ratio above which the refinement bisects instead of taking a secant step
GTOL = 1e-12  # or: the metric at the feasible end is within this relative distance of the target
MAX_ROUNDS = 4  # re-searches below another root when a non-monotone metric is violated there
_LATENCY = ("ttft", "itl")
_ORDER = ("ttft", "itl", "tps")


def size_rows(rs: RowSet, ttft, itl, tps) -> list:
    """Sizing (or InfeasibleTarget) per row; targets are per-row arrays (0 = not set)."""
    r = len(rs)
    targets = {k: np.broadcast_to(np.asarray(v, dtype=np.float64), (r,)).copy()
               for k, v in (("ttft", ttft), ("itl", itl), ("tps", tps))}
    if rs.compat:
        rates, errors = _compat_rates(rs, targets)
        final = None
    else:
        rates, errors, final = _default_rates(rs, targets)
    ok = np.array([e is None for e in errors], dtype=bool)
    lam = np.minimum(np.minimum(rates["ttft"], rates["itl"]), rates["tps"])
    idx = np.flatnonzero(ok)
    if final is None:
        final = [None] * r
        for i, m in zip(idx.tolist(), rs.metrics_list(rs.evaluate(idx, lam[idx]))):
            final[i] = m
    out = list(errors)
    lam_l, lam_max = lam.tolist(), rs.lam_max.tolist()
    rate_l = [rates[k].tolist() for k in _ORDER]
    set_l = [(targets[k] > 0).tolist() for k in _ORDER]
    for i in idx.tolist():
        li = lam_l[i]
        binding = "none"
        if li < lam_max[i]:
            binding = next(k for k, rk, sk in zip(_ORDER, rate_l, set_l) if sk[i] and rk[i] == li)
        metrics = final[i]
        out[i] = Sizing(rate=1000.0 * li, throughput=metrics.throughput, binding=binding, metrics=metrics,
                        target_rates={"ttft": 1000.0 * rate_l[0][i], "itl": 1000.0 * rate_l[1][i],
                                      "tps": 1000.0 * rate_l[2][i]})
    return out


# ------------------------------------------------------------------------------------ default
def _default_rates(rs: RowSet, targets: dict):
    r = len(rs)
    lo, hi = rs.lam_min, rs.lam_max
    rates = {k: hi.copy() for k in _ORDER}
    errors: list = [None] * r
    rs.reserve(GRID * r)
    upper = hi.copy()
    active = np.arange(r)
    final: list = [None] * r
    for _ in range(MAX_ROUNDS):
        if active.size == 0:
            break
        t = np.linspace(0.0, 1.0, GRID)
        llo, lup = np.log(lo[active]), np.log(upper[active])
        xs = np.exp(llo[:, None] + t[None, :] * (lup - llo)[:, None])
        xs[:, 0], xs[:, -1] = lo[active], upper[active]
        grid = rs.evaluate(np.repeat(active, GRID), xs.ravel(), rep=GRID)
        brackets = []  # (name, local rows, target, xa, xb, fa, fb) of every crossing to refine
        for name in _LATENCY:
            tgt = targets[name][active]
            vals = grid.metric(name).reshape(active.size, GRID)
            above = ~(vals <= tgt[:, None]) & (tgt > 0)[:, None]
            first = np.argmax(above, axis=1)
            has = above.any(axis=1)
            for j in np.flatnonzero(has & (first == 0)).tolist():
                i = int(active[j])
                if errors[i] is None:
                    errors[i] = _infeasible(rs, i, name, float(tgt[j]), float(np.nanmin(vals[j])))
            need = np.flatnonzero(has & (first > 0))
            f = first[need]
            brackets.append((name, need, tgt[need], xs[need, f - 1], xs[need, f], vals[need, f - 1], vals[need, f]))
        is_ttft = np.concatenate([np.full(b[1].size, b[0] == "ttft") for b in brackets])
        local = np.concatenate([b[1] for b in brackets])
        if local.size:
            root = _refine(rs, active[local], is_ttft, *(np.concatenate([b[k] for b in brackets]) for k in range(2, 7)))
            for name, flag in (("ttft", True), ("itl", False)):
                sel = is_ttft == flag
                rows = active[local[sel]]
                rates[name][rows] = np.minimum(rates[name][rows], root[sel])
        active = np.array([i for i in active.tolist() if errors[i] is None], dtype=np.int64)
        active = _verify(rs, active, rates, targets, upper, final)
    for i in active.tolist():  # pragma: no cover - the grid always brackets a feasible rate
        errors[i] = InfeasibleTarget(f"size(): no rate meets the targets ({rs.models[rs.mi[i]]!r})")
    return rates, errors, final


ULP_SLACK = 1e-9  # a violation this small is float noise between evaluations, not a non-monotone metric


def _verify(rs: RowSet, active, rates: dict, targets: dict, upper, final: list):
    """Evaluate every row at lambda = min(rates); keep the Metrics of rows meeting all targets.

    Rows that miss a target by float noise step their rate down (a few ulps, then further) and retry; rows
    that miss it for real (a non-monotone metric below another root) are returned for a
    re-search below lambda.
    """
    for attempt in range(8):
        if active.size == 0:
            break
        lam = np.minimum(rates["ttft"][active], rates["itl"][active])
        ev = rs.evaluate(active, lam)
        good = np.ones(active.size, dtype=bool)
        noise = np.ones(active.size, dtype=bool)
        bad = {}
        for name in _LATENCY:
            tgt = targets[name][active]
            val = ev.metric(name)
            miss = (tgt > 0) & ~(val <= tgt)
            bad[name] = miss
            good &= ~miss
            noise &= ~miss | (val <= tgt * (1.0 + ULP_SLACK))
        ok = np.flatnonzero(good)
        for i, m in zip(active[ok].tolist(), rs.metrics_list(ev, ok)):
            final[i] = m
        for name in _LATENCY:
            rows = active[bad[name] & noise]
            # a few ulps first; where the metric is nearly flat in the rate, ulps do not move it: step further
            step = min(1e-13 * 100.0 ** attempt, 1e-3)
            rates[name][rows] = np.minimum(rates[name][rows], lam[bad[name] & noise]) * (1.0 - step)
        real = ~good & ~noise
        upper[active[real]] = lam[real]
        retry = active[~good & noise]
        if retry.size == 0:
            return active[real]
        active = np.concatenate((retry, active[real]))
        if real.any():  # re-search those first; the noise rows are re-verified with them later
            return active
    return active


def _refine(rs: RowSet, rows, is_ttft, tgt, xa, xb, fa, fb) -> np.ndarray:
    """Largest rate in [xa, xb] (metric(xa) <= tgt < metric(xb)) up to XTOL in log rate, or with
    metric within GTOL (relative) below tgt; the rate returned always meets tgt.

    Regula falsi (Illinois) on (log rate, log metric), all brackets in lock-step: log-log is
    near-linear even where TTFT explodes towards saturation. The metric is TTFT where is_ttft,
    else ITL. Bisects when a step leaves the bracket, and after 60 steps.
    """
    ua, ub = np.log(xa), np.log(xb)
    ltgt = np.log(tgt)
    ga, gb = _log(fa) - ltgt, _log(fb) - ltgt
    xa = xa.copy()
    side = np.zeros(rows.size, dtype=np.int8)
    for it in range(200):
        live = np.flatnonzero((ub - ua > XTOL) & (ga < -GTOL))
        if live.size == 0:
            break
        a, b, fa_, fb_ = ua[live], ub[live], ga[live], gb[live]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = a - fa_ * (b - a) / (fb_ - fa_)
        # bisect when a step leaves the bracket, or the residuals are very lopsided (a secant step
        # would crawl along the steep side, e.g. TTFT exploding towards saturation), and after 60 steps
        lopsided = (fb_ > -LOPSIDED * fa_) | (-fa_ > LOPSIDED * fb_)
        bad = ~((u > a) & (u < b)) | (lopsided & (it < 2)) | (it >= 60)
        u = np.where(bad, 0.5 * (a + b), u)
        x = np.exp(u)
        ev = rs.evaluate(rows[live], x)
        g = _log(np.where(is_ttft[live], ev.ttft, ev.itl)) - ltgt[live]
        left = g <= 0
        li, ri = live[left], live[~left]
        ua[li], ga[li], xa[li] = u[left], g[left], x[left]
        ub[ri], gb[ri] = u[~left], g[~left]
        # Illinois: halve the stale end's residual when the same end moves twice
        gb[li] = np.where(side[li] == -1, 0.5 * gb[li], gb[li])
        ga[ri] = np.where(side[ri] == 1, 0.5 * ga[ri], ga[ri])
        side[li], side[ri] = -1, 1
    return xa


def _log(v: np.ndarray) -> np.ndarray:
    """log of a latency, monotone and finite (latencies <= 0 map far below any target)."""
    return np.log(np.maximum(v, 1e-300))


def _infeasible(rs: RowSet, i: int, name: str, target: float, best: float) -> InfeasibleTarget:
    m = rs.models[rs.mi[i]]
    return InfeasibleTarget(
        f"{name.upper()} target {target} ms cannot be met at any rate: best achievable {best:.6g} ms "
        f"({m.kind}, N={int(rs.n[i])}, n={m.in_tokens}, m={m.out_tokens})")


# ------------------------------------------------------------------------------------ compat
def _f32(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32).astype(np.float64)


def _within(x, v, buggy: bool):
    """Go WithinTolerance; buggy is v0.1.0's |x - v/v| <= tol (B10)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        close = np.abs(x - 1.0) <= GO_EPSILON if buggy else np.abs((x - v) / v) <= GO_EPSILON
    return (x == v) | ((v != 0) & close)


def _compat_rates(rs: RowSet, targets: dict):
    """Go's Size: BinarySearch per latency target, lambda*_TPS = 0.9 lambda_max (B3, B7)."""
    r = len(rs)
    hi64 = rs.lam_max
    rates = {"ttft": hi64.copy(), "itl": hi64.copy(),
             "tps": np.where(targets["tps"] > 0, (1.0 - STABILITY_SAFETY_FRACTION) * hi64, hi64)}
    errors: list = [None] * r
    for i in np.flatnonzero(rs.k1_invalid).tolist():
        errors[i] = InfeasibleTarget("invalid model: K = N + Q = 1 is rejected by Go's stale validity check (B2)")
    valid = ~np.asarray(rs.k1_invalid, dtype=bool)
    sel = [np.flatnonzero((targets[name] > 0) & valid) for name in _LATENCY]  # pairs: TTFT rows, then ITL rows
    if sel[0].size + sel[1].size == 0:
        return rates, errors
    rows = np.concatenate(sel)
    is_ttft = np.concatenate((np.ones(sel[0].size, dtype=bool), np.zeros(sel[1].size, dtype=bool)))
    y = np.concatenate([targets[name][s] for name, s in zip(_LATENCY, sel)])
    buggy = rs.kind in ("v01", "v02")  # both link v0.1.0 utils (B10)
    rs.reserve(rows.size)
    # A row with both targets runs two searches; while they probe the same rate, evaluate it once.
    partner = np.full(rows.size, -1, dtype=np.int64)  # ITL pair -> TTFT pair of the same row
    has_t = np.zeros(len(rs), dtype=bool)
    has_t[sel[0]] = True
    pos_t = np.zeros(len(rs), dtype=np.int64)
    pos_t[sel[0]] = np.arange(sel[0].size)
    both = has_t[sel[1]]
    partner[sel[0].size + np.flatnonzero(both)] = pos_t[sel[1][both]]
    where_ev = np.empty(rows.size, dtype=np.int64)
    x_at = np.empty(rows.size)

    def f(live, x):
        """TTFT or ITL of pairs live at rates x; an ITL pair probing its TTFT partner's rate reuses that evaluation."""
        x_at.fill(np.nan)
        x_at[live] = x
        pl = partner[live]
        dup = pl >= 0
        dup[dup] = x_at[pl[dup]] == x[dup]
        own = ~dup
        evl = live[own]
        ev = rs.evaluate(rows[evl], x[own])
        where_ev[evl] = np.arange(evl.size)
        pos = where_ev[live]
        pos[dup] = where_ev[pl[dup]]
        return np.where(is_ttft[live], ev.ttft[pos], ev.itl[pos])

    lo, hi = _f32(rs.lam_min[rows]), _f32(hi64[rows])
    everything = np.arange(rows.size)
    y0, y1 = f(everything, lo), f(everything, hi)
    x = lo.copy()
    ind = np.zeros(rows.size, dtype=np.int8)
    done = _within(y0, y, buggy)
    hit1 = ~done & _within(y1, y, buggy)
    x[hit1] = hi[hit1]
    done |= hit1
    inc = y0 < y1
    below = ~done & ((inc & (y < y0)) | (~inc & (y > y0)))
    ind[below], done = -1, done | below
    above = ~done & ((inc & (y > y1)) | (~inc & (y < y1)))
    ind[above], x[above], done = 1, hi[above], done | above
    for _ in range(GO_MAX_ITERATIONS):
        live = np.flatnonzero(~done)
        if live.size == 0:
            break
        xm = _f32(0.5 * (lo[live] + hi[live]))
        ym = f(live, xm)
        x[live] = xm
        hit = _within(ym, y[live], buggy)
        left = (inc[live] & (y[live] < ym)) | (~inc[live] & (y[live] > ym))
        new_lo, new_hi = np.where(left, lo[live], xm), np.where(left, xm, hi[live])
        stuck = (new_lo == lo[live]) & (new_hi == hi[live])  # every later iteration would repeat
        lo[live], hi[live] = new_lo, new_hi
        done[live[hit | stuck]] = True
    for s in np.flatnonzero(ind < 0).tolist():
        i = int(rows[s])
        name = "ttft" if is_ttft[s] else "itl"
        if errors[i] is None:
            errors[i] = InfeasibleTarget(
                f"{name.upper()} target {y[s]} ms: target below region ({name.upper()} at min rate "
                f"{1000 * rs.lam_min[i]:.6g} req/s is {y0[s]:.6g} ms, at max rate {y1[s]:.6g} ms)")
    rate = np.where(ind > 0, hi64[rows], np.minimum(np.maximum(x, rs.lam_min[rows]), hi64[rows]))
    for name, flag in (("ttft", True), ("itl", False)):
        m = (ind >= 0) & (is_ttft == flag)
        rates[name][rows[m]] = rate[m]
    return rates, errors


# ------------------------------------------------------------------------------------ many models
def _groups(models: Sequence["PerfModel"]) -> dict:
    groups: dict = {}
    for i, m in enumerate(models):
        groups.setdefault((m.kind, m.compat), []).append(i)
    return groups


def size_specs(models: Sequence["PerfModel"], mi, n, q, targets: np.ndarray, *, budget: int = 2_000_000) -> list:
    """Sizing (or InfeasibleTarget) per row (models[mi[r]] at batch n[r], queue q[r]); targets (R, 3).

    Rows are grouped by perf-model kind and mode, sorted by n and cut into chunks of about
    `budget` grid elements, so memory stays bounded and padding small.
    """
    mi, n, q = (np.asarray(a, dtype=np.int64) for a in (mi, n, q))
    targets = np.asarray(targets, dtype=np.float64).reshape(len(mi), 3)
    out: list = [None] * len(mi)
    for chunk, rs in _row_chunks(models, mi, n, q, budget, per_row=GRID):
        for i, res in zip(chunk.tolist(), size_rows(rs, *targets[chunk].T)):
            out[i] = res
    return out


def _row_chunks(models: Sequence["PerfModel"], mi, n, q, budget: int, per_row: int):
    """(row indices, RowSet) chunks over rows (models[mi[r]] at batch n[r], queue q[r]).

    Rows are grouped by perf-model kind and mode, sorted by n and cut into chunks of about `budget` elements
    (`per_row` evaluations of n + 1 states each), so memory stays bounded; widths within 2x keep padding small.
    """
    for members in _groups([models[i] for i in mi]).values():
        members = np.array(members, dtype=np.int64)
        members = members[np.argsort(n[members], kind="stable")]
        start = 0
        while start < members.size:
            stop = start + 1
            first = int(n[members[start]])
            while stop < members.size:
                nxt = int(n[members[stop]])
                if (stop - start + 1) * per_row * (nxt + 1) > budget or (nxt > 32 and nxt > 2 * first + 1):
                    break
                stop += 1
            chunk = members[start:stop]
            used = list(dict.fromkeys(mi[chunk].tolist()))
            pos = {m: k for k, m in enumerate(used)}
            yield chunk, RowSet([models[m] for m in used], [pos[m] for m in mi[chunk].tolist()], n[chunk], q[chunk])
            start = stop


def size_models(models: Sequence["PerfModel"], targets: Sequence[tuple[float, float, float]]) -> list:
    """Size every model (at its own N, Q) for its (ttft, itl, tps) targets in vectorised groups.

    Returns a Sizing or an InfeasibleTarget per model (not raised). Uses and fills each model's
    result cache, so repeated (model, targets) pairs cost nothing.
    """
    out: list = [None] * len(models)
    todo: dict = {}
    for i, (m, t) in enumerate(zip(models, targets)):
        key = tuple(map(float, t))
        hit = m._size_cache.get(key)
        if hit is not None:
            out[i] = hit
        else:
            todo.setdefault((id(m), key), []).append(i)
    if not todo:
        return out
    firsts = [ix[0] for ix in todo.values()]
    uniq = list({id(models[i]): models[i] for i in firsts}.values())
    pos = {id(m): k for k, m in enumerate(uniq)}
    mi = [pos[id(models[i])] for i in firsts]
    results = size_specs(uniq, mi, [uniq[k].max_batch for k in mi], [uniq[k].max_queue for k in mi],
                         np.array([key for _, key in todo.keys()]))
    for ((_, key), ix), res in zip(todo.items(), results):
        models[ix[0]]._remember(key, res)
        for i in ix:
            out[i] = res
    return out


def analyze_models(models: Sequence["PerfModel"], rates: Sequence[float], *, budget: int = 4_000_000) -> list:
    """Metrics (floats) of each model at its rate in req/s (> 0), in vectorised chunks; no range checks."""
    out: list = [None] * len(models)
    uniq = list({id(m): m for m in models}.values())
    pos = {id(m): k for k, m in enumerate(uniq)}
    mi = np.array([pos[id(m)] for m in models], dtype=np.int64)
    n = np.array([m.max_batch for m in uniq], dtype=np.int64)[mi]
    q = np.array([m.max_queue for m in uniq], dtype=np.int64)[mi]
    lam = np.asarray(rates, dtype=np.float64)
    for chunk, rs in _row_chunks(uniq, mi, n, q, budget, per_row=1):
        metrics = rs.metrics(rs.evaluate(np.arange(len(chunk)), lam[chunk] / 1000.0), offered=lam[chunk])
        columns = {name: np.broadcast_to(np.asarray(value, dtype=np.float64), (len(chunk),)).tolist()
                   for name, value in vars(metrics).items()}
        for k, j in enumerate(chunk.tolist()):
            out[j] = Metrics(**{name: values[k] for name, values in columns.items()})
    return out
