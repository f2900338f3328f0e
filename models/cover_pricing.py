"""Exact pricing of integer covers: the cheapest replica vector that fully serves one multi-assign server.

Per server, at a price w_c ≥ 0 per replica of each candidate c (its cards times the price of a card of its type):

    min Σ_c w_c n_c   s.t.   Σ_c rate_c n_c ≥ need,   Σ_c n_c ≥ least,   n_c ∈ {0, …, u_c},
                             Σ_{c of type k} cards_c n_c ≤ room_k   (optional: a cover that fits the capacity)

a bounded integer covering knapsack over the server's candidates (about 20). ``cheapest_cover`` solves it by depth
first branch and bound over the candidates in order of price per rate, each node bounded by the fractional (LP)
completion of what is left (rooms left out: still a lower bound). Before the search, candidates of equal price,
rate, type and cards are merged (their bounds added), and a candidate is dropped when another one of no higher
price and no lower rate covers the server alone within its bound, on a type whose room no cover can exceed (any
cover using the first turns into one no dearer without it, by moving its replicas to the other). The search stops
after ``node_limit`` nodes; it then returns the best cover found with a *lower bound* on the cheapest one (the
root's fractional cost), which is all a Lagrangian bound needs.
"""

from __future__ import annotations

import math

import numpy as np

NODE_LIMIT = 5000  # nodes of one server's search, beyond which its root's fractional bound stands


def cheapest_cover(price: np.ndarray, rate: np.ndarray, bound: np.ndarray, need: float, least: float = 0.0,
                   node_limit: int = NODE_LIMIT, group: np.ndarray | None = None, cards: np.ndarray | None = None,
                   room: np.ndarray | None = None) -> tuple[float, float, np.ndarray | None]:
    """(lower bound, cost, replicas) of the cheapest integer cover (module docstring), with per candidate its type
    `group` (index into `room`) and `cards` per replica when rooms are given; the lower bound equals the cost when
    the search finished; replicas None (cost infinite) when it found no cover."""
    price = np.asarray(price, dtype=np.float64)
    rate = np.asarray(rate, dtype=np.float64)
    bound = np.floor(np.asarray(bound, dtype=np.float64) + 1e-9)
    m = len(price)
    if room is None:
        group, cards, room = np.zeros(m, dtype=np.int64), np.zeros(m), np.array([np.inf])
    group = np.asarray(group, dtype=np.int64)
    cards = np.asarray(cards, dtype=np.float64)
    room = np.asarray(room, dtype=np.float64)
    bound = np.where(cards > 0, np.minimum(bound, np.floor(room[group] / np.where(cards > 0, cards, 1.0) + 1e-9)),
                     bound)
    need, least = float(need), max(float(least), 0.0)
    if need <= 0 and least <= 0:
        return 0.0, 0.0, np.zeros(m)
    items, merged = _useful(price, rate, bound, need, least, group, cards, room)
    if not len(items):
        return math.inf, math.inf, None
    per_rate = np.where(rate[items] > 0, price[items] / np.where(rate[items] > 0, rate[items], 1.0), np.inf)
    order = np.lexsort((items, price[items], per_rate))  # by price per rate (no rate: last): deterministic
    items, merged = items[order], merged[order]
    search = _Search(price[items].tolist(), rate[items].tolist(), merged.astype(np.int64).tolist(),
                     group[items].tolist(), cards[items].tolist(), room.tolist(), node_limit)
    lower = search.fractional(0, need, least)
    if not math.isfinite(lower):
        return math.inf, math.inf, None
    search.run(need, least)
    if search.best is None:  # the rooms leave no cover, or the search stopped before it found one
        return (math.inf if search.finished else lower), math.inf, None
    n = _spread(items, np.array(search.best, dtype=np.float64), price, rate, bound, group, cards)
    cost = float(price @ n)
    return (cost if search.finished else min(lower, cost)), cost, n


def _useful(price: np.ndarray, rate: np.ndarray, bound: np.ndarray, need: float, least: float, group: np.ndarray,
            cards: np.ndarray, room: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The candidates worth searching (one per price, rate, type and cards; none that another covering alone makes
    useless) and their bounds (summed over equal candidates, within the room)."""
    ok = np.flatnonzero(bound > 0)  # (a candidate without rate still counts towards `least`)
    if not len(ok):
        return ok, np.zeros(0)
    p, r, u, g, c = price[ok], rate[ok], bound[ok], group[ok], cards[ok]
    # types whose room holds every candidate of theirs at its bound: no cover can exceed it
    loose = np.bincount(g, weights=u * c, minlength=len(room)) <= room
    alone = (u * r >= need) & (u >= least) & loose[g]
    same = ((p[:, None] == p[None, :]) & (r[:, None] == r[None, :]) & (g[:, None] == g[None, :])
            & (c[:, None] == c[None, :]))
    first = np.argmax(same, axis=1) == np.arange(len(ok))
    better = ((p[None, :] <= p[:, None]) & (r[None, :] >= r[:, None])
              & ((p[None, :] < p[:, None]) | (r[None, :] > r[:, None])))  # [j, i]: i is better than j
    keep = first & ~np.any(better & alone[None, :], axis=1)
    total = (same[keep] * u[None, :]).sum(axis=1)
    fits = np.floor(room[g[keep]] / np.where(c[keep] > 0, c[keep], 1.0) + 1e-9)
    return ok[keep], np.where(c[keep] > 0, np.minimum(total, fits), total)


def _spread(items: np.ndarray, counts: np.ndarray, price: np.ndarray, rate: np.ndarray, bound: np.ndarray,
            group: np.ndarray, cards: np.ndarray) -> np.ndarray:
    """Replicas per candidate: each merged item's count spread over its equal candidates, within their bounds."""
    n = np.zeros(len(price))
    for j, left in zip(items.tolist(), counts.tolist()):
        n[j] = min(left, bound[j])  # the item's own candidate first (and alone, mostly)
        left -= n[j]
        if left <= 0:
            continue
        equal = (price == price[j]) & (rate == rate[j]) & (group == group[j]) & (cards == cards[j]) & (bound > 0)
        equal[j] = False
        for k in np.flatnonzero(equal).tolist():
            if left <= 0:
                break
            take = min(left, bound[k])
            n[k] += take
            left -= take
    return n


class _Search:
    """Depth-first branch and bound over items in order of price per rate (plain Python: many tiny nodes)."""

    def __init__(self, price: list[float], rate: list[float], bound: list[int], group: list[int], cards: list[float],
                 room: list[float], node_limit: int):
        self.w, self.r, self.u, self.g, self.c, self.room = price, rate, bound, group, cards, room
        self.k = k = len(price)
        self.reach = [0.0] * (k + 1)  # rate and replicas items t.. can add at most (rooms left out)
        self.count = [0] * (k + 1)
        for t in range(k - 1, -1, -1):
            self.reach[t] = self.reach[t + 1] + bound[t] * rate[t]
            self.count[t] = self.count[t + 1] + bound[t]
        self.cheap = sorted(range(k), key=lambda t: (price[t], t))
        self.nodes, self.limit, self.finished = 0, node_limit, True
        self.best: list[int] | None = None
        self.best_cost = math.inf
        self.cur = [0] * k

    def fractional(self, t: int, need: float, least: float) -> float:
        """A lower bound on completing from item t: the larger of the cheapest fractional cover of `need` (by price
        per rate) and the cheapest `least` replicas (by price); infinite when items t.. cannot cover."""
        if self.reach[t] < need or self.count[t] < least:
            return math.inf
        cost, left, s = 0.0, need, t
        while left > 0 and s < self.k and self.r[s] > 0:  # (items without rate come last)
            take = min(self.u[s], left / self.r[s])
            cost += take * self.w[s]
            left -= take * self.r[s]
            s += 1
        if least > 0:
            replicas, left = 0.0, least
            for j in self.cheap:
                if left <= 0:
                    break
                if j >= t:
                    take = min(self.u[j], left)
                    replicas += take * self.w[j]
                    left -= take
            cost = max(cost, replicas)
        return cost

    def _fit(self, j: int, used: float = 0.0) -> int:
        """Replicas of item j the room of its type still takes (less `used` cards)."""
        room = self.room[self.g[j]] - used
        if self.c[j] <= 0 or room == math.inf:
            return self.u[j]
        return min(self.u[j], int(math.floor(room / self.c[j] + 1e-9)))

    def run(self, need: float, least: float) -> None:
        self._dfs(0, need, least, 0.0)

    def _dfs(self, t: int, need: float, least: float, cost: float) -> None:
        self.nodes += 1
        if self.nodes > self.limit:
            self.finished = False
            return
        if need <= 0:  # covered: the cheapest replicas still missing, if any, complete it
            picks, left, used, capped, total = [], least, {}, False, cost
            for j in self.cheap:
                if left <= 0:
                    break
                if j >= t:
                    fit = self._fit(j, used.get(self.g[j], 0.0))
                    capped |= fit < self.u[j]
                    take = min(fit, left)
                    if take > 0:
                        picks.append((j, take))
                        used[self.g[j]] = used.get(self.g[j], 0.0) + take * self.c[j]
                        total += take * self.w[j]
                        left -= take
            if left <= 0 and total < self.best_cost:
                self.best_cost, self.best = total, self.cur.copy()
                for j, take in picks:
                    self.best[j] += take
            if not capped:  # cheapest first is exact when no room limits it; else branch on as below
                return
        if cost + self.fractional(t, need, least) >= self.best_cost * (1 - 1e-12):
            return
        w, r, g, c = self.w[t], self.r[t], self.g[t], self.c[t]
        top = max(math.ceil(need / r) if r > 0 else 0, int(math.ceil(least)))
        for v in range(min(self._fit(t), top), -1, -1):
            self.cur[t] = v
            self.room[g] -= v * c
            self._dfs(t + 1, need - v * r, least - v, cost + v * w)
            self.room[g] += v * c
            if not self.finished:
                break
        self.cur[t] = 0
