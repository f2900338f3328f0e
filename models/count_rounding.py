"""Single-assign count stages: a start from the LP optimum rounded and repaired.

A count stage's LP bound is tight on single-assign fleets, but its start (the greedy's plan, or the previous stage's)
can leave far more servers out than the optimum (1,000 x 20: 326 at priority 3 against an optimum near 60), and
HiGHS may need its whole time share to close that. An LP vertex serves nearly every server whole: only as many
servers as rows bind across servers are split. So the LP optimum, rounded down and completed, is a plan close to
the bound:
- servers are *groups* of interchangeable members (one server in the full form, a group of models.aggregate in the
  aggregated one), each *option* a column taking members of its group onto one accelerator type;
- every option first takes its LP count rounded down (these fit the capacity together: every coefficient is >= 0);
- then the members still left out take, group by group, the options that fit the capacity still free, the group's
  options the LP uses most first, then the fewest cards first;
- last, a member of the held or the stage's levels still left out gets room where one member of any group can move
  off the full type to another of its options that fits (every group keeps its count, so every count row holds).
Groups go in priority order: levels held at their optimum by earlier stages first, then the stage's own levels,
then lower levels; within a level, the groups the LP serves most first. Three plans are tried (all options' LP
counts first; level by level; the start's plan kept for the held levels) and the best one that keeps every row of
the stage's MIP is returned. It is only a start: the caller uses it when it beats its own, and a plan that meets
the LP bound proves the stage (``lexicographic._start_is_optimal``); exactness never depends on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .allocation import keeps_rows

TOL = 1e-6
MOVE_TRIES = 8  # members moved off a full type tried per option, to make room for one left out


@dataclass(frozen=True)
class CountGroups:
    """The members and options of a single-assign count stage (module docstring)."""

    option_col: np.ndarray  # column of each option (how many of its group's members take it)
    option_group: np.ndarray  # group of each option
    size: np.ndarray  # members per group
    unserved_col: np.ndarray  # per group, the column of its members left out
    priority: np.ndarray  # per group


def server_groups(form) -> CountGroups:
    """Every server of a full single-assign formulation as a group of one, its full-service columns its options."""
    rows = np.flatnonzero(form.unserved_cols >= 0)
    group_of_row = np.full(len(form.unserved_cols), -1, dtype=np.int64)
    group_of_row[rows] = np.arange(len(rows))
    return CountGroups(option_col=form.full_cols, option_group=group_of_row[form.info["server"]],
                       size=np.ones(len(rows)), unserved_col=form.unserved_cols[rows],
                       priority=form.info["priority"][rows])


def round_counts(form, problem, lp_x: np.ndarray, start: np.ndarray | None = None) -> np.ndarray | None:
    """The best of the rounded plans (module docstring) that keeps every row and bound of `problem`, or None."""
    groups = form.info["count_groups"] if "count_groups" in form.info else server_groups(form)
    placement = _Placement.of(form, problem, groups, lp_x)
    if placement is None:
        return None
    counted = problem.c[groups.unserved_col] > 0
    if not counted.any():
        return None
    low, high = groups.priority[counted].min(), groups.priority[counted].max()
    held = groups.priority < low
    tier = np.where(held, 0, np.where(groups.priority <= high, 1, 2))
    served_lp = np.bincount(groups.option_group, weights=lp_x[groups.option_col], minlength=len(groups.size))
    order = np.lexsort((np.arange(len(tier)), -served_lp / np.maximum(groups.size, 1), groups.priority, tier))
    floors = np.minimum(np.floor(lp_x[groups.option_col] + TOL), placement.open_)
    rescued = order[tier[order] <= 1]  # the held levels' and the stage's groups
    plans = [placement.fill(order, floors, True, rescued), placement.fill(order, floors, False, rescued)]
    if start is not None and held.any():
        kept = held[groups.option_group]
        own = np.where(kept, np.rint(start[groups.option_col]), 0.0)
        plans.append(placement.fill(order[~held[order]], np.where(kept, 0.0, floors), False,
                                    rescued[tier[rescued] == 1], base=own))
    best = None
    for counts in plans:
        x = placement.vector(counts)
        if keeps_rows(problem, x) and (best is None or problem.c @ x < problem.c @ best - TOL):
            best = x
    return best


@dataclass
class _Placement:
    """Members placed onto options within the capacity, for one stage's MIP."""

    groups: CountGroups
    n_vars: int
    row: np.ndarray  # capacity row (position in `free`) of each option, -1 if its type has no finite capacity
    cards: np.ndarray  # cards one member takes there
    open_: np.ndarray  # most members an option may take (its column's upper bound)
    capacity: np.ndarray  # per capacity row
    preference: list  # per group, its options in the order they are tried
    by_row: list  # per capacity row, the options on it

    @classmethod
    def of(cls, form, problem, groups: CountGroups, lp_x: np.ndarray):
        rows = form.info["capacity_rows"]
        cap = problem.A[rows][:, groups.option_col].tocsc()
        if np.any(np.diff(cap.indptr) > 1):
            return None  # an option on two capacity rows: not a single-assign count stage
        row = np.full(len(groups.option_col), -1, dtype=np.int64)
        cards = np.zeros(len(groups.option_col))
        has = np.diff(cap.indptr) == 1
        row[has], cards[has] = cap.indices, cap.data
        open_ = np.minimum(problem.ub[groups.option_col], groups.size[groups.option_group])
        frac = lp_x[groups.option_col] - np.floor(lp_x[groups.option_col] + TOL)
        order = np.lexsort((np.arange(len(row)), cards, -frac, groups.option_group))
        order = order[open_[order] > 0]
        bounds = np.searchsorted(groups.option_group[order], np.arange(len(groups.size) + 1))
        preference = [order[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        by_row = [np.flatnonzero(row == r) for r in range(len(rows))]
        return cls(groups, len(problem.lb), row, cards, open_, problem.row_ub[rows].astype(np.float64), preference,
                   by_row)

    def fill(self, order: np.ndarray, floors: np.ndarray, all_floors_first: bool, rescued: np.ndarray,
             base: np.ndarray | None = None) -> np.ndarray:
        """Members per option: `base`, then each group in `order` takes its LP floors (all groups' first with
        `all_floors_first`) and then, for its members left, the options that fit, in its preference order; last,
        the members of the groups in `rescued` still left out get room made for them (``_move_for``)."""
        counts = np.zeros(len(self.row)) if base is None else base.copy()
        served = np.bincount(self.groups.option_group, weights=counts, minlength=len(self.groups.size))
        free = self.capacity - self._used(counts)
        if all_floors_first:
            for g in order.tolist():
                self._take(g, floors, counts, served, free)
        for g in order.tolist():
            if not all_floors_first:
                self._take(g, floors, counts, served, free)
            self._take(g, None, counts, served, free)
        stuck = np.zeros(len(self.row), dtype=bool)  # members with nowhere to move to, until a move changes that
        for g in rescued.tolist():
            while served[g] < self.groups.size[g] and self._move_for(g, counts, served, free, stuck):
                stuck[:] = False
        return counts

    def _move_for(self, g: int, counts: np.ndarray, served: np.ndarray, free: np.ndarray,
                  stuck: np.ndarray) -> bool:
        """Place one more member of group g on an option j whose type lacks room, by moving one member of a group
        (any, g too) off that type to another of its options that fits: every group keeps its count, so every
        count row holds. Movers with the fewest cards that make enough room are tried first (MOVE_TRIES each);
        those found `stuck` (no other option fits; the caller clears it after a move) are not tried again."""
        for j in self.preference[g].tolist():
            r = self.row[j]
            if r < 0 or counts[j] >= self.open_[j]:
                continue
            short = self.cards[j] - free[r]
            on_row = self.by_row[r]
            movers = on_row[(counts[on_row] > 0) & (self.cards[on_row] + TOL >= short) & ~stuck[on_row]]
            for i in movers[np.argsort(self.cards[movers], kind="stable")][:MOVE_TRIES].tolist():
                alts = self.preference[self.groups.option_group[i]]
                alts = alts[(self.row[alts] != r) & (counts[alts] < self.open_[alts])]
                fits = alts[(self.row[alts] < 0) | (free[np.maximum(self.row[alts], 0)] + TOL >= self.cards[alts])]
                if not len(fits):
                    stuck[i] = True
                    continue
                to = int(fits[0])
                counts[i] -= 1
                counts[to] += 1
                free[r] += self.cards[i] - self.cards[j]
                if self.row[to] >= 0:
                    free[self.row[to]] -= self.cards[to]
                counts[j] += 1
                served[g] += 1
                return True
        return False

    def vector(self, counts: np.ndarray) -> np.ndarray:
        x = np.zeros(self.n_vars)
        x[self.groups.option_col] = counts
        served = np.bincount(self.groups.option_group, weights=counts, minlength=len(self.groups.size))
        x[self.groups.unserved_col] = self.groups.size - served
        return x

    def _take(self, g: int, wanted: np.ndarray | None, counts: np.ndarray, served: np.ndarray,
              free: np.ndarray) -> None:
        """Group g's members left take its options in preference order, each as many as `wanted` says (None: as
        many as fit), within the option's bound and the capacity `free` (both updated)."""
        options = self.preference[g]
        if wanted is not None:
            options = options[wanted[options] > 0]
        for j in options.tolist():
            left = self.groups.size[g] - served[g]
            if left <= 0:
                return
            k = min(left if wanted is None else min(wanted[j], left), self.open_[j] - counts[j], self._fits(j, free))
            if k > 0:
                counts[j] += k
                served[g] += k
                if self.row[j] >= 0:
                    free[self.row[j]] -= k * self.cards[j]

    def _used(self, counts: np.ndarray) -> np.ndarray:
        has = self.row >= 0
        return np.bincount(self.row[has], weights=counts[has] * self.cards[has], minlength=len(self.capacity))

    def _fits(self, j: int, free: np.ndarray) -> float:
        if self.row[j] < 0 or self.cards[j] <= 0:
            return np.inf
        return float(np.floor((free[self.row[j]] + TOL) / self.cards[j]))
