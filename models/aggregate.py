"""Count stages on interchangeable servers aggregated: one integer per group and option.

In the count stages only full service counts (partial service is held at 0), and full service of a server
depends only on its priority and, per accelerator type, the fewest cards that serve it. Servers that agree on
these are interchangeable, so a group of them needs one integer per option (how many of the group run on that
type) and one for how many are left out: an exact reformulation of the count stages with far fewer columns and
no symmetry between interchangeable servers. A solution maps back to the full formulation by giving the group's
members, in table order, to its options.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .allocation import Formulation, Stage
from .count_rounding import CountGroups, round_counts


@dataclass(frozen=True)
class Aggregation:
    """The aggregated count formulation and how it maps back."""

    form: Formulation
    members: tuple[np.ndarray, ...]  # server rows of each group, in table order
    options: tuple[np.ndarray, ...]  # per group: for each option, per member the kept position of its candidate
    option_cols: tuple[np.ndarray, ...]  # per group: the column of each option's count
    unserved_cols: np.ndarray  # per group: the column of its count left out

    def disaggregate(self, full: Formulation, v: np.ndarray) -> np.ndarray:
        """A solution vector of `full` (full service only) with the same counts per type and group."""
        x = np.zeros(full.n_vars)
        for rows, opts, cols in zip(self.members, self.options, self.option_cols):
            give_in_order(x, [full.full_cols[choice] for choice in opts], v[cols], full.unserved_cols[rows])
        return x


def give_in_order(x: np.ndarray, option_cols: list[np.ndarray], counts: np.ndarray, unserved: np.ndarray) -> None:
    """Set in `x` one group's plan from its option counts: the members, in table order, take the options in order
    (as many as each count; ``option_cols[k][i]`` is member i's column for option k), the rest are unserved
    (``unserved[i]``)."""
    taken = 0
    for member_cols, count in zip(option_cols, counts):
        n = int(round(count))
        x[member_cols[taken:taken + n]] = 1.0
        taken += n
    x[unserved[taken:]] = 1.0


def aggregate(table, full: Formulation) -> Aggregation | None:
    """The aggregated count stages of a single-assign formulation, or None when it has no count stage."""
    count_stages = [s for s in full.stages if s.integral]
    if full.heterogeneous or not count_stages:
        return None
    kept = full.candidates
    srv, typ, units = table.server[kept], table.type[kept], table.units[kept]
    # Per (server, type): the kept candidate with the fewest cards (then the least value: table order).
    order = np.lexsort((np.arange(len(kept)), units, typ, srv))
    first = np.r_[True, (np.diff(srv[order]) != 0) | (np.diff(typ[order]) != 0)]
    best = order[first]
    by_server: dict[int, list[tuple[int, int, int]]] = {}
    for pos in best.tolist():
        by_server.setdefault(int(srv[pos]), []).append((int(typ[pos]), int(units[pos]), pos))
    groups: dict[tuple, list[int]] = {}
    for i, opts in sorted(by_server.items()):
        signature = (table.rows[i].priority, tuple((t, u) for t, u, _ in opts))
        groups.setdefault(signature, []).append(i)

    lb, ub, integer, rows, cols, vals, row_lb, row_ub = [], [], [], [], [], [], [], []
    cap_cols: dict[int, list[tuple[int, float]]] = {}
    members, options, option_cols, unserved_cols, priorities = [], [], [], [], []
    for (priority, sig), servers in groups.items():
        size = len(servers)
        r = len(row_lb)
        group_cols = []
        for t, u in sig:
            j = len(lb)
            lb.append(0.0), ub.append(float(size)), integer.append(True)
            rows.append(r), cols.append(j), vals.append(1.0)
            cap_cols.setdefault(t, []).append((j, float(u)))
            group_cols.append(j)
        j = len(lb)
        lb.append(0.0), ub.append(float(size)), integer.append(True)
        rows.append(r), cols.append(j), vals.append(1.0)
        row_lb.append(float(size)), row_ub.append(float(size))
        positions = {i: {t: pos for t, _, pos in by_server[i]} for i in servers}
        members.append(np.array(servers, dtype=np.int64))
        options.append(tuple(np.array([positions[i][t] for i in servers], dtype=np.int64) for t, _ in sig))
        option_cols.append(np.array(group_cols, dtype=np.int64))
        unserved_cols.append(j)
        priorities.append(priority)
    for t in sorted(cap_cols):
        if not np.isfinite(table.capacity[t]):
            continue
        r = len(row_lb)
        for j, u in cap_cols[t]:
            rows.append(r), cols.append(j), vals.append(u)
        row_lb.append(-np.inf), row_ub.append(float(table.capacity[t]))
    n = len(lb)
    A = sp.csr_matrix((vals, (rows, cols)), shape=(len(row_lb), n))
    unserved_cols = np.array(unserved_cols, dtype=np.int64)
    priorities = np.array(priorities)
    count_groups = CountGroups(option_col=np.concatenate(option_cols).astype(np.int64),
                               option_group=np.repeat(np.arange(len(option_cols)), [len(c) for c in option_cols]),
                               size=np.array([len(m) for m in members], dtype=np.float64),
                               unserved_col=unserved_cols, priority=priorities)
    stages = [Stage(stage.name, left_out_objective(stage, n, unserved_cols, priorities), integral=True)
              for stage in count_stages]
    empty = np.zeros(0, dtype=np.int64)
    form = Formulation(A=A, row_lb=np.array(row_lb), row_ub=np.array(row_ub), lb=np.array(lb), ub=np.array(ub),
                       integer=np.array(integer, dtype=bool), stages=tuple(stages), candidates=empty,
                       full_cols=empty, partial_cols=empty, unserved_cols=unserved_cols, heterogeneous=False,
                       n_candidates=0, info={"capacity_rows": np.arange(len(members), len(row_lb)),
                                             "count_groups": count_groups, "rounding": round_counts})
    return Aggregation(form, tuple(members), tuple(options), tuple(option_cols), unserved_cols)

    
def start_vector(agg: Aggregation, full_start: np.ndarray | None, full: Formulation) -> np.ndarray | None:
    """The aggregated counterpart of a full solution vector (a warm start for the aggregated count stages)."""
    if full_start is None:
        return None
    v = np.zeros(agg.form.n_vars)
    chosen = np.zeros(full.n_vars, dtype=bool)
    chosen[full.full_cols] = np.rint(full_start[full.full_cols]) > 0
    for rows, opts, cols, ucol in zip(agg.members, agg.options, agg.option_cols, agg.unserved_cols):
        served = 0
        for choice, col in zip(opts, cols):
            k = int(chosen[full.full_cols[choice]].sum())
            v[col] = k
            served += k
        v[ucol] = len(rows) - served
    return v


def left_out_objective(stage: Stage, n: int, left_cols: np.ndarray, priorities: np.ndarray) -> np.ndarray:
    """A count stage's objective on an aggregated MIP of n columns: the members left out of the groups of its
    priority level (``left_cols`` per group, ``priorities`` per group)."""
    level = int(stage.name.rsplit(" ", 1)[1])
    c = np.zeros(n)
    c[left_cols[priorities == level]] = 1.0
    return c
