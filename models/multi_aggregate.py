"""Multi-assign count stages on interchangeable servers aggregated over covering patterns.

In a count stage only whether a server is fully served counts (the stage objective is the number left out per
priority level), and a fully served server meets the rest of the MIP only through the cards per accelerator type
its replicas use (the capacity rows). A fully served server's replicas contain a minimal cover of its load
(models.patterns), and a cover whose cards are no more on every type than another's serves the server just as
well. So per server only its *count patterns* matter: the card vectors (cards per type) of its minimal covers that
no other minimal cover of it beats on every type (value plays no part in a count stage).

Servers with the same priority and the same set of count patterns are interchangeable in the count stages. A group
of them is one integer per pattern (how many of the group run it) plus one for how many are left out, their sum
the group's size; each pattern's column uses its cards in the capacity rows. Servers whose patterns are too many to
enumerate (``patterns.PATTERN_LIMIT``, ``MIX_LIMIT``) keep their own columns and rows of the full formulation.

Exactness, stage by stage of the count stages (the kept rows of earlier count stages included):
(a) a plan of the full formulation maps to the aggregated one with the same count per level and no more cards per
    type: each served member is counted at a pattern with no more cards than its replicas use (one exists, above),
    each unserved member as left out (its replicas dropped), the servers not aggregated as they are; so the
    aggregated optimum is at least as good;
(b) an aggregated point disaggregates (``MultiAggregation.disaggregate``: members in table order take the
    patterns in order, each with its own replica mix having that pattern's cards, the rest are unserved) into a
    plan of the full formulation with the same count per level and the same cards per type.
So the count optima agree level by level, and the disaggregated plan is optimal for every count stage. The
best-effort and value stages then run on the full formulation from it, with the counts held. The aggregated MIP
has no symmetry between interchangeable servers and its LP is the pattern (Dantzig-Wolfe) bound for them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .aggregate import left_out_objective
from .allocation import SHARE_STEPS, Formulation, Stage
from .patterns import server_patterns


@dataclass(frozen=True)
class MultiAggregation:
    """The aggregated count formulation of a multi-assign formulation and how its solutions map back."""

    form: Formulation
    table: object  # the CandidateTable of the full formulation
    kept_cols: np.ndarray  # full-formulation columns kept one to one: the first len(kept_cols) aggregated columns
    members: tuple[np.ndarray, ...]  # per group: its server rows, in table order
    mixes: tuple[tuple[np.ndarray, ...], ...]  # per group, per member: (patterns x its kept candidates) replicas
    pattern_cols: tuple[np.ndarray, ...]  # per group: the aggregated column of each pattern
    cards: tuple[np.ndarray, ...]  # per group: (patterns x types) cards of each pattern
    left_cols: np.ndarray  # per group: the column of how many are left out
    positions: dict  # per server row aggregated: positions (in full.candidates) of its candidates

    def disaggregate(self, full: Formulation, v: np.ndarray) -> np.ndarray | None:
        """A plan of `full` with the same count per level as the aggregated `v`; None if rounding of the shares
        made one differ (then the aggregation is not used)."""
        counts = np.zeros(full.n_candidates, dtype=np.int64)
        kept_full = np.zeros(full.n_vars)
        kept_full[self.kept_cols] = v[:len(self.kept_cols)]
        counts[full.candidates] = np.rint(kept_full[full.full_cols]).astype(np.int64)
        if "pattern_counts" in full.info:
            counts[full.candidates] += np.rint(full.info["pattern_counts"] @ kept_full).astype(np.int64)
        for rows, mixes, cols in zip(self.members, self.mixes, self.pattern_cols):
            taken = 0
            for k, n in enumerate(np.rint(v[cols]).astype(np.int64).tolist()):
                for i, mix in zip(rows[taken:taken + n].tolist(), mixes[taken:taken + n]):
                    counts[full.candidates[self.positions[i]]] = mix[k]
                taken += n
        x = full.vector(counts, self.table)
        # the servers not aggregated keep their columns as solved (vector recomputes shares from replicas)
        keep = np.zeros(full.n_vars, dtype=bool)
        keep[self.kept_cols] = True
        x[keep] = kept_full[keep]
        for stage, agg_stage in zip((s for s in full.stages if s.integral), self.form.stages):
            if abs(float(stage.c @ x) - float(agg_stage.c @ v)) > 0.5:
                return None
        return x

    def start_vector(self, full_start: np.ndarray | None, full: Formulation) -> np.ndarray | None:
        """The aggregated counterpart of a plan of `full` (a warm start): each served member at its first
        pattern with no more cards than its replicas use, or left out if none (then the capacity still holds)."""
        if full_start is None:
            return None
        table = self.table
        v = np.zeros(self.form.n_vars)
        v[:len(self.kept_cols)] = full_start[self.kept_cols]
        counts = full.counts(full_start)
        used = np.zeros((len(table.rows), len(table.types)))
        np.add.at(used, (table.server, table.type), counts * table.unit_per_replica.astype(np.float64))
        for rows, cols, cards, left in zip(self.members, self.pattern_cols, self.cards, self.left_cols.tolist()):
            for i in rows.tolist():
                if full_start[full.unserved_cols[i]] > 0.5:
                    v[left] += 1
                    continue
                fits = (cards <= used[i] + 1e-9).all(axis=1)
                if fits.any():
                    v[cols[int(np.argmax(fits))]] += 1
                else:
                    v[left] += 1
        return v


def count_patterns(table, kept: np.ndarray, i: int, a: int, b: int, fewest: float) -> np.ndarray | None:
    """Server row i's count patterns (its candidates are kept[a:b]) as (patterns x candidates) replicas, or None
    when they are too many. One replica of any candidate covers when every R_c is 1 (the common case, no search)."""
    row = table.rows[i]
    pos = kept[a:b]
    rate, upr, typ = table.rate_star[pos], table.unit_per_replica[pos].astype(np.float64), table.type[pos]
    replicas = table.replicas[pos].astype(np.int64)
    need, least = max(row.total_rate, 0.0), int(row.server.min_num_replicas)
    if need > 0 and least <= 1 and (replicas == 1).all():
        # minimal covers: one replica each; per type only the fewest cards (then table order) is not dominated
        order = np.lexsort((np.arange(b - a), upr, typ))
        first = order[np.r_[True, typ[order][1:] != typ[order][:-1]]]
        found = np.zeros((len(first), b - a), dtype=np.int64)
        found[np.arange(len(first)), np.sort(first)] = 1
        return found
    found = server_patterns(rate, upr, typ, np.zeros(b - a), replicas, need, least)
    if found is None or not (found.sum(axis=1) >= fewest).all():
        return None
    return found


def aggregate_multi(table, full: Formulation, min_group: int = 1) -> MultiAggregation | None:
    """The aggregated count stages of a multi-assign formulation (see the module docstring), or None when it has
    no count stage or no server can be aggregated. Servers in groups smaller than `min_group` keep their own
    columns."""
    count_stages = [s for s in full.stages if s.integral]
    if not full.heterogeneous or not count_stages:
        return None
    info = full.info
    kept = full.candidates
    srv = table.server[kept]
    n_types = len(table.types)
    rows_with = np.flatnonzero(full.unserved_cols >= 0)
    start = np.searchsorted(srv, rows_with)
    stop = np.searchsorted(srv, rows_with, side="right")
    groups: dict[tuple, list[tuple[int, dict]]] = {}
    positions: dict[int, np.ndarray] = {}
    for i, a, b in zip(rows_with.tolist(), start.tolist(), stop.tolist()):
        found = count_patterns(table, kept, i, a, b, info["fewest"][i])
        if found is None:
            continue
        cards = np.zeros((len(found), n_types))
        typ = table.type[kept[a:b]]
        np.add.at(cards.T, typ, (found * table.unit_per_replica[kept[a:b]]).T)
        mix_of = {}
        for k, key in enumerate(map(tuple, cards.tolist())):
            mix_of.setdefault(key, found[k])
        signature = (int(table.rows[i].priority), tuple(sorted(mix_of)))
        groups.setdefault(signature, []).append((i, mix_of))
        positions[i] = np.arange(a, b)
    groups = {s: m for s, m in groups.items() if len(m) >= min_group}
    if not groups:
        return None

    # columns owned by aggregated servers are dropped; every other column is kept one to one
    owner = np.full(full.n_vars, -1, dtype=np.int64)
    owner[full.full_cols] = srv
    owner[full.unserved_cols[rows_with]] = rows_with
    owner[info["share_cols"][rows_with]] = rows_with
    if "patterns" in info:
        owner[info["patterns"]["cols"]] = info["patterns"]["server"]
    aggregated = np.zeros(len(table.rows), dtype=bool)
    aggregated[[i for members in groups.values() for i, _ in members]] = True
    dropped = (owner >= 0) & aggregated[np.maximum(owner, 0)]
    A = full.A.tocoo()
    caps = info["capacity_rows"]
    is_cap = np.zeros(A.shape[0], dtype=bool)
    is_cap[caps] = True
    touched = np.zeros(A.shape[0], dtype=bool)
    touched[A.row[dropped[A.col]]] = True  # a dropped server's own rows go with it
    # A server kept in the compact form needs no share w_i in a count stage: its rows Σ_c a_c n_c - w_i >= 0 and
    # w_i + S u_i >= S have an integer w_i in [0, S] exactly when Σ_c a_c n_c + S u_i >= S (S - S u_i is an
    # integer), so the covering row takes S u_i in place of -w_i and the other row goes (HiGHS proves much faster
    # without these integer shares).
    pattern_rows = set(info["patterns"]["rows"].tolist()) if "patterns" in info else set()
    compact_rows = np.array([i for i in rows_with.tolist() if not aggregated[i] and i not in pattern_rows],
                            dtype=np.int64)
    share_of = np.zeros(full.n_vars, dtype=bool)
    share_of[info["share_cols"][compact_rows]] = True
    u_of = np.full(full.n_vars, -1, dtype=np.int64)
    u_of[info["share_cols"][compact_rows]] = full.unserved_cols[compact_rows]
    row_lb_full = full.row_lb.copy()
    on_share = share_of[A.col]
    covering = on_share & (A.data < 0)
    A = sp.coo_matrix((np.where(covering, float(SHARE_STEPS), A.data), (A.row, np.where(covering, u_of[A.col], A.col))),
                      shape=A.shape)
    row_lb_full[A.row[covering]] = float(SHARE_STEPS)
    touched[A.row[on_share & ~covering]] = True
    dropped = dropped | share_of
    kept_cols = np.flatnonzero(~dropped)
    local_rows = np.flatnonzero(~is_cap & ~touched)
    # capacity row of each type: read from the rows themselves (a type with infinite capacity has none)
    row_of_type = np.full(n_types, -1, dtype=np.int64)
    full_on_cap = is_cap[A.row] & np.isin(A.col, full.full_cols)
    col_pos = np.full(full.n_vars, -1, dtype=np.int64)
    col_pos[full.full_cols] = np.arange(len(full.full_cols))
    row_of_type[table.type[kept][col_pos[A.col[full_on_cap]]]] = A.row[full_on_cap]
    members, mixes, pattern_cols, cards_of, left_cols = [], [], [], [], []
    col = len(kept_cols)
    sizes, counts, priorities = [], [], []
    g_rows, g_cols, g_vals = [], [], []  # capacity entries of the pattern columns (rows of the full A)
    for (priority, keys), group in groups.items():
        cards = np.array(keys, dtype=np.float64).reshape(len(keys), n_types)
        cols = np.arange(col, col + len(keys), dtype=np.int64)
        members.append(np.array([i for i, _ in group], dtype=np.int64))
        mixes.append(tuple(np.stack([mix_of[k] for k in keys]) for _, mix_of in group))
        pattern_cols.append(cols)
        cards_of.append(cards)
        left_cols.append(col + len(keys))
        pk, pt = np.nonzero(cards)
        has_row = row_of_type[pt] >= 0
        g_rows.append(row_of_type[pt[has_row]])
        g_cols.append(cols[pk[has_row]])
        g_vals.append(cards[pk[has_row], pt[has_row]])
        sizes.append(len(group))
        counts.append(len(keys) + 1)
        priorities.append(priority)
        col += len(keys) + 1
    n_new, n_groups = col, len(sizes)
    row_map = np.full(A.shape[0], -1, dtype=np.int64)
    row_map[local_rows] = np.arange(len(local_rows))
    row_map[caps] = len(local_rows) + np.arange(len(caps))
    col_map = np.full(full.n_vars, -1, dtype=np.int64)
    col_map[kept_cols] = np.arange(len(kept_cols))
    new_row, new_col = row_map[A.row], col_map[A.col]
    entry = (new_row >= 0) & (new_col >= 0)
    group_row = len(local_rows) + len(caps) + np.repeat(np.arange(n_groups), counts)
    g_rows = np.concatenate(g_rows) if g_rows else np.zeros(0, dtype=np.int64)
    A_new = sp.csr_matrix(
        (np.r_[A.data[entry], np.concatenate(g_vals), np.ones(len(group_row))],
         (np.r_[new_row[entry], row_map[g_rows], group_row],
          np.r_[new_col[entry], np.concatenate(g_cols), np.arange(len(kept_cols), n_new)])),
        shape=(len(local_rows) + len(caps) + n_groups, n_new))
    sizes = np.array(sizes, dtype=np.float64)
    left_cols = np.array(left_cols, dtype=np.int64)
    priorities = np.array(priorities)
    stages = []
    for stage in count_stages:
        c = left_out_objective(stage, n_new, left_cols, priorities)
        c[:len(kept_cols)] = stage.c[kept_cols]  # the servers not aggregated count as in the full formulation
        zero = col_map[stage.zero_cols]
        stages.append(Stage(stage.name, c, integral=True, zero_cols=zero[zero >= 0]))
    # what round_groups needs: the capacity rows, the groups, and the servers not aggregated
    kept_rows = np.flatnonzero((full.unserved_cols >= 0) & ~aggregated)
    by_owner = {}
    for j in np.flatnonzero((owner >= 0) & ~dropped).tolist():
        by_owner.setdefault(int(owner[j]), []).append(int(col_map[j]))
    info_new = {"capacity_rows": len(local_rows) + np.arange(len(caps)), "pattern_cols": pattern_cols,
                "left_cols": left_cols, "sizes": sizes, "group_priority": priorities,
                "kept_unserved": col_map[full.unserved_cols[kept_rows]],
                "kept_owned": [np.array(by_owner[i], dtype=np.int64) for i in kept_rows.tolist()],
                "kept_priority": np.array([table.rows[i].priority for i in kept_rows.tolist()]),
                "compact": [_compact_of(table, full, i, col_map) for i in kept_rows.tolist()],
                "rounding": round_groups}
    empty = np.zeros(0, dtype=np.int64)
    form = Formulation(
        A=A_new, row_lb=np.r_[row_lb_full[local_rows], full.row_lb[caps], sizes],
        row_ub=np.r_[full.row_ub[local_rows], full.row_ub[caps], sizes],
        lb=np.r_[full.lb[kept_cols], np.zeros(n_new - len(kept_cols))],
        ub=np.r_[full.ub[kept_cols], np.repeat(sizes, counts)],
        integer=np.r_[full.integer[kept_cols], np.ones(n_new - len(kept_cols), dtype=bool)], stages=tuple(stages),
        candidates=empty, full_cols=empty, partial_cols=empty, unserved_cols=empty, heterogeneous=False,
        n_candidates=0, info=info_new)
    return MultiAggregation(form, table, kept_cols, tuple(members), tuple(mixes), tuple(pattern_cols),
                            tuple(cards_of), left_cols, positions)


def round_groups(form: Formulation, problem, lp_x: np.ndarray, start: np.ndarray) -> np.ndarray | None:
    """A count-stage start of the aggregated formulation from an LP optimum (speed-up ``lp-round``; only a start,
    used when better), the better of two plans: the levels before the stage's keep the start's plan, or all levels
    are placed anew. The levels placed start all left out and are placed level by level, each where the capacity left allows: the servers not
    aggregated that the LP serves whole, with the LP's replicas rounded down and completed to a cover, the
    groups' whole LP pattern counts, the groups' other members one at a time with the pattern that uses
    the least of the scarce capacity, and the servers not aggregated that the start serves, with the start's plan.
    None if a row breaks."""
    info = form.info
    counted = np.r_[info["group_priority"][problem.c[info["left_cols"]] > 0],
                    info["kept_priority"][problem.c[info["kept_unserved"]] > 0]]
    if not len(counted):
        return None
    best = None
    for level in sorted({counted.min(), min(info["group_priority"].min(initial=counted.min()),
                                           info["kept_priority"].min(initial=counted.min()))}):
        x = _round_from(form, problem, lp_x, start, level)
        if x is not None and (best is None or problem.c @ x < problem.c @ best):
            best = x
    return best


def _round_from(form: Formulation, problem, lp_x: np.ndarray, start: np.ndarray, level) -> np.ndarray | None:
    """round_groups's plan with the levels from `level` on placed anew."""
    info = form.info
    cap_rows = info["capacity_rows"]
    cap = problem.A[cap_rows].tocsc()
    x = start.copy()
    group_prio = info["group_priority"]
    compact = info["compact"]  # per server not aggregated: (n columns, rate, cards per replica, load, least)
    kept_prio = info["kept_priority"]
    movable = [j for j in range(len(kept_prio)) if kept_prio[j] >= level and compact[j] is not None]
    for j in movable:
        x[info["kept_owned"][j]] = 0.0
        x[info["kept_unserved"][j]] = 1.0
    todo = np.flatnonzero(group_prio >= level)
    for g in todo.tolist():
        x[info["pattern_cols"][g]] = 0.0
        x[info["left_cols"][g]] = info["sizes"][g]
    free = problem.row_ub[cap_rows] - cap @ x
    usage = [cap[:, cols].toarray().T for cols in info["pattern_cols"]]  # per group: patterns x capacity rows

    def place(j: int, n: np.ndarray) -> bool:
        nonlocal free
        cols = compact[j][0]
        need = cap[:, cols] @ n
        if (need > free + 1e-9).any():
            return False
        free = free - need
        x[cols] = n
        x[info["kept_unserved"][j]] = 0.0
        return True

    def take(g: int, k: int, n: int) -> int:
        nonlocal free
        need = usage[g][k]
        on = need > 0
        fits = int(np.floor(np.min((free[on] + 1e-9) / need[on]))) if on.any() else n
        n = max(0, min(n, fits, int(round(x[info["left_cols"][g]]))))
        if n:
            free = free - n * need
            x[info["pattern_cols"][g][k]] += n
            x[info["left_cols"][g]] -= n
        return n

    served_lp = {j: 1.0 - lp_x[info["kept_unserved"][j]] for j in movable}
    levels = sorted(set(group_prio[todo].tolist()) | {int(kept_prio[j]) for j in movable})
    share = np.array([lp_x[cols].sum() / info["sizes"][g] for g, cols in enumerate(info["pattern_cols"])])
    for p in levels:
        for j in sorted(movable, key=lambda j: (-served_lp[j], j)):
            if kept_prio[j] == p and served_lp[j] >= 1 - 1e-6:
                n = _cover(lp_x, *compact[j][:5], problem.ub, cap, free)
                if n is None or not place(j, n):
                    for n in _single_covers(compact[j], problem.ub, cap):
                        if place(j, n):
                            break
        mine = todo[group_prio[todo] == p]
        mine = mine[np.lexsort((mine, -share[mine]))]
        for g in mine.tolist():
            for k, n in enumerate(np.floor(lp_x[info["pattern_cols"][g]] + 1e-6).astype(np.int64).tolist()):
                if n:
                    take(g, k, n)
        for g in mine.tolist():
            while x[info["left_cols"][g]] > 0.5:
                fits = (usage[g] <= free + 1e-9).all(axis=1)
                if not fits.any():
                    break
                scarcity = usage[g] @ (1.0 / np.maximum(free, 1.0))
                take(g, int(np.flatnonzero(fits)[np.argmin(scarcity[fits])]), 1)
        for j in movable:
            if kept_prio[j] == p and x[info["kept_unserved"][j]] > 0.5 and start[info["kept_unserved"][j]] < 0.5:
                place(j, start[compact[j][0]])
    ax = problem.A @ x
    ok = (np.all(ax >= problem.row_lb - 1e-6) and np.all(ax <= problem.row_ub + 1e-6)
          and np.all(x >= problem.lb - 1e-9) and np.all(x <= problem.ub + 1e-9))
    return x if ok else None


def _cover(lp_x: np.ndarray, cols: np.ndarray, rate: np.ndarray, upr: np.ndarray, need: float, least: float,
           ub: np.ndarray, cap, free: np.ndarray) -> np.ndarray | None:
    """Replicas covering `need` (and at least `least` of them) from an LP plan within the `free` capacity: rounded
    down, then one at a time on a candidate whose next replica still fits, the LP's rounded-down ones first, the
    highest rate per card first (within the bounds); None if none fits before it covers."""
    lp_n = lp_x[cols]
    top = ub[cols]
    per = cap[:, cols].toarray()  # capacity rows x candidates
    n = np.minimum(np.floor(lp_n + 1e-6), top)
    left = free - per @ n
    if (left < -1e-9).any():
        return None
    by_rate = np.lexsort((np.arange(len(n)), -rate / np.maximum(upr, 1e-9), lp_n <= n + 1e-6))
    while rate @ n < need or n.sum() < least:
        room = [c for c in by_rate.tolist() if n[c] < top[c] and (per[:, c] <= left + 1e-9).all()]
        if not room:
            return None
        n[room[0]] += 1
        left = left - per[:, room[0]]
    return n


def _single_covers(compact, ub: np.ndarray, cap):
    """Covers by one candidate alone (its upper bound of replicas, R_c), fewest cards first."""
    cols, rate, upr, need, least = compact
    top = ub[cols]
    for c in np.lexsort((np.arange(len(cols)), upr * top)).tolist():
        if rate[c] * top[c] >= need and top[c] >= least:
            n = np.zeros(len(cols))
            n[c] = top[c]
            yield n


def _compact_of(table, full: Formulation, i: int, col_map: np.ndarray):
    """What round_groups needs of server row i kept in the compact form: (its n columns in the aggregated
    formulation, their rates, cards per replica, its load, least replicas); None for a pattern
    server of the full formulation (it keeps the start's plan)."""
    info = full.info
    if "patterns" in info and i in set(info["patterns"]["rows"].tolist()):
        return None
    own = np.flatnonzero(info["server_of_full"] == i)
    need = float(info["need"][i])
    return (col_map[full.full_cols[own]], info["rate_of_full"][own], info["upr_of_full"][own],
            need * (1 - 1e-10) if need > 0 else 0.0, float(info["fewest"][i]))
