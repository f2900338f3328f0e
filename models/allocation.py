"""The allocation as a mixed-integer program over the candidate table, built as sparse arrays.

Single-assign (one accelerator per server; spec optimizer.md §3.7), for server i with candidates c:
    x_c ∈ {0,1}  run candidate c with its full replicas R_c          Σ_c x_c + u_i = 1
    u_i ∈ {0,1}  not served within SLO
    y_c ∈ [0, R_c-1], z_c ∈ {0,1}   best effort: y_c replicas of c   y_c ≤ (R_c-1) z_c,  Σ_c z_c ≤ u_i
    capacity per type k:  Σ_c units_c (R_c x_c + y_c) ≤ U_k
Multi-assign (``heterogeneous``): n_c ∈ [0, R_c] replicas of candidate c, the load split in proportion to rate:
    Σ_c (S rate_c / λ_i) n_c ≥ w_i,   w_i ∈ [0, S] served share in 1/S steps,   w_i + S u_i ≥ S
    capacity per type k:  Σ_c units_c n_c ≤ U_k
    (``MipOptions.patterns``: full service as a choice among covering patterns, models.patterns;
    ``MipOptions.covers``: disaggregated cover rows, ``_cover_cuts``)
Objectives, lexicographic (see ``stages``): unserved servers per priority level, highest first; then the rate
served by best effort per level; then inferno's transition value (cost when nothing is running).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from inferno_mip.tables import ACCEL_PENALTY_FACTOR, CandidateTable

SHARE_STEPS = 1000  # multi-assign best effort: served share resolution (0.1 %)


@dataclass(frozen=True)
class MipOptions:
    heterogeneous: bool = False  # replicas of one server on several accelerators
    best_effort: bool = True  # partial service for servers that cannot be fully served
    max_replica_change: int | None = None  # per server, against its current replica count
    dominance: bool = False  # drop full service by dominated candidates (see ``dominated``)
    patterns: bool = False  # multi-assign full service as a choice among covering patterns (models.patterns)
    covers: bool = False  # multi-assign compact form: disaggregated cover rows (see ``_cover_cuts``)


@dataclass(frozen=True)
class Stage:
    """One lexicographic objective: optimise ``c · v`` and keep it optimal in later stages."""

    name: str
    c: np.ndarray
    maximize: bool = False
    integral: bool = False  # objective takes integer values on integer points (exact fixing)
    # Columns held at 0 in this stage because they cannot improve it and later stages decide them: partial
    # service of lower priorities. Dropping them is exact and makes the stage much smaller.
    zero_cols: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    # The count stage whose optimum of 0 forces this stage's optimum to 0 (single-assign best effort: partial
    # service needs an unserved server of the level, Σ_c z_c <= u_i), so that it needs no solve then.
    zero_with: str = ""


@dataclass(frozen=True)
class Formulation:
    """``row_lb <= A v <= row_ub``, ``lb <= v <= ub``, ``v_j`` integer where ``integer[j]``; all v >= 0."""

    A: sp.csr_matrix
    row_lb: np.ndarray
    row_ub: np.ndarray
    lb: np.ndarray
    ub: np.ndarray
    integer: np.ndarray
    stages: tuple[Stage, ...]
    candidates: np.ndarray  # candidate index of each replica column (x or n)
    full_cols: np.ndarray  # column of x_c (single) or n_c (multi), per kept candidate
    partial_cols: np.ndarray  # column of y_c per kept candidate, -1 if none
    unserved_cols: np.ndarray  # column of u_i per server row, -1 if the server has no candidates
    heterogeneous: bool
    n_candidates: int
    info: dict = field(default_factory=dict)
    dominator: np.ndarray | None = None  # per kept candidate, the position of one dominating it, or -1

    @property
    def n_vars(self) -> int:
        return len(self.lb)

    def counts(self, v: np.ndarray) -> np.ndarray:
        """Replicas per candidate of the table from a solution vector."""
        counts = np.zeros(self.n_candidates, dtype=np.int64)
        full = np.rint(v[self.full_cols]).astype(np.int64)
        if self.heterogeneous:
            counts[self.candidates] = full
            if "pattern_counts" in self.info:  # replicas of the chosen patterns (models.patterns)
                counts[self.candidates] += np.rint(self.info["pattern_counts"] @ v).astype(np.int64)
        else:
            counts[self.candidates] = full * self._replicas
            has = self.partial_cols >= 0
            counts[self.candidates[has]] += np.rint(v[self.partial_cols[has]]).astype(np.int64)
        return counts

    def vector(self, counts: np.ndarray, table: CandidateTable) -> np.ndarray:
        """A solution vector for given replicas per candidate (e.g. the greedy answer, as a warm start)."""
        v = np.zeros(self.n_vars)
        k = counts[self.candidates]
        if self.heterogeneous:
            v[self.full_cols] = k
            rate = np.bincount(table.server[self.candidates], weights=table.rate_star[self.candidates] * k,
                               minlength=len(table.rows))
            for i, col in enumerate(self.unserved_cols):
                if col < 0:
                    continue
                need = table.rows[i].total_rate
                share = SHARE_STEPS if need <= 0 else served_share(rate[i], need)
                v[self.info["share_cols"][i]] = share
                v[col] = float(share < SHARE_STEPS)
            if "pattern_counts" in self.info:
                from .patterns import choose_patterns

                choose_patterns(self, v, counts, table)
        else:
            full = k == self._replicas
            if self.dominator is not None and (full & (self.dominator >= 0)).any():
                moved = full & (self.dominator >= 0)  # full service moves to the candidate dominating it
                full = full & ~moved
                full[self.dominator[moved]] = True
            v[self.full_cols] = full
            partial = (k > 0) & ~full
            has = self.partial_cols >= 0
            v[self.partial_cols[has & partial]] = k[has & partial]
            v[self.info["z_cols"][has & partial]] = 1
            served = np.zeros(len(table.rows), dtype=bool)
            served[table.server[self.candidates[full]]] = True
            for i, col in enumerate(self.unserved_cols):
                if col >= 0:
                    v[col] = float(not served[i])
        return v

    @property
    def _replicas(self) -> np.ndarray:
        return self.info["replicas"]


def keeps_rows(model, x: np.ndarray, tol: float = 1e-6, bound_tol: float | None = None) -> bool:
    """Whether `x` keeps every row and column bound of `model` (a Formulation or a stage's MipProblem: both have
    ``A, row_lb, row_ub, lb, ub``) within `tol` (`bound_tol` for the column bounds, `tol` if None)."""
    bound_tol = tol if bound_tol is None else bound_tol
    ax = model.A @ x
    return bool(np.all(x >= model.lb - bound_tol) and np.all(x <= model.ub + bound_tol)
                and np.all(ax >= model.row_lb - tol) and np.all(ax <= model.row_ub + tol))


def presolve(table: CandidateTable, options: MipOptions) -> np.ndarray:
    """Candidates worth offering the solver: per (server, accelerator) the batch sizes not dominated.

    Replicas of one (server, accelerator) cost the same whatever the batch size, so the candidate with the
    highest SLO rate per replica (fewest replicas) dominates; the current batch size wins ties, since changing it
    restarts the replicas (then the least value, then table order). A max replica change drops candidates too far
    from the current count (single-assign).
    """
    n = len(table)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    current = [row.server.current for row in table.rows]
    keep = np.ones(n, dtype=bool)
    if options.max_replica_change is not None and not options.heterogeneous:
        has_current = np.array([bool(c.accelerator) for c in current])[table.server]
        replicas_now = np.array([c.num_replicas for c in current], dtype=np.int64)[table.server]
        keep = ~has_current | (np.abs(table.replicas - replicas_now) <= options.max_replica_change)
    batch_now = np.array([c.max_batch for c in current], dtype=np.int64)[table.server]
    fewest = np.zeros(n) if options.heterogeneous else -table.replicas.astype(np.float64)
    # the best of each (server, accelerator) first: largest key, then the earliest in table order
    order = np.lexsort((np.arange(n), table.value, -(table.batch == batch_now).astype(np.float64),
                        -table.rate_star, -fewest, table.acc, table.server, ~keep))
    order = order[:int(keep.sum())]
    if not len(order):  # a max replica change can rule out every candidate
        return np.zeros(0, dtype=np.int64)
    srv, acc = table.server[order], table.acc[order]
    first = np.r_[True, (srv[1:] != srv[:-1]) | (acc[1:] != acc[:-1])]
    return np.sort(order[first]).astype(np.int64)


class _Builder:
    """Accumulates columns and rows (COO triplets) of a formulation."""

    def __init__(self):
        self.lb, self.ub, self.integer = [], [], []
        self.rows, self.cols, self.vals = [], [], []
        self.row_lb, self.row_ub = [], []

    def columns(self, n: int, lb, ub, integer: bool) -> np.ndarray:
        start = len(self.lb)
        self.lb.extend(np.broadcast_to(np.asarray(lb, dtype=float), (n,)).tolist())
        self.ub.extend(np.broadcast_to(np.asarray(ub, dtype=float), (n,)).tolist())
        self.integer.extend([integer] * n)
        return np.arange(start, start + n, dtype=np.int64)

    def ub_at(self, cols: np.ndarray, value: float) -> None:
        for j in cols.tolist():
            self.ub[j] = value

    def rows_of(self, row_ids, col_ids, vals, lo, hi) -> None:
        """Rows given as triplets with local row ids 0..m-1; lo/hi per row."""
        row_ids = np.asarray(row_ids, dtype=np.int64)
        m = int(row_ids.max()) + 1 if len(row_ids) else 0
        lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
        offset = len(self.row_lb)
        self.rows.append(row_ids + offset)
        self.cols.append(np.asarray(col_ids, dtype=np.int64))
        self.vals.append(np.asarray(vals, dtype=float))
        self.row_lb.extend(np.broadcast_to(lo, (m,)).tolist())
        self.row_ub.extend(np.broadcast_to(hi, (m,)).tolist())

    def matrix(self) -> sp.csr_matrix:
        if not self.rows:
            return sp.csr_matrix((0, len(self.lb)))
        return sp.csr_matrix((np.concatenate(self.vals), (np.concatenate(self.rows), np.concatenate(self.cols))),
                             shape=(len(self.row_lb), len(self.lb)))


@dataclass
class _Parts:
    """What the single- and multi-assign forms contribute to the shared rows and stages."""

    full: np.ndarray  # x_c or n_c per kept candidate
    capacity: tuple[np.ndarray, np.ndarray, np.ndarray]  # columns, cards per unit, type
    value: tuple[np.ndarray, np.ndarray]  # columns, value per unit
    rate: tuple[np.ndarray, np.ndarray, np.ndarray]  # best-effort columns, req/s per unit, server row
    partial: np.ndarray  # y_c per kept candidate, -1 if none
    partial_cols: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # y and z columns
    partial_server: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # their server rows


def build(table: CandidateTable, options: MipOptions = MipOptions()) -> Formulation:
    """The formulation of `table` under `options` (see the module docstring)."""
    kept = presolve(table, options)
    srv = table.server[kept]
    has_cands = np.zeros(len(table.rows), dtype=bool)
    has_cands[srv] = True
    served_rows = np.flatnonzero(has_cands)
    b = _Builder()
    info: dict = {"replicas": table.replicas[kept]}
    assign = _multi_assign if options.heterogeneous else _single_assign
    parts, unserved = assign(b, table, kept, served_rows, options, info)
    first_capacity_row = len(b.row_lb)
    _capacity_rows(b, table, *parts.capacity)
    info["capacity_rows"] = np.arange(first_capacity_row, len(b.row_lb), dtype=np.int64)
    dominator = None
    if options.dominance and not options.heterogeneous:
        dominator = dominated(table, kept)
        b.ub_at(parts.full[dominator >= 0], 0.0)
    stages = _stages(table, len(b.lb), unserved, served_rows, *parts.rate, *parts.value, options.best_effort,
                     parts.partial_cols, parts.partial_server, not options.heterogeneous)
    return Formulation(
        A=b.matrix(), row_lb=np.array(b.row_lb), row_ub=np.array(b.row_ub), lb=np.array(b.lb), ub=np.array(b.ub),
        integer=np.array(b.integer, dtype=bool), stages=stages, candidates=kept, full_cols=parts.full,
        partial_cols=parts.partial, unserved_cols=unserved, heterogeneous=options.heterogeneous,
        n_candidates=len(table), info=info, dominator=dominator)


def dominated(table: CandidateTable, kept: np.ndarray) -> np.ndarray:
    """Per kept candidate, the position (in `kept`) of a candidate dominating its full service, else -1.

    c dominates d when both serve the same server on the same accelerator type and c needs no more units and has
    no more value (ties go to the earlier candidate of the table's order). Full service by d can always be
    replaced by c's: same server served, no more capacity used, no more value; so dropping it is exact. Partial
    service by d is kept (it is a different option).
    """
    order = np.lexsort((np.arange(len(kept)), table.units[kept], table.value[kept], table.type[kept],
                        table.server[kept]))
    group = np.r_[0, np.cumsum((np.diff(table.server[kept][order]) != 0) | (np.diff(table.type[kept][order]) != 0))]
    units = table.units[kept][order].astype(np.int64)
    big = int(units.max(initial=0)) + 1
    key = units - group * big  # running minimum restarts at every group (earlier groups have larger keys)
    before = np.r_[np.iinfo(np.int64).max, np.minimum.accumulate(key)[:-1]]
    is_dominated = (before <= key) & np.r_[False, group[1:] == group[:-1]]
    out = np.full(len(kept), -1, dtype=np.int64)
    if is_dominated.any():
        # The dominator: the first earlier candidate of the group with the running minimum of units.
        first_at_min = np.flatnonzero(np.r_[True, np.minimum.accumulate(key)[1:] < np.minimum.accumulate(key)[:-1]])
        owner = first_at_min[np.searchsorted(first_at_min, np.arange(len(kept)), side="right") - 1]
        prev_owner = np.r_[-1, owner[:-1]]
        out[order[is_dominated]] = order[prev_owner[is_dominated]]
    return out


def _single_assign(b: _Builder, table: CandidateTable, kept, served_rows, options: MipOptions, info: dict):
    """x_c binary, u_i, and for best effort y_c ≤ (R_c - 1) z_c with Σ_c z_c ≤ u_i."""
    srv = table.server[kept]
    R = table.replicas[kept].astype(float)
    unserved = np.full(len(table.rows), -1, dtype=np.int64)
    full = b.columns(len(kept), 0, 1, True)
    unserved[served_rows] = b.columns(len(served_rows), 0, 1, True)
    local = np.searchsorted(served_rows, srv)
    # Σ_c x_c + u_i = 1
    b.rows_of(np.r_[local, np.arange(len(served_rows))], np.r_[full, unserved[served_rows]],
              np.ones(len(kept) + len(served_rows)), 1.0, 1.0)
    partial = np.full(len(kept), -1, dtype=np.int64)
    z = np.full(len(kept), -1, dtype=np.int64)
    can_split = np.flatnonzero(R > 1) if options.best_effort else np.array([], dtype=np.int64)
    if len(can_split):
        partial[can_split] = b.columns(len(can_split), 0, R[can_split] - 1, True)
        z[can_split] = b.columns(len(can_split), 0, 1, True)
        m = len(can_split)
        # y_c - (R_c - 1) z_c <= 0 ; z_c - y_c <= 0
        b.rows_of(np.r_[np.arange(m), np.arange(m)], np.r_[partial[can_split], z[can_split]],
                  np.r_[np.ones(m), -(R[can_split] - 1)], -np.inf, 0.0)
        b.rows_of(np.r_[np.arange(m), np.arange(m)], np.r_[z[can_split], partial[can_split]],
                  np.r_[np.ones(m), -np.ones(m)], -np.inf, 0.0)
        # Σ_c z_c - u_i <= 0
        split_servers = np.unique(local[can_split])
        rank = np.searchsorted(split_servers, local[can_split])
        b.rows_of(np.r_[rank, np.arange(len(split_servers))],
                  np.r_[z[can_split], unserved[served_rows[split_servers]]],
                  np.r_[np.ones(m), -np.ones(len(split_servers))], -np.inf, 0.0)
    info["z_cols"] = z
    info["server"] = srv  # server row of each kept candidate
    info["priority"] = np.array([row.priority for row in table.rows])  # per server row (models.count_rounding)
    upr = table.unit_per_replica[kept].astype(float)
    has = partial >= 0
    parts = _Parts(
        full=full, partial=partial,
        capacity=(np.r_[full, partial[has]], np.r_[upr * R, upr[has]], np.r_[table.type[kept], table.type[kept][has]]),
        value=(np.r_[full, partial[has]], np.r_[table.value[kept], table.value[kept][has] / R[has]]),
        rate=(partial[has], table.rate_star[kept][has], srv[has]),
        partial_cols=np.r_[partial[has], z[has]], partial_server=np.r_[srv[has], srv[has]])
    return parts, unserved


def _multi_assign(b: _Builder, table: CandidateTable, kept, served_rows, options: MipOptions, info: dict):
    """n_c ∈ [0, R_c], u_i, served share w_i ∈ [0, S] covering the load in proportion to rate; with
    ``options.patterns`` full service of the servers that allow it as a choice among patterns (models.patterns)."""
    srv = table.server[kept]
    unserved = np.full(len(table.rows), -1, dtype=np.int64)
    full = b.columns(len(kept), 0, table.replicas[kept].astype(float), True)
    unserved[served_rows] = b.columns(len(served_rows), 0, 1, True)
    share = np.full(len(table.rows), -1, dtype=np.int64)
    share[served_rows] = b.columns(len(served_rows), 0, SHARE_STEPS, True)
    need = np.array([row.total_rate for row in table.rows])
    info["share_cols"] = share
    value = _per_replica_value(table, kept, True)
    fewest = fewest_replicas(table, kept)
    # what models.patterns.round_and_repair needs to build plans
    info.update(rate_of_full=table.rate_star[kept], upr_of_full=table.unit_per_replica[kept].astype(float),
                need=need, fewest=fewest, server_of_full=srv, priority=np.array([row.priority for row in table.rows]))
    patterns = {}
    if options.patterns and options.max_replica_change is None:
        from .patterns import server_patterns_of

        patterns = server_patterns_of(table, kept, served_rows, value, fewest)
    compact_rows = served_rows[~np.isin(served_rows, np.array(sorted(patterns), dtype=np.int64))]
    parts = _compact_multi_assign(b, table, kept, compact_rows, full, unserved, share, need, value, fewest, options)
    if patterns:
        from .patterns import add_pattern_servers

        add_pattern_servers(b, table, kept, patterns, full, unserved, share, need, value, options.best_effort,
                            parts, info)
    return parts, unserved


def _compact_multi_assign(b: _Builder, table: CandidateTable, kept, served_rows, full, unserved, share, need, value,
                          fewest, options: MipOptions) -> _Parts:
    """The rows of the compact multi-assign form for the servers `served_rows` (see the module docstring)."""
    in_rows = np.isin(table.server[kept], served_rows)
    cand = np.flatnonzero(in_rows)
    srv = table.server[kept][cand]
    local = np.searchsorted(served_rows, srv)
    # Σ_c (S rate_c / λ_i) n_c - w_i >= 0: scaled by S/λ_i so that w_i has coefficient -1 (well conditioned,
    # and exact for CP-SAT's integer rows). A server without load needs no covering row.
    loaded = need[srv] > 0
    covering = np.flatnonzero(need[served_rows] > 0)
    rank = np.searchsorted(covering, local[loaded])
    b.rows_of(np.r_[rank, np.arange(len(covering))], np.r_[full[cand][loaded], share[served_rows[covering]]],
              np.r_[table.rate_star[kept][cand][loaded] * SHARE_STEPS / need[srv][loaded], -np.ones(len(covering))],
              0.0, np.inf)
    # w_i + S u_i >= S; without best effort a server is all or nothing: w_i + S u_i = S
    b.rows_of(np.r_[np.arange(len(served_rows)), np.arange(len(served_rows))],
              np.r_[share[served_rows], unserved[served_rows]],
              np.r_[np.ones(len(served_rows)), np.full(len(served_rows), SHARE_STEPS)], SHARE_STEPS,
              np.inf if options.best_effort else SHARE_STEPS)
    # Σ_c n_c + m_i u_i >= m_i with m_i = max(minNumReplicas, ceil(λ_i / best rate)): a fully served server
    # needs at least that many replicas. Valid for integer n, and it cuts off the fractional covers of the LP.
    mins = fewest[served_rows]
    has_min = np.flatnonzero(mins > 0)
    if len(has_min):
        sel = np.isin(local, has_min)
        rank = np.searchsorted(has_min, local[sel])
        b.rows_of(np.r_[rank, np.arange(len(has_min))], np.r_[full[cand][sel], unserved[served_rows[has_min]]],
                  np.r_[np.ones(sel.sum()), mins[has_min]], mins[has_min], np.inf)
    if options.covers:
        _cover_cuts(b, table, kept, cand, served_rows, full, unserved, need)
    if options.max_replica_change is not None:
        _replica_change_rows(b, table, served_rows, local, full[cand], options.max_replica_change)
    return _Parts(
        full=full, partial=np.full(len(kept), -1, dtype=np.int64),
        capacity=(full, table.unit_per_replica[kept].astype(float), table.type[kept]),
        value=(full, value),
        rate=(share[served_rows], need[served_rows] / SHARE_STEPS, served_rows))


def _cover_cuts(b: _Builder, table: CandidateTable, kept, cand, served_rows, full, unserved, need) -> None:
    """Disaggregated covers, per loaded server i and candidate a with K = ceil(λ_i / rate_a) > 1:
    Σ_c min(ceil(rate_c / rate_a), K) n_c + K u_i >= K. Valid: divide the covering row by rate_a and round up
    (every n_c is an integer); then a coefficient above K can be K (one such replica alone meets the row). With
    only candidate a in use it says n_a >= K = R_a, which the covering row leaves fractional in the LP."""
    srv = table.server[kept][cand]
    rate = table.rate_star[kept][cand]
    start = np.searchsorted(srv, served_rows)
    stop = np.searchsorted(srv, served_rows, side="right")
    row_ids, col_ids, vals, rhs = [], [], [], []
    for i, a, z in zip(served_rows.tolist(), start.tolist(), stop.tolist()):
        if need[i] <= 0 or z - a < 1:
            continue
        r = rate[a:z]
        K = np.ceil(need[i] * (1 - 1e-9) / r)
        for q, k in zip(np.unique(r).tolist(), np.ceil(need[i] * (1 - 1e-9) / np.unique(r)).tolist()):
            if k <= 1:
                continue
            coef = np.minimum(np.ceil(r / q), k)
            if np.all(coef == 1) and k <= K.min():  # the min-replica row already says this
                continue
            row = len(rhs)
            row_ids.append(np.full(z - a + 1, row))
            col_ids.append(np.r_[full[cand[a:z]], unserved[i]])
            vals.append(np.r_[coef, k])
            rhs.append(k)
    if rhs:
        b.rows_of(np.concatenate(row_ids), np.concatenate(col_ids), np.concatenate(vals), np.array(rhs), np.inf)


def served_share(rate: float, need: float) -> float:
    """Multi-assign: the share w_i (in 1/SHARE_STEPS steps, at most SHARE_STEPS) that replicas serving `rate`
    req/s cover of a load of `need` > 0 req/s."""
    return min(SHARE_STEPS, np.floor(rate / need * SHARE_STEPS + 1e-9))


def fewest_replicas(table: CandidateTable, kept: np.ndarray) -> np.ndarray:
    """Per server row, the replicas full service needs at least (multi-assign): max(minNumReplicas,
    ceil(λ_i / best rate of its kept candidates)); 0 for a server without load or candidates."""
    srv = table.server[kept]
    need = np.array([row.total_rate for row in table.rows])
    best_rate = np.zeros(len(table.rows))
    np.maximum.at(best_rate, srv, table.rate_star[kept])
    fewest = np.where(need > 0, np.ceil(need / np.where(best_rate > 0, best_rate, np.inf) - 1e-9), 0.0)
    return np.maximum(np.array([row.server.min_num_replicas for row in table.rows], dtype=float), fewest)


def _per_replica_value(table: CandidateTable, kept: np.ndarray, multi: bool) -> np.ndarray:
    """Multi-assign value per replica: cost, plus inferno's 10 % switch penalty off the current accelerator."""
    cost = table.cost[kept] / np.maximum(table.replicas[kept], 1)
    if not multi:
        return cost
    current = np.array([table.rows[i].server.current.accelerator for i in table.server[kept]])
    names = np.array([a.name for a in table.accelerators])[table.acc[kept]]
    return cost * (1 + ACCEL_PENALTY_FACTOR * (current != names))


def _capacity_rows(b: _Builder, table: CandidateTable, cols, coef, types) -> None:
    """Σ units <= capacity, one row per accelerator type with finite capacity."""
    for k in np.flatnonzero(np.isfinite(table.capacity)):
        sel = types == k
        if sel.any():
            b.rows_of(np.zeros(sel.sum(), dtype=np.int64), cols[sel], coef[sel], -np.inf, table.capacity[k])


def _replica_change_rows(b, table, served_rows, local, full, limit) -> None:
    """|Σ_c n_c - current replicas| <= limit, for servers with a current allocation."""
    for r, i in enumerate(served_rows):
        current = table.rows[i].server.current
        if not current.accelerator:
            continue
        sel = local == r
        b.rows_of(np.zeros(sel.sum(), dtype=np.int64), full[sel], np.ones(sel.sum()),
                  max(current.num_replicas - limit, 0), current.num_replicas + limit)


def _stages(table, n, unserved, served_rows, rate_cols, rate_coef, rate_server, value_cols, value_coef,
            best_effort, partial_cols, partial_server, partial_needs_unserved) -> tuple[Stage, ...]:
    """Unserved servers per level, best-effort rate per level, value; see ``Stage.zero_cols``."""
    stages = []
    priority = np.array([r.priority for r in table.rows])
    levels = sorted({int(priority[i]) for i in served_rows})
    for p in levels:
        c = np.zeros(n)
        c[unserved[[i for i in served_rows if priority[i] == p]]] = 1
        stages.append(Stage(f"unserved priority {p}", c, integral=True, zero_cols=partial_cols))
    # Best effort is canonical: the most partial service over all plans with the optimal counts, not over one
    # set of servers left out (which set a count stage returns is arbitrary among equals).
    if best_effort and len(rate_cols):
        for p in levels:
            sel = priority[rate_server] == p
            if not sel.any():
                continue
            c = np.zeros(n)
            np.add.at(c, rate_cols[sel], rate_coef[sel])
            lower = partial_cols[priority[partial_server] > p]
            stages.append(Stage(f"best-effort rate priority {p}", c, maximize=True, zero_cols=lower,
                                zero_with=f"unserved priority {p}" if partial_needs_unserved else ""))
    c = np.zeros(n)
    np.add.at(c, value_cols, value_coef)
    stages.append(Stage("value", c))
    return tuple(stages)
