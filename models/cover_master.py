"""Multi-assign count stages: a start from a restricted master over integer covers, priced from its LP.

The compact form's LP covers servers with fractions of replicas spread over many candidates; rounding it server by
server wastes capacity on every type at once, so servers of the stage's level are left out that an integer plan
could serve, and HiGHS on the compact MIP at 1,000 servers does not finish its root in seconds. Here each server
gets a few *covers* (integer replica vectors over its candidates that serve it fully, within R_c per candidate):
- per accelerator type, its candidate of fewest cards alone (R_c replicas);
- the compact LP's replicas of the server rounded down and completed by one candidate (once per candidate), and
  ``patterns._cover_from``'s completion;
- the start's plan, when it serves the server.
The *master* picks at most one cover per server (a binary per cover, Σ x + u_i = 1) within the capacity rows and
the rows that hold earlier count stages at their optimum, minimising the stage's count; servers that neither count
nor are held (lower levels) are left out. Its LP is priced for better covers (column generation: per server, with
the capacity rows' duals as a price per card, the cheapest of "as many replicas of c as stay below the load, then
d to cover it" over all pairs (c, d); ``_price``), then its MIP is solved with HiGHS from the best of the start
(its covers moved to ones cheaper at the duals, then servers added where a cover fits) and the LP's plan rounded
(servers placed in turn, held levels first and largest first, each on its cover of most LP weight that fits). An LP
vertex of the master splits at most as many servers as rows bind across servers, so its MIP finds integer plans
fast where the compact MIP waits for its root. When lower levels are left out, every card a cover uses costs a
little (``TIE_BREAK``: all together less than half a server), so that the plan leaves them room for the next
stage; the MIP still stops once its count meets its bound.

Only a start (speed-up ``cover-master``): the stage is still proven by its LP bound (``skip``) or by HiGHS, so the
pricing need not be exact.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import scipy.sparse as sp

from .allocation import SHARE_STEPS
from .patterns import COVER_RTOL, _cover_from

_LOG = logging.getLogger(__name__)
PRICING_ROUNDS = 4  # column-generation rounds of the master LP, at most
PRICING_SHARE = 0.3  # of the master's time, at most, for pricing
PRICING_GAIN = 1e-3  # pricing stops when a round improves the master LP by less (relative)
TIE_BREAK = 0.4  # the most all cards together may cost in the master, in servers of the stage's level
EVICTION_TRIES = 5  # covers of a held server tried by pushing out counted servers


def cover_master(form, problem, lp_x: np.ndarray, start: np.ndarray | None = None, time_limit: float = 5.0,
                 target: float = -np.inf) -> np.ndarray | None:
    """A count-stage start (multi-assign compact form) from the restricted master over covers (module
    docstring) within `time_limit` seconds, stopping early at a plan whose count is at most `target` (the stage's
    lower bound: no plan is better); None when the form has pattern servers, or the master finds no plan that keeps
    every row."""
    if not form.heterogeneous or {"patterns", "pattern_cols"} & set(form.info) or "capacity_rows" not in form.info:
        return None
    began = time.perf_counter()
    master = _Master(form, problem, start)
    if not master.n_srv:
        return None
    for i, a, b in master.spans():
        ub = problem.ub[form.full_cols[a:b]]
        own = None if start is None or start[form.unserved_cols[i]] > 0.5 else np.rint(start[form.full_cols[a:b]])
        master.add(i, _first_covers(form, i, a, b, lp_x, ub, own, master.type_of[a:b]))
    return master.solve(time_limit - (time.perf_counter() - began), target)


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


def _price(rate: np.ndarray, ub: np.ndarray, need: float, least: float) -> np.ndarray:
    """Integer covers of one server made of two candidates: per pair (c, d), as many replicas of c as stay below
    the load (floor), completed by d (ceil; c alone when d is c), and more of d up to `least` replicas; unfiltered
    (rows may exceed ub)."""
    m = len(rate)
    safe = np.where(rate > 0, rate, np.inf)
    base = np.minimum(np.floor(need / safe + 1e-9), ub)
    left = np.maximum(need - base * rate, 0.0)
    top = np.ceil(left[:, None] / safe[None, :] - 1e-9)  # (c, d): replicas of d completing c's
    n = np.zeros((m, m, m))
    idx = np.arange(m)
    n[idx, :, idx] = base[:, None]
    n[idx[:, None], idx[None, :], idx[None, :]] += top
    covers = n.reshape(m * m, m)
    d_of = np.tile(idx, m)
    covers[np.arange(m * m), d_of] += np.maximum(least - covers.sum(axis=1), 0.0)
    return covers


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
        cards = np.array(self.cover_cards[since:]).reshape(len(owner), -1)
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
        held = (self.held.tocsc() if n_held else sp.csc_matrix((0, self.n_srv)))
        starts, index, values = [], [], []
        at = 0
        for k in range(self.n_srv):
            rows = held.indices[held.indptr[k]:held.indptr[k + 1]]
            starts.append(at)
            index.extend([k, *(self.n_srv + types + rows).tolist()])
            values.extend([1.0, *held.data[held.indptr[k]:held.indptr[k + 1]].tolist()])
            at += 1 + len(rows)
        h.addCols(self.n_srv, self.cost_u.astype(np.float64), np.zeros(self.n_srv), np.ones(self.n_srv), len(index),
                  np.array(starts, np.int32), np.array(index, np.int32), np.array(values, np.float64))
        return h

    def _add_columns(self, h, since: int) -> None:
        n = len(self.cover_n) - since
        if n <= 0:
            return
        starts, index, values = self._columns(since)
        cost = np.array(self.cover_cards[since:]).reshape(n, -1).sum(axis=1) * self.card_cost
        h.addCols(n, cost, np.zeros(n), np.ones(n), len(index), starts, index, values)

    def solve(self, time_limit: float, target: float = -np.inf) -> np.ndarray | None:
        """Price the master's LP, then solve its MIP; the plan as a vector of the full formulation, or None."""
        import highspy

        began = time.perf_counter()
        h = self._model()
        self._add_columns(h, 0)
        info, form = self.form.info, self.form
        price_of = self.per_replica.T  # (candidates x types)
        previous, lp_z, type_price = None, None, np.ones(len(self.capacity))
        for _ in range(PRICING_ROUNDS):
            left = PRICING_SHARE * time_limit - (time.perf_counter() - began)
            if left <= 0:
                break
            h.setOptionValue("time_limit", left)
            h.run()
            if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
                break
            value = h.getInfo().objective_function_value
            if previous is not None and previous - value <= PRICING_GAIN * max(1.0, abs(value)):
                break
            previous = value
            lp_z = np.array(h.getSolution().col_value)
            _LOG.info("cover master: LP %.6g with %d covers, %.2f s", value, len(self.cover_n),
                      time.perf_counter() - began)
            dual = np.array(h.getSolution().row_dual)
            type_price = np.maximum(-dual[self.n_srv:self.n_srv + len(self.capacity)], 0.0)
            card_price = price_of @ type_price
            since = len(self.cover_n)
            for k, (i, a, b) in enumerate(self.spans()):
                covers = _price(info["rate_of_full"][a:b], self.problem.ub[form.full_cols[a:b]],
                                info["need"][i] * (1 - COVER_RTOL), info["fewest"][i])
                worth = covers @ card_price[a:b]
                best = np.flatnonzero(worth - dual[k] < -1e-7)
                if len(best):
                    self.add(i, covers[best[np.argsort(worth[best], kind="stable")[:2]]])
            if len(self.cover_n) == since:
                break
            self._add_columns(h, since)
        n_cov = len(self.cover_n)
        total = self.n_srv + n_cov
        h.changeColsIntegrality(total, np.arange(total, dtype=np.int32),
                                np.full(total, int(highspy.HighsVarType.kInteger), dtype=np.uint8))
        h.setOptionValue("time_limit", max(time_limit - (time.perf_counter() - began), 1e-3))
        unit = float(np.min(np.abs(self.cost_u[self.cost_u != 0]), initial=1.0))
        h.setOptionValue("mip_abs_gap", (0.99 - (TIE_BREAK if self.card_cost else 0.0)) * unit)
        h.setOptionValue("mip_rel_gap", 0.0)
        if np.isfinite(target):  # a count at the target is optimal whatever its cards cost
            h.setOptionValue("objective_target", float(target) + (TIE_BREAK * unit if self.card_cost else 0.0))
        start = self._start_columns(n_cov)
        if lp_z is not None:
            if start is not None:
                start = self._fill(self._repack(start, type_price), lp_z, type_price)
            rounded = self._fill(None, lp_z, type_price)  # the LP's plan rounded: every server placed anew
            if rounded is not None and (start is None or self.cost_u @ rounded[:self.n_srv]
                                        < self.cost_u @ start[:self.n_srv]):
                start = rounded
        _LOG.info("cover master: start %s", None if start is None else float(self.cost_u @ start[:self.n_srv]))
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

    def _fill(self, z: np.ndarray | None, lp_z: np.ndarray, price: np.ndarray) -> np.ndarray | None:
        """Master columns that serve more servers than `z`: the servers `z` leaves out (all, when None) take, in
        turn, their cover of most weight in the master's LP optimum `lp_z` that fits the capacity left (then fewest
        cards); servers of held levels first, and they may push out servers of the counted levels (those the LP
        serves least first); then the counted ones, the most served by the LP first. None if a held row ends up
        broken (only possible from None)."""
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
        by_owner = np.argsort(owner, kind="stable")
        spans = np.searchsorted(owner[by_owner], np.arange(self.n_srv + 1))
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
        by_owner = np.argsort(owner, kind="stable")
        spans = np.searchsorted(owner[by_owner], np.arange(self.n_srv + 1))
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

    def _cards(self) -> np.ndarray:
        """(covers x types) cards of each cover."""
        return np.array(self.cover_cards).reshape(len(self.cover_cards), -1)

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
