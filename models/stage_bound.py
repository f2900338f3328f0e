"""Multi-assign best-effort and value stages: a Lagrangian bound over integer covers.

The compact form's LP covers a server with fractions of replicas (a server needing 1.2 replicas' worth pays 1.2
there and 2 in any plan), so the bound HiGHS starts from is weak. Here the rows that couple servers (capacity per
accelerator type, and the rows holding earlier stages at their optimum: counts per level, best effort per level)
are dualised with multipliers y of the right signs; what is left splits into one problem per server, solved over
- *served* (u_i = 0, w_i = S): an integer cover, n_c in [0, ub_c] with Σ rate_c n_c >= λ_i (1 - BOUND_RTOL) and
  Σ n_c >= the server's least replicas, priced exactly (``cover_pricing.cheapest_cover``, within each type's room);
- *unserved* (u_i = 1, where its bounds allow): the best partial plan with n continuous in [0, ub_c] and
  w_i <= S Σ rate_c n_c / λ_i (a relaxation of the integer partial plans: a lower bound of their cost).
For any y, L(y) = Σ_i min(options of server i at the costs c - A_D^T y) + Σ_r y_r b_r (b_r the row's bound on the
side of y_r's sign) is a valid bound of the stage (of its minimised sign · c): every plan of the stage is a choice
of one option per server. Rows the per-server problems leave out (disaggregated covers, replica-change rows) only
relax them.

The multipliers come from column generation on a Dantzig-Wolfe master (one convexity row per server, the coupling
rows; columns: servers' options, first the start's plan and the options priced at the compact LP's duals, then
each round's priced options). Each round's L(y) is a bound; at the master LP's optimum L = its value, the bound
over integer covers. A round prices exactly only the servers a vectorised lower bound does not settle, those with
most to gain first; when time runs out, the rest count with that lower bound. L at the compact LP's duals is at
least the LP's bound (the options are points of the compact form's per-server relaxation), when no local row is
left out.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .allocation import SHARE_STEPS, keeps_rows
from .cover_master import _span_min
from .cover_pricing import cheapest_cover
from .lexicographic import master_applies

BOUND_RTOL = 1e-6  # loads priced this much lighter (relative): a plan the rows accept within tolerance is a cover
SAFETY_RTOL = 1e-9  # the bound is loosened by this much of the magnitudes summed into it (floating point)
REDUCED_TOL = 1e-9  # (relative) an option enters the master when its reduced cost is below -this
MIN_PLAN_TIME = 0.05  # s: the master's MIP is not started with less time left


@dataclass(frozen=True)
class StageBound:
    """A bound of a best-effort (upper) or value (lower) stage; -inf / inf when none was found."""

    bound: float
    rounds: int
    master_value: float | None  # the Dantzig-Wolfe master LP's value in the stage's sense (None: not solved)
    x: np.ndarray | None = None  # a plan from the master's MIP over integer options (``plans``), None if none


class _Servers:
    """Per server of the compact multi-assign form: its columns and the data of its options."""

    def __init__(self, form, problem):
        info = form.info
        self.u = form.unserved_cols
        rows = np.flatnonzero(self.u >= 0)
        self.rows = rows
        self.u_col = self.u[rows]
        self.w_col = info["share_cols"][rows]
        server_of = info["server_of_full"]
        self.first = np.searchsorted(server_of, rows)
        self.last = np.searchsorted(server_of, rows, side="right")
        self.n_cols = form.full_cols
        self.rate = info["rate_of_full"]
        self.need = info["need"][rows]
        self.least = info["fewest"][rows]
        cap_rows = info["capacity_rows"]
        per_replica = problem.A[cap_rows].tocsc()[:, form.full_cols].toarray()  # (types x candidates)
        self.room = np.r_[problem.row_ub[cap_rows], np.inf]
        self.cards = per_replica.max(axis=0)
        self.group = np.where(per_replica.any(axis=0), np.argmax(per_replica, axis=0), len(cap_rows))
        ub_n = problem.ub[form.full_cols]
        self.ub_n = np.where(self.cards > 0, np.minimum(ub_n, np.floor(self.room[self.group] / np.where(
            self.cards > 0, self.cards, 1.0) + 1e-9)), ub_n)
        self.can_serve = (problem.lb[self.u_col] <= 0) & (problem.ub[self.w_col] >= SHARE_STEPS)
        self.can_leave = problem.ub[self.u_col] >= 1
        self.w_max = np.minimum(problem.ub[self.w_col], SHARE_STEPS)
        self.lb_ok = (np.all(problem.lb[form.full_cols] <= 0) and np.all(problem.lb[self.w_col] <= 0))


def applies(form, problem) -> bool:
    """Whether the bound is defined for `problem`: a stage of the compact multi-assign form (no pattern servers)
    whose objective lies on the replica, unserved and share columns."""
    if not master_applies(form) or not {"share_cols", "server_of_full"} <= set(form.info):
        return False
    own = np.zeros(form.n_vars, dtype=bool)
    own[form.full_cols] = True
    own[form.unserved_cols[form.unserved_cols >= 0]] = True
    own[form.info["share_cols"][form.info["share_cols"] >= 0]] = True
    return not np.any(problem.c[~own] != 0)


class _Lagrangian:
    """The per-server problems at multipliers y of the coupling rows, and the Dantzig-Wolfe master over them."""

    def __init__(self, form, problem):
        self.form, self.problem = form, problem
        self.s = _Servers(form, problem)
        cap_rows = form.info["capacity_rows"]
        fixed = np.arange(problem.A.shape[0] - problem.fixed_rows, problem.A.shape[0])
        self.coupling = np.r_[cap_rows, fixed].astype(np.int64)
        self.A_D = problem.A[self.coupling].tocsc()
        self.b_lb = problem.row_lb[self.coupling]
        self.b_ub = problem.row_ub[self.coupling]
        self.sign = -1.0 if problem.maximize else 1.0
        self.c = self.sign * problem.c
        self.n_srv = len(self.s.rows)
        # master columns: owner (position in s.rows) and the option as a sparse vector over the form's columns
        self.owner: list[int] = []
        self.vectors: list[tuple[np.ndarray, np.ndarray]] = []
        self.seen: set = set()
        self._all: sp.csc_matrix | None = None

    def clip(self, y: np.ndarray) -> np.ndarray:
        """Multipliers with a valid sign: > 0 only on rows with a finite lower bound, < 0 on a finite upper one."""
        return np.where(y > 0, np.where(np.isfinite(self.b_lb), y, 0.0), np.where(np.isfinite(self.b_ub), y, 0.0))

    def evaluate(self, y: np.ndarray, time_left: float = math.inf) -> tuple[float, list, np.ndarray]:
        """L(y) in the minimised sense (sign · c), per server its best option found ((u, n, w) or None) and that
        option's cost at these multipliers; (-inf, [], []) when replicas get a negative price or a server has no
        option (no bound then). Servers not priced exactly within `time_left` seconds count with a lower bound."""
        began = time.perf_counter()
        y = self.clip(y)
        cost = self.c - self.A_D.T @ y
        s = self.s
        price = cost[s.n_cols]
        if np.any(price < -1e-12):
            return -math.inf, [], np.zeros(0)
        price = np.maximum(price, 0.0)
        constant = float(y[y > 0] @ self.b_lb[y > 0] + y[y < 0] @ self.b_ub[y < 0])
        c_u, c_w = cost[s.u_col], cost[s.w_col]
        option_cost = np.full(self.n_srv, math.inf)
        options: list = [None] * self.n_srv
        leave = np.full(self.n_srv, math.inf)
        for k in np.flatnonzero(s.can_leave).tolist():
            a, b = int(s.first[k]), int(s.last[k])
            value, n, w = _partial(price[a:b], s.rate[a:b], s.ub_n[a:b], s.need[k], c_w[k], s.w_max[k])
            leave[k] = option_cost[k] = c_u[k] + value
            options[k] = (1.0, n, w)
        # served: a lower bound for every server at once (the load at the least price per rate, the least
        # replicas at the least price), priced exactly where it is below the unserved option, while time lasts
        usable = (s.ub_n > 0) & (s.rate > 0)
        per_rate = _span_min(np.where(usable, price / np.where(s.rate > 0, s.rate, 1.0), np.inf), s.first, s.last)
        per_replica = _span_min(np.where(s.ub_n > 0, price, np.inf), s.first, s.last)
        need = s.need * (1 - BOUND_RTOL)
        with np.errstate(invalid="ignore"):  # 0 * inf where a server needs nothing: the where() takes 0
            served = np.maximum(np.where(need > 0, need * per_rate, 0.0),
                                np.where(s.least > 0, s.least * per_replica, 0.0)) + c_w * SHARE_STEPS
        served = np.where(s.can_serve, served, math.inf)
        # the options already in the master: where one is no dearer than that lower bound, it is the cheapest
        known = np.full(self.n_srv, math.inf)
        if self.owner:
            np.minimum.at(known, np.array(self.owner), self.matrix().T @ cost)
        # (those with most to gain first: where time runs out, the rest keep the lower bound)
        todo = np.flatnonzero(served < np.minimum(leave, known))
        todo = todo[np.lexsort((todo, served[todo] - np.minimum(leave, known)[todo]))]
        for k in todo.tolist():
            if time.perf_counter() - began > time_left:
                break
            a, b = int(s.first[k]), int(s.last[k])
            low, cover_cost, n = cheapest_cover(price[a:b], s.rate[a:b], s.ub_n[a:b], need[k], s.least[k],
                                                group=s.group[a:b], cards=s.cards[a:b], room=s.room)
            served[k] = low + c_w[k] * SHARE_STEPS
            if n is not None and cover_cost + c_w[k] * SHARE_STEPS < option_cost[k]:
                options[k], option_cost[k] = (0.0, n, float(SHARE_STEPS)), cover_cost + c_w[k] * SHARE_STEPS
        best = np.minimum(np.minimum(leave, served), known)
        if not np.all(np.isfinite(best)):
            return -math.inf, [], np.zeros(0)
        total = float(best.sum())
        magnitude = abs(constant) + float(np.abs(best).sum())
        return total + constant - SAFETY_RTOL * magnitude, options, option_cost

    def column(self, k: int, option) -> tuple[np.ndarray, np.ndarray]:
        """Server k's `option` (u, n, w) as (columns of the form, values), zeros left out."""
        u, n, w = option
        s = self.s
        a, b = int(s.first[k]), int(s.last[k])
        idx = np.concatenate((s.n_cols[a:b], (s.u_col[k], s.w_col[k])))
        val = np.concatenate((n, (u, w)))
        keep = val != 0
        return idx[keep], val[keep]

    def plan_option(self, k: int, x: np.ndarray) -> tuple[float, np.ndarray, float]:
        """Server k's part of the plan `x` as an option (u, n, w)."""
        s = self.s
        a, b = int(s.first[k]), int(s.last[k])
        return float(x[s.u_col[k]]), x[s.n_cols[a:b]].copy(), float(x[s.w_col[k]])

    @staticmethod
    def key(k: int, idx: np.ndarray, val: np.ndarray) -> tuple:
        """What tells two master columns apart: the server and its option's values (rounded to 1e-9)."""
        return k, idx.tobytes(), np.round(val, 9).tobytes()

    def add(self, k: int, option) -> bool:
        if option is None:
            return False
        idx, val = self.column(k, option)
        key = self.key(k, idx, val)
        if key in self.seen:
            return False
        self.seen.add(key)
        self.owner.append(k)
        self.vectors.append((idx, val))
        return True

    def matrix(self, since: int = 0) -> sp.csc_matrix:
        """The master columns from position `since` on, as (form columns x options)."""
        if since:
            return self._block(since)
        done = 0 if self._all is None else self._all.shape[1]  # all of them: kept, extended by those added since
        if done < len(self.vectors):
            block = self._block(done)
            self._all = block if self._all is None else sp.hstack([self._all, block], format="csc")
        return self._all

    def _block(self, since: int) -> sp.csc_matrix:
        parts = self.vectors[since:]
        idx = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
        val = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0)
        col = np.repeat(np.arange(len(parts)), [len(p[0]) for p in parts])
        return sp.csc_matrix((val, (idx, col)), shape=(self.form.n_vars, len(parts)))

    def add_plan(self, x: np.ndarray) -> None:
        """The plan `x` (every server's part of it) as master columns."""
        for k in range(self.n_srv):
            self.add(k, self.plan_option(k, x))


def _partial(price: np.ndarray, rate: np.ndarray, ub: np.ndarray, need: float, c_w: float,
             w_max: float) -> tuple[float, np.ndarray, float]:
    """The cheapest unserved option (continuous replicas): min price·n + c_w w over n in [0, ub],
    0 <= w <= w_max, w <= S rate·n / need; (value, n, w)."""
    n = np.zeros(len(price))
    if c_w >= 0 or w_max <= 0:
        return 0.0, n, 0.0
    if need <= 0:  # no covering row: the share is free
        return c_w * w_max, n, w_max
    reward = -c_w * SHARE_STEPS / need  # per req/s served
    left = need * w_max / SHARE_STEPS
    value = 0.0
    per_rate = np.where(rate > 0, price / np.where(rate > 0, rate, 1.0), np.inf)
    for j in np.lexsort((np.arange(len(price)), per_rate)).tolist():
        if left <= 0 or per_rate[j] >= reward:
            break
        take = min(ub[j], left / rate[j])
        n[j] = take
        value += take * (price[j] - reward * rate[j])
        left -= take * rate[j]
    w = w_max - left * SHARE_STEPS / need
    return value, n, w


def stage_bound(form, problem, start: np.ndarray | None = None, duals: np.ndarray | None = None,
                time_limit: float = 5.0, target: float | None = None, plans: bool = False,
                plan_share: float = 0.0) -> StageBound:
    """The Lagrangian bound over integer covers of a multi-assign best-effort or value stage `problem` (module
    docstring), improved by column generation within `time_limit` seconds: an upper bound of a maximised stage, a
    lower one of a minimised stage. `duals`: the compact LP's row duals (HiGHS's, minimised sense) to start from;
    `start`: a plan of the stage (the master's first columns). Stops once the bound reaches `target`. With
    `plans`, the time left after the bound (at least `plan_share` of it) goes to the master's MIP over its options
    made integer (``_integer_plan``), whose plan comes back when it is better than `start`."""
    import highspy

    began = time.perf_counter()
    worst = math.inf if problem.maximize else -math.inf
    if not applies(form, problem):
        return StageBound(worst, 0, None)
    lag = _Lagrangian(form, problem)
    if not lag.s.lb_ok or not lag.n_srv:
        return StageBound(worst, 0, None)
    best = -math.inf
    y = np.zeros(len(lag.coupling)) if duals is None else lag.clip(np.asarray(duals)[lag.coupling])
    value, options, _ = lag.evaluate(y, time_limit - (time.perf_counter() - began))
    best = max(best, value)
    for k, option in enumerate(options):
        lag.add(k, option)
    if start is not None:
        lag.add_plan(start)
    goal = math.inf if target is None else lag.sign * target
    rounds, master_value = 1, None
    h = _master_model(lag)
    since = 0
    pricing = time_limit * (1.0 - (plan_share if plans else 0.0))  # the rest for the master's MIP
    while time.perf_counter() - began < pricing and best < goal:
        since = _add_columns(h, lag, since)
        h.setOptionValue("time_limit", max(time_limit - (time.perf_counter() - began), 1e-3))
        h.run()
        if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
            break
        master_value = h.getInfo().objective_function_value
        row_dual = np.array(h.getSolution().row_dual)
        pi, y = row_dual[:lag.n_srv], row_dual[lag.n_srv:]
        value, options, option_cost = lag.evaluate(y, pricing - (time.perf_counter() - began))
        if not math.isfinite(value):
            break
        rounds += 1
        best = max(best, value)
        added = 0
        for k, option in enumerate(options):
            if option_cost[k] - pi[k] < -REDUCED_TOL * max(1.0, abs(pi[k])) and lag.add(k, option):
                added += 1
        if not added or best >= master_value - 1e-9 * max(1.0, abs(master_value)):
            break
    bound = lag.sign * best
    x = None
    left = time_limit - (time.perf_counter() - began)
    if plans and start is not None and best < goal and left > MIN_PLAN_TIME:
        x = _integer_plan(lag, start, left)
    return StageBound(bound, rounds, None if master_value is None else lag.sign * master_value, x)


def _integer_plan(lag: _Lagrangian, start: np.ndarray, time_limit: float) -> np.ndarray | None:
    """The master's MIP (one option per server within the coupling rows) over its options made integer (a relaxed
    partial plan's replicas rounded down, its served share recomputed), solved by HiGHS from `start` within
    `time_limit` seconds; the plan when it keeps every row of the stage and is better than `start`, else None."""
    import highspy

    s, problem = lag.s, lag.problem
    lag.add_plan(start)
    vectors = []
    for k, (idx, val) in zip(lag.owner, lag.vectors):
        n_pos = np.isin(idx, s.n_cols)
        if np.all(val[n_pos] == np.floor(val[n_pos])):
            vectors.append((idx, val))
            continue
        val = val.copy()
        val[n_pos] = np.floor(val[n_pos] + 1e-9)
        a, b = int(s.first[k]), int(s.last[k])
        served = float(s.rate[a:b][np.searchsorted(s.n_cols[a:b], idx[n_pos])] @ val[n_pos])
        w = s.w_max[k] if s.need[k] <= 0 else min(s.w_max[k], math.floor(SHARE_STEPS * served / s.need[k] + 1e-9))
        val[idx == s.w_col[k]] = w
        keep = val != 0
        vectors.append((idx[keep], val[keep]))
    integer = copy.copy(lag)  # the same servers and rows, these columns
    integer.vectors, integer.owner, integer._all = vectors, list(lag.owner), None
    h = _master_model(integer)
    _add_columns(h, integer, 0)
    n = len(vectors)
    h.changeColsIntegrality(n, np.arange(n, dtype=np.int32), np.full(n, int(highspy.HighsVarType.kInteger),
                                                                      dtype=np.uint8))
    X = integer.matrix()
    at_start = lag.c @ start
    begin = np.zeros(n)  # the start's columns (the last added per server, or its earlier copy)
    index = {lag.key(k, idx, val): j for j, (k, (idx, val)) in enumerate(zip(integer.owner, vectors))}
    for k in range(lag.n_srv):
        j = index.get(lag.key(k, *lag.column(k, lag.plan_option(k, start))))
        if j is not None:
            begin[j] = 1.0
    h.setOptionValue("time_limit", max(time_limit, 1e-3))
    h.setOptionValue("mip_rel_gap", 1e-6)
    if np.all(np.bincount(integer.owner, weights=begin, minlength=lag.n_srv) == 1):
        solution = highspy.HighsSolution()
        solution.col_value = begin.tolist()
        h.setSolution(solution)
    h.run()
    if h.getInfo().primal_solution_status != 2:
        return None
    x = X @ np.rint(np.array(h.getSolution().col_value))
    x[problem.integer] = np.rint(x[problem.integer])
    keeps = keeps_rows(problem, x, bound_tol=1e-9)
    return x if keeps and lag.c @ x < at_start - 1e-9 * max(1.0, abs(at_start)) else None


def _master_model(lag: _Lagrangian):
    """The Dantzig-Wolfe master without columns: convexity rows (= 1), then the coupling rows."""
    import highspy

    inf = highspy.kHighsInf
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    row_lb = np.r_[np.ones(lag.n_srv), np.clip(lag.b_lb, -inf, inf)]
    row_ub = np.r_[np.ones(lag.n_srv), np.clip(lag.b_ub, -inf, inf)]
    h.addRows(len(row_lb), row_lb, row_ub, 0, np.zeros(1, np.int32), np.zeros(0, np.int32), np.zeros(0))
    return h


def _add_columns(h, lag: _Lagrangian, since: int) -> int:
    """The master columns from position `since` on; returns the new count."""
    n = len(lag.vectors) - since
    if n <= 0:
        return since
    X = lag.matrix(since)
    cost = X.T @ lag.c
    coupling = lag.A_D @ X
    convex = sp.csc_matrix((np.ones(n), (np.array(lag.owner[since:]), np.arange(n))), shape=(lag.n_srv, n))
    M = sp.vstack([convex, sp.csc_matrix(coupling)], format="csc")
    M.sort_indices()
    h.addCols(n, np.asarray(cost, dtype=np.float64).ravel(), np.zeros(n), np.ones(n), M.nnz,
              M.indptr[:-1].astype(np.int32), M.indices.astype(np.int32), M.data.astype(np.float64))
    return len(lag.vectors)

