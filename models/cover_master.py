"""Multi-assign count stages: a start and a bound from a restricted master over integer covers, priced exactly.

The compact form's LP covers servers with fractions of replicas spread over many candidates: its bound is far below
the integer optimum (a server needing 1.2 replicas' worth pays 1.2 in the LP and 2 in any plan), and rounding it
server by server wastes capacity on every type at once. Here each server gets *covers* (integer replica vectors over
its candidates that serve it fully, within R_c per candidate); the first ones:
- per accelerator type, its candidate of fewest cards alone (R_c replicas);
- the compact LP's replicas of the server rounded down and completed by one candidate (once per candidate), and
  ``patterns._cover_from``'s completion;
- the start's plan, when it serves the server.
The *master* picks at most one cover per server (a binary per cover, Σ x + u_i = 1) within the capacity rows and
the rows that hold earlier count stages at their optimum, minimising the stage's count; servers that neither count
nor are held (lower levels) are left out (free to be unserved).

Its LP is solved by column generation (Dantzig-Wolfe) with exact pricing (``_Master._price``): per server, the
cheapest integer cover at the capacity rows' duals (``cover_pricing.cheapest_cover``). Every round gives a
Lagrangian bound on the stage's integer optimum, Σ duals·rows + Σ_i min(0, least reduced cost of server i), valid
whether or not the LP has converged; at convergence it is the master LP's value, the bound over integer covers (on
1,000 x 20 fleets 84 / 6 / 71 unserved where the compact LP proves 41 / 4 / 39). The caller takes it where it is
stronger than the LP's: it proves a plan that meets it rounded up, and a stage that stops reports it.

Then the master's MIP is solved with HiGHS: first near its LP (covers of small reduced cost only, each server the LP
puts whole on one cover keeping it or left out, then the same with the held servers free: an LP vertex splits at
most as many servers as rows bind across servers, so these MIPs are small), then whole, each from the best plan so
far: the start (its covers moved to ones cheaper at the duals, then servers added where a cover fits) or the LP's
plan rounded (servers placed in turn, held levels first and largest first, each on its cover of most LP weight
that fits). When lower levels are left out, every card a cover uses costs a little in the MIP (``TIE_BREAK``: all
together less than half a server), so that the plan leaves them room for the next stage; the MIP still stops once
its count meets the bound. The bound leaves that tie-break out.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .allocation import SHARE_STEPS
from .cover_pricing import cheapest_cover
from .lexicographic import integral_bound, master_applies
from .patterns import COVER_RTOL, _cover_from

_LOG = logging.getLogger(__name__)
PRICING_SHARE = 0.5  # of the master's time, at most, for pricing its LP
BOUND_RTOL = 1e-6  # the bound prices covers of the load less this (relative): a plan the stage's rows accept
                   # within their tolerance is one of them
CARD_EPS = 1e-9  # pricing's tie-break (fewest cards) costs all cards together this much, in servers
TIE_BREAK = 0.4  # the most all cards together may cost in the master, in servers of the stage's level
DIVE_SHARE = 0.5  # of the master's MIP time, at most, on the covers of small reduced cost (``_Master._dive``)
DIVE_REDUCED_COST = 0.05  # covers whose LP reduced cost is above this (in servers) are left out of that MIP
DIVE_KEEP = 0.5  # that MIP is solved only when it keeps at most this share of the covers
EVICTION_TRIES = 5  # covers of a held server tried by pushing out counted servers


@dataclass(frozen=True)
class MasterResult:
    """A count stage's plan from the master (None when it found none that keeps every row) and a lower bound on
    the stage's integer optimum (the Lagrangian bound of its priced LP; -inf when no round was priced)."""

    x: np.ndarray | None
    bound: float


def cover_master(form, problem, lp_x: np.ndarray, start: np.ndarray | None = None, time_limit: float = 5.0,
                 target: float = -np.inf) -> MasterResult | None:
    """A count-stage start (multi-assign compact form) from the restricted master over covers (module
    docstring) within `time_limit` seconds, stopping early at a plan whose count is at most `target` (a lower
    bound of the stage: no plan is better), with the master's bound on the stage; None when the form has pattern
    servers or the master does not apply."""
    if not master_applies(form):
        return None
    began = time.perf_counter()
    master = _Master(form, problem, start)
    if not master.n_srv:
        return None
    for i, a, b in master.spans():
        ub = problem.ub[form.full_cols[a:b]]
        own = None if start is None or start[form.unserved_cols[i]] > 0.5 else np.rint(start[form.full_cols[a:b]])
        master.add(i, _first_covers(form, i, a, b, lp_x, ub, own, master.type_of[a:b]))
    x = master.solve(time_limit - (time.perf_counter() - began), target)
    return MasterResult(x, master.bound)


def _first_covers(form, i: int, a: int, b: int, lp_x: np.ndarray, ub: np.ndarray,
                  own: np.ndarray | None, types: np.ndarray) -> np.ndarray:
    """The first covers of server i (rows over its candidates a:b; module docstring), unfiltered."""
    info = form.info
    m = b - a
    cards = info["upr_of_full"][a:b] * ub
    out = []
    order = np.lexsort((np.arange(m), cards, types))  # per type, fewest cards first
    first = order[np.r_[True, types[order][1:] != types[order][:-1]]]
    single = np.zeros((len(first), m))
    single[np.arange(len(first)), first] = ub[first]
    out.append(single)
    lp_n = lp_x[form.full_cols[a:b]]
    if lp_n.sum() > 1e-6:
        rate = info["rate_of_full"][a:b]
        need = info["need"][i] * (1 - COVER_RTOL)
        base = np.minimum(np.floor(lp_n + 1e-6), ub)
        short = max(need - rate @ base, 0.0)
        top = np.ceil(short / np.where(rate > 0, rate, np.inf) - 1e-9)
        completed = np.tile(base, (m, 1))
        completed[np.arange(m), np.arange(m)] += top
        out.append(completed)
        out.append(_cover_from(lp_n, form, a, b, i)[None, :])
    if own is not None:
        out.append(own[None, :])
    if info["need"][i] <= 0 and info["fewest"][i] <= 0:
        out.append(np.zeros((1, m)))
    return np.vstack(out)


class _Master:
    """The restricted master of one count stage: covers per server, its LP and MIP with HiGHS."""

    def __init__(self, form, problem, start):
        info = form.info
        self.form, self.problem, self.start = form, problem, start
        unserved = form.unserved_cols
        c_u = np.zeros(len(unserved))
        has = unserved >= 0
        c_u[has] = problem.c[unserved[has]]
        fixed_at = problem.A.shape[0] - problem.fixed_rows
        fixed = problem.A[fixed_at:].tocsc()
        held = np.zeros(len(unserved), dtype=bool)
        if problem.fixed_rows:
            touched = np.zeros(problem.A.shape[1], dtype=bool)
            touched[np.unique(fixed.tocoo().col)] = True
            held[has] = touched[unserved[has]]
        forced_out = np.zeros(len(unserved), dtype=bool)
        forced_out[has] = problem.lb[unserved[has]] >= 1
        self.servers = np.flatnonzero(has & ((c_u != 0) | held) & ~forced_out)
        # When servers of lower levels are left out of the master, each card a cover uses costs a little (all
        # together less than half a server of the stage's level), so that the plan leaves room for them
        lower = has & ~np.isin(np.arange(len(unserved)), self.servers) & ~forced_out
        unit = float(np.min(np.abs(c_u[self.servers][c_u[self.servers] != 0]), initial=1.0))
        capacity_total = float(problem.row_ub[info["capacity_rows"]].sum())
        self.card_cost = TIE_BREAK * unit / capacity_total if lower.any() and capacity_total > 0 else 0.0
        self.n_srv = len(self.servers)
        full_server = info["server_of_full"]
        self.first = np.searchsorted(full_server, self.servers)
        self.last = np.searchsorted(full_server, self.servers, side="right")
        cap_rows = info["capacity_rows"]
        self.capacity = problem.row_ub[cap_rows]
        cap = problem.A[cap_rows].tocsc()[:, form.full_cols]
        self.per_replica = cap.toarray()  # (types x kept candidates): cards of one replica per capacity row
        self.type_of = np.where(self.per_replica.any(axis=0), np.argmax(self.per_replica, axis=0), -1)
        self.cost_u = c_u[self.servers]
        # the held rows restricted to the master's u columns (servers outside the master are left out: u = 1)
        self.held = fixed[:, unserved[self.servers]] if problem.fixed_rows else None
        if problem.fixed_rows:
            left_out = np.zeros(problem.A.shape[1])
            others = np.flatnonzero(has & ~np.isin(np.arange(len(unserved)), self.servers))
            left_out[unserved[others]] = 1.0
            outside = np.asarray(problem.A[fixed_at:] @ left_out).ravel()
            self.held_lb = problem.row_lb[fixed_at:] - outside
            self.held_ub = problem.row_ub[fixed_at:] - outside
        self.outside_cost = float(c_u[forced_out].sum())  # servers unserved in every plan
        # the Lagrangian bound needs held rows over u only (earlier count stages); anything else: no bound
        self.bound = -np.inf
        self.bounded = not problem.fixed_rows or bool(np.isin(fixed.tocoo().col, unserved[has]).all())
        self.unit = unit
        self.card_eps = CARD_EPS * unit / capacity_total if capacity_total > 0 else 0.0
        self.capacity_total = capacity_total
        self.cover_owner: list[int] = []  # position in self.servers
        self.cover_n: list[np.ndarray] = []
        self.cover_cards: list[np.ndarray] = []  # cards per type of each cover
        self.seen: set = set()

    def spans(self):
        return zip(self.servers.tolist(), self.first.tolist(), self.last.tolist())

    def add(self, i: int, covers: np.ndarray) -> int:
        """Add server i's covers that serve it within R_c and each type's capacity and are new; how many."""
        k = int(np.searchsorted(self.servers, i))
        a, b = int(self.first[k]), int(self.last[k])
        info = self.form.info
        rate = info["rate_of_full"][a:b]
        ub = self.problem.ub[self.form.full_cols[a:b]]
        need = info["need"][i] * (1 - COVER_RTOL)
        covers = covers[np.isfinite(covers).all(axis=1)]
        cards = covers @ self.per_replica[:, a:b].T
        ok = (np.all(covers <= ub + 1e-9, axis=1) & (covers >= 0).all(axis=1) & (covers @ rate >= need)
              & (covers.sum(axis=1) >= info["fewest"][i]) & np.all(cards <= self.capacity + 1e-9, axis=1))
        added = 0
        for n, used in zip(covers[ok], cards[ok]):
            key = (k, n.tobytes())
            if key not in self.seen:
                self.seen.add(key)
                self.cover_owner.append(k)
                self.cover_n.append(n)
                self.cover_cards.append(used)
                added += 1
        return added

    def _columns(self, since: int):
        """Covers since position `since` as CSC columns of the master (server row, then cards per type)."""
        owner = np.array(self.cover_owner[since:], dtype=np.int64)
        cards = np.array(self.cover_cards[since:]).reshape(len(owner), len(self.capacity))
        dense = np.zeros((len(owner), 1 + cards.shape[1]))
        dense[:, 0] = 1.0
        dense[:, 1:] = cards
        index = np.c_[owner, self.n_srv + np.arange(cards.shape[1])[None, :].repeat(len(owner), axis=0)]
        nz = dense != 0
        starts = np.r_[0, np.cumsum(nz.sum(axis=1))[:-1]].astype(np.int32)
        return starts, index[nz].astype(np.int32), dense[nz].astype(np.float64)

    def _model(self):
        import highspy

        inf = highspy.kHighsInf
        types = len(self.capacity)
        h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        h.setOptionValue("threads", 1)
        n_held = 0 if self.held is None else self.held.shape[0]
        row_lb = np.r_[np.ones(self.n_srv), np.full(types, -inf)]
        row_ub = np.r_[np.ones(self.n_srv), self.capacity]
        if n_held:
            row_lb = np.r_[row_lb, self.held_lb]
            row_ub = np.r_[row_ub, self.held_ub]
        h.addRows(len(row_lb), np.clip(row_lb, -inf, inf), np.clip(row_ub, -inf, inf), 0, np.zeros(1, np.int32),
                  np.zeros(0, np.int32), np.zeros(0))
        # u columns: the server row, and the held rows
        u = sp.vstack([sp.identity(self.n_srv, format="csc"), sp.csc_matrix((types, self.n_srv)),
                       self.held if n_held else sp.csc_matrix((0, self.n_srv))], format="csc")
        u.sort_indices()
        h.addCols(self.n_srv, self.cost_u.astype(np.float64), np.zeros(self.n_srv), np.ones(self.n_srv), u.nnz,
                  u.indptr[:-1].astype(np.int32), u.indices.astype(np.int32), u.data.astype(np.float64))
        return h

    def _add_columns(self, h, since: int) -> None:
        """Covers since position `since` as columns, at no cost (the master's LP is priced without tie-breaks)."""
        n = len(self.cover_n) - since
        if n <= 0:
            return
        starts, index, values = self._columns(since)
        h.addCols(n, np.zeros(n), np.zeros(n), np.ones(n), len(index), starts, index, values)

    def solve(self, time_limit: float, target: float = -np.inf) -> np.ndarray | None:
        """Price the master's LP (column generation with exact pricing, ``_price``: each round's Lagrangian bound
        kept in ``self.bound``), then solve its MIP; the plan as a vector of the full formulation, or None."""
        import highspy

        began = time.perf_counter()
        h = self._model()
        self._add_columns(h, 0)
        lp_z, type_price = None, np.ones(len(self.capacity))
        while True:
            left = PRICING_SHARE * time_limit - (time.perf_counter() - began)
            if left <= 0:
                break
            h.setOptionValue("time_limit", left)
            h.run()
            if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
                break
            value = h.getInfo().objective_function_value + self.outside_cost
            lp_z = np.array(h.getSolution().col_value)
            reduced = np.array(h.getSolution().col_dual)
            dual = np.array(h.getSolution().row_dual)
            type_price = np.maximum(-dual[self.n_srv:self.n_srv + len(self.capacity)], 0.0)
            since = len(self.cover_n)
            self.bound = max(self.bound, self._price(dual, PRICING_SHARE * time_limit - (time.perf_counter() - began)))
            _LOG.info("cover master: LP %.6g with %d covers, bound %.6g, %.2f s", value, since, self.bound,
                      time.perf_counter() - began)
            self._add_columns(h, since)  # the covers found serve the MIP even when pricing stops here
            # the rounded bound can rise no further than the LP's value
            if len(self.cover_n) == since or integral_bound(self.bound) >= integral_bound(value):
                break
        n_cov = len(self.cover_n)
        if self.card_cost:  # the MIP's tie-break: every card a cover uses costs a little
            h.changeColsCost(n_cov, np.arange(self.n_srv, self.n_srv + n_cov, dtype=np.int32),
                             self._cards().sum(axis=1) * self.card_cost)
        target = max(target, integral_bound(self.bound)) - self.outside_cost  # in the master's objective
        total = self.n_srv + n_cov
        h.changeColsIntegrality(total, np.arange(total, dtype=np.int32),
                                np.full(total, int(highspy.HighsVarType.kInteger), dtype=np.uint8))
        h.setOptionValue("time_limit", max(time_limit - (time.perf_counter() - began), 1e-3))
        h.setOptionValue("mip_abs_gap", (0.99 - (TIE_BREAK if self.card_cost else 0.0)) * self.unit)
        h.setOptionValue("mip_rel_gap", 0.0)
        if np.isfinite(target):  # a count at the target is optimal whatever its cards cost
            h.setOptionValue("objective_target", float(target) + (TIE_BREAK * self.unit if self.card_cost else 0.0))
        start = self._start_columns(n_cov)
        if lp_z is not None:
            if start is not None:
                start = self._fill(self._repack(start, type_price), lp_z, type_price)
            rounded = self._fill(None, lp_z, type_price)  # the LP's plan rounded: every server placed anew
            if rounded is not None and (start is None or self.cost_u @ rounded[:self.n_srv]
                                        < self.cost_u @ start[:self.n_srv]):
                start = rounded
            # the master's MIP near its LP first (an LP vertex splits few servers): servers the LP puts whole on one
            # cover keep it or are left out, then only the counted ones, each time on covers of small reduced cost
            for narrow_held in (True, False) if (self.cost_u == 0).any() else (False,):  # (the same without held)
                if start is not None and self.cost_u @ start[:self.n_srv] <= target + 1e-9:
                    break
                dived = self._dive(h, reduced, lp_z, narrow_held,
                                   DIVE_SHARE * (time_limit - (time.perf_counter() - began)), start)
                if dived is not None and (start is None or self.cost_u @ dived[:self.n_srv]
                                          < self.cost_u @ start[:self.n_srv]):
                    start = dived
        _LOG.info("cover master: start %s", None if start is None else float(self.cost_u @ start[:self.n_srv]))
        if start is not None and self.cost_u @ start[:self.n_srv] <= target + 1e-9:
            return self._plan(start)  # no plan has fewer
        h.setOptionValue("time_limit", max(time_limit - (time.perf_counter() - began), 1e-3))
        if start is not None:
            solution = highspy.HighsSolution()
            solution.col_value = start.tolist()
            h.setSolution(solution)
        h.run()
        _LOG.info("cover master: MIP %s, objective %s, bound %.6g, %d covers, %.2f s",
                  h.modelStatusToString(h.getModelStatus()), h.getInfo().objective_function_value,
                  h.getInfo().mip_dual_bound, n_cov, time.perf_counter() - began)
        if h.getInfo().primal_solution_status != 2:
            return None
        z = np.rint(np.array(h.getSolution().col_value))
        return self._plan(z)

    def _dive(self, h, reduced: np.ndarray, lp_z: np.ndarray, narrow_held: bool, time_limit: float,
              start: np.ndarray | None) -> np.ndarray | None:
        """The master's MIP (`h`, integral already) near its LP optimum `lp_z` within `time_limit` seconds, from
        `start` (whose covers it keeps): on the covers of reduced cost (`reduced`, per column of that LP; covers
        added since are kept) at most ``DIVE_REDUCED_COST``, where each counted server (and held one, with
        `narrow_held`) that the LP puts whole on one cover keeps it or is left out. Master columns, or None (also
        when this MIP keeps more than ``DIVE_KEEP`` of the covers: a degenerate LP with many covers at no reduced
        cost). An LP vertex splits few servers and most covers cost far more than the gap, so this MIP is much
        smaller than the master's: it finds plans near the LP where the whole one is still at its root."""
        import highspy

        if time_limit <= 0:
            return None
        n_cov = len(self.cover_n)
        rc = np.full(n_cov, -np.inf)
        rc[:len(reduced) - self.n_srv] = reduced[self.n_srv:]
        weight = np.zeros(n_cov)
        weight[:len(lp_z) - self.n_srv] = lp_z[self.n_srv:]
        owner = np.array(self.cover_owner, dtype=np.int64)
        whole = np.zeros(self.n_srv, dtype=bool)
        whole[owner[weight > 1 - 1e-6]] = True
        narrowed = whole & (narrow_held | (self.cost_u != 0))
        dropped = (rc > DIVE_REDUCED_COST * self.unit) | (narrowed[owner] & (weight <= 1 - 1e-6))
        if start is not None:
            dropped &= start[self.n_srv:] < 0.5
        if dropped.sum() < (1 - DIVE_KEEP) * n_cov:
            return None
        shut = (np.flatnonzero(dropped) + self.n_srv).astype(np.int32)
        h.changeColsBounds(len(shut), shut, np.zeros(len(shut)), np.zeros(len(shut)))
        h.setOptionValue("time_limit", max(time_limit, 1e-3))
        if start is not None:
            solution = highspy.HighsSolution()
            solution.col_value = start.tolist()
            h.setSolution(solution)
        h.run()
        z = np.rint(np.array(h.getSolution().col_value)) if h.getInfo().primal_solution_status == 2 else None
        _LOG.info("cover master: MIP on %d of %d covers, %s, objective %s", n_cov - len(shut), n_cov,
                  h.modelStatusToString(h.getModelStatus()), None if z is None else float(self.cost_u @ z[:self.n_srv]))
        h.changeColsBounds(len(shut), shut, np.zeros(len(shut)), np.ones(len(shut)))
        return z

    def _price(self, dual: np.ndarray, time_left: float) -> float:
        """Add, per server, its cheapest cover at the LP's duals `dual` when its reduced cost is negative (exact
        pricing: ``cover_pricing.cheapest_cover``); return the Lagrangian bound at these duals (-inf when the
        master gives none), a lower bound on the stage's integer optimum whether or not the LP has converged.

        With π the server rows' duals, y ≤ 0 the capacity rows' and ν the held rows' (each clipped to its valid
        sign), every integer plan costs at least Σ π + y·U + ν·(held bound) + Σ_i min(0-or-less reduced cost of
        server i's options: unserved, or any cover). Servers are priced exactly only where a cheap lower bound
        (the load at the least price per rate; the replicas at the least price) is below their best option
        already in the master; once `time_left` runs out, the rest keep that lower bound. The reduced costs
        include the tie-break ``CARD_EPS`` per card, taken back off the bound (no plan uses more cards than the
        capacity)."""
        if not self.bounded:
            return -np.inf
        began = time.perf_counter()
        types = len(self.capacity)
        info, form = self.form.info, self.form
        pi = dual[:self.n_srv]
        y = np.minimum(dual[self.n_srv:self.n_srv + types], 0.0)
        price = -y + self.card_eps
        value = float(pi.sum() + y @ self.capacity)
        best = self.cost_u - pi
        if self.held is not None and self.held.shape[0]:
            nu = dual[self.n_srv + types:]
            nu = np.where(nu > 0, np.where(np.isfinite(self.held_lb), nu, 0.0),
                          np.where(np.isfinite(self.held_ub), nu, 0.0))
            value += float(nu[nu > 0] @ self.held_lb[nu > 0] + nu[nu < 0] @ self.held_ub[nu < 0])
            best = best - self.held.T @ nu
        owner = np.array(self.cover_owner, dtype=np.int64)
        if len(owner):
            np.minimum.at(best, owner, self._cards() @ price - pi[owner])
        w = self.per_replica.T @ price  # per replica of each candidate
        rate = info["rate_of_full"]
        cols = form.full_cols
        cards = self.per_replica.max(axis=0)  # of one replica, on its type
        group = np.where(self.type_of >= 0, self.type_of, types)  # (candidates on no capacity row: unlimited)
        room = np.r_[self.capacity, np.inf]
        bound = np.where(cards > 0, np.minimum(self.problem.ub[cols], np.floor(room[group] / np.where(
            cards > 0, cards, 1.0) + 1e-9)), self.problem.ub[cols])
        need = info["need"][self.servers] * (1 - BOUND_RTOL)
        least = info["fewest"][self.servers]
        usable = (bound > 0) & (rate > 0)
        per_rate = _span_min(np.where(usable, w / np.where(rate > 0, rate, 1.0), np.inf), self.first, self.last)
        per_replica = _span_min(np.where(bound > 0, w, np.inf), self.first, self.last)  # (any rate counts)
        with np.errstate(invalid="ignore"):  # 0 * inf where a server needs nothing: the where() takes 0
            lower = np.maximum(np.where(need > 0, need * per_rate, 0.0), np.where(least > 0, least * per_replica, 0.0))
        lower = lower - pi
        todo = np.flatnonzero(lower < best - 1e-9)
        for k in todo.tolist():
            if time.perf_counter() - began > time_left:
                break
            a, b = int(self.first[k]), int(self.last[k])
            low, cost, n = cheapest_cover(w[a:b], rate[a:b], bound[a:b], need[k], least[k], group=group[a:b],
                                          cards=cards[a:b], room=room)
            lower[k] = low - pi[k]
            if n is not None and cost - pi[k] < best[k] - 1e-9:
                self.add(int(self.servers[k]), n[None, :])
        _LOG.debug("cover master: %d servers to price exactly, %.2f s", len(todo),
                   time.perf_counter() - began)
        total = value + float(np.minimum(best, lower).sum())
        return total + self.outside_cost - self.card_eps * self.capacity_total - 1e-9 * (
            abs(value) + float(np.abs(np.minimum(best, lower)).sum()))

    def _fill(self, z: np.ndarray | None, lp_z: np.ndarray, price: np.ndarray) -> np.ndarray | None:
        """Master columns that serve more servers than `z`: the servers `z` leaves out (all, when None) take, in
        turn, their cover of most weight in the master's LP optimum `lp_z` that fits the capacity left (then fewest
        cards); servers of held levels first, and they may push out servers of the counted levels (those the LP
        serves least first); then the counted ones, the most served by the LP first. None if a held row ends up broken
        (only possible from None)."""
        n_cov = len(self.cover_n)
        owner = np.array(self.cover_owner, dtype=np.int64)
        cards = self._cards()
        weight = np.zeros(n_cov)
        weight[:len(lp_z) - self.n_srv] = lp_z[self.n_srv:]
        served_lp = np.bincount(owner, weights=weight, minlength=self.n_srv)
        if z is None:
            z = np.zeros(self.n_srv + n_cov)
            z[:self.n_srv] = 1.0
        else:
            z = z.copy()
        free = self.capacity - cards.T @ z[self.n_srv:]
        held = self.cost_u == 0
        todo = np.flatnonzero(z[:self.n_srv] > 0.5)
        level = self.form.info["priority"][self.servers]
        # held servers largest first (first-fit decreasing: the fewest cards any cover of theirs needs, priced)
        priced = cards @ price + 1e-6 * cards.sum(axis=1)  # cards at the LP's capacity duals, then fewest cards
        least = np.full(self.n_srv, np.inf)
        np.minimum.at(least, owner, priced)
        size = np.where(held, -least, 0.0)
        order = todo[np.lexsort((todo, -served_lp[todo], size[todo], -self.cost_u[todo], level[todo], ~held[todo]))]
        by_owner, spans = self._by_owner(owner)
        chosen = np.full(self.n_srv, -1, dtype=np.int64)
        chosen[owner[z[self.n_srv:] > 0.5]] = np.flatnonzero(z[self.n_srv:] > 0.5)
        for k in order.tolist():
            own = by_owner[spans[k]:spans[k + 1]]
            own = own[np.lexsort((own, priced[own], -weight[own]))]
            fits = own[np.all(cards[own] <= free + 1e-9, axis=1)]
            if not len(fits) and held[k]:  # push out counted servers using the short types, if that is enough
                for j in own[:EVICTION_TRIES].tolist():
                    short = np.maximum(cards[j] - free, 0.0)
                    victims = np.flatnonzero((chosen >= 0) & ~held)
                    victims = victims[cards[chosen[victims]] @ short > 0]
                    victims = victims[np.lexsort((victims, served_lp[victims]))]
                    room = free + np.cumsum(cards[chosen[victims]], axis=0) if len(victims) else np.zeros((0, len(free)))
                    enough = np.flatnonzero(np.all(cards[j] <= room + 1e-9, axis=1))
                    if not len(enough):
                        continue
                    for v in victims[:enough[0] + 1].tolist():
                        free += cards[chosen[v]]
                        z[self.n_srv + chosen[v]], z[v], chosen[v] = 0.0, 1.0, -1
                    fits = np.array([j])
                    break
            if len(fits):
                j = int(fits[0])
                z[k], z[self.n_srv + j], chosen[k] = 0.0, 1.0, j
                free -= cards[j]
        if self.held is not None and self.held.shape[0]:
            counts = self.held @ z[:self.n_srv]
            if np.any(counts > self.held_ub + 1e-9) or np.any(counts < self.held_lb - 1e-9):
                return None
        return z

    def _repack(self, z: np.ndarray, type_price: np.ndarray) -> np.ndarray:
        """`z` with each server it serves moved, in turn, to its cover of least cards priced at the master LP's
        capacity duals `type_price` (then fewest cards) among those that fit the capacity left: room for more."""
        cards = self._cards()
        owner = np.array(self.cover_owner, dtype=np.int64)
        worth = cards @ type_price + 1e-6 * cards.sum(axis=1)
        z = z.copy()
        free = self.capacity - cards.T @ z[self.n_srv:]
        by_owner, spans = self._by_owner(owner)
        for j in np.flatnonzero(z[self.n_srv:] > 0.5).tolist():
            k = owner[j]
            own = by_owner[spans[k]:spans[k + 1]]
            room = free + cards[j]
            fits = own[np.all(cards[own] <= room + 1e-9, axis=1)]
            best = int(fits[np.lexsort((fits, worth[fits]))[0]])
            if worth[best] < worth[j]:
                z[self.n_srv + j], z[self.n_srv + best] = 0.0, 1.0
                free = room - cards[best]
        return z

    def _by_owner(self, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The covers ordered by server (stable), and where each server's run starts: server k's covers are
        by_owner[spans[k]:spans[k + 1]]."""
        by_owner = np.argsort(owner, kind="stable")
        return by_owner, np.searchsorted(owner[by_owner], np.arange(self.n_srv + 1))

    def _cards(self) -> np.ndarray:
        """(covers x types) cards of each cover."""
        return np.array(self.cover_cards).reshape(len(self.cover_cards), len(self.capacity))

    def _start_columns(self, n_cov: int) -> np.ndarray | None:
        """The start as master columns (u first, then covers), when each server it serves uses a listed cover."""
        if self.start is None:
            return None
        form, start = self.form, self.start
        z = np.zeros(self.n_srv + n_cov)
        index = {(k, n.tobytes()): j for j, (k, n) in enumerate(zip(self.cover_owner, self.cover_n))}
        for k, (i, a, b) in enumerate(self.spans()):
            if start[form.unserved_cols[i]] > 0.5:
                z[k] = 1.0
                continue
            j = index.get((k, np.rint(start[form.full_cols[a:b]]).tobytes()))
            if j is None:
                return None
            z[self.n_srv + j] = 1.0
        return z

    def _plan(self, z: np.ndarray) -> np.ndarray | None:
        form, problem = self.form, self.problem
        unserved, share = form.unserved_cols, form.info["share_cols"]
        x = np.zeros(form.n_vars)
        x[unserved[unserved >= 0]] = 1.0
        for j in np.flatnonzero(z[self.n_srv:] > 0.5).tolist():
            k = self.cover_owner[j]
            i, a, b = int(self.servers[k]), int(self.first[k]), int(self.last[k])
            x[form.full_cols[a:b]] = self.cover_n[j]
            x[unserved[i]] = 0.0
            x[share[i]] = SHARE_STEPS
        ax = problem.A @ x
        ok = (np.all(ax >= problem.row_lb - 1e-6) and np.all(ax <= problem.row_ub + 1e-6)
              and np.all(x >= problem.lb - 1e-9) and np.all(x <= problem.ub + 1e-9))
        return x if ok else None


def _span_min(values: np.ndarray, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """min(values[first[k]:last[k]]) per k (inf for an empty span)."""
    padded = np.r_[values, np.inf]
    idx = np.c_[first, last].ravel()
    out = np.minimum.reduceat(padded, idx)[::2]
    return np.where(last > first, out, np.inf)

