"""Best-effort and value stages with interchangeable fully-served-or-unserved servers aggregated.

In a best-effort or value stage of a single-assign formulation, a server whose partial-service columns are all
held at 0 (lower levels' ``Stage.zero_cols``, levels proven 0 by ``idle-partial``) is either unserved or fully
served by one candidate. Such a server touches the rest of the MIP only through
- its unserved column u_i: its coefficients in the stage objective and in the rows that keep earlier stages at
  their optimum (the count rows: its priority), and
- each open full-service column x_c: its accelerator type's capacity row (cards, a ``<=`` row with coefficients
  >= 0), its coefficient in the stage objective (value in the value stage, 0 in best effort) and in the kept rows.
Per server, of the options with the same capacity row and the same coefficients elsewhere only one with the
fewest cards is needed (replacing x_c by it keeps every row and the objective). Servers whose u_i and reduced
option sets agree are interchangeable: a group of them is one integer per option (how many of the group take it)
plus one for how many are unserved, Σ = group size; every other server keeps its own columns.

Exactness: (a) a plan of the original MIP maps to the aggregated one (each member counted at the option of its
chosen column's key) with the same objective, no more cards per type and the same kept rows, so the aggregated
optimum is at least as good; (b) an aggregated point disaggregates (``StageAggregation.disaggregate``: the
group's members in table order take the options in order, the rest are unserved) into a plan of the original MIP
with the same objective, the same cards per type and the same kept rows, since every member's column for an option
has the option's coefficients. So both optima are equal and the disaggregated optimum is optimal for the stage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .aggregate import give_in_order
from .allocation import Formulation


@dataclass(frozen=True)
class StageAggregation:
    """The aggregated stage MIP (``problem``) and how its solutions map back."""

    problem: object  # MipProblem
    n_vars: int  # columns of the original MIP
    kept_cols: np.ndarray  # original columns kept one to one: the first len(kept_cols) aggregated columns
    member_cols: tuple[np.ndarray, ...]  # per group: (options x members) original full-service columns
    unserved_cols: tuple[np.ndarray, ...]  # per group: its members' u columns, in table order
    option_cols: tuple[np.ndarray, ...]  # per group: the aggregated column of each option

    def disaggregate(self, v: np.ndarray) -> np.ndarray:
        """A solution of the original MIP with the same objective and rows as the aggregated `v`."""
        x = np.zeros(self.n_vars)
        x[self.kept_cols] = v[:len(self.kept_cols)]
        for members, unserved, cols in zip(self.member_cols, self.unserved_cols, self.option_cols):
            give_in_order(x, members, v[cols], unserved)
        return x


def aggregate_stage(form: Formulation, problem, min_group: int = 2) -> StageAggregation | None:
    """The aggregated counterpart of a best-effort or value stage `problem` of `form`, or None when no two servers
    are interchangeable (or the formulation is not single-assign)."""
    from .lexicographic import MipProblem

    info = form.info
    if form.heterogeneous or "server" not in info or "capacity_rows" not in info:
        return None
    n = form.n_vars
    A = problem.A.tocoo()  # one pass over the entries builds everything below (slicing costs more at 50 servers)
    lb, ub, c = problem.lb, problem.ub, problem.c
    n_servers = len(form.unserved_cols)
    owner = np.full(n, -1, dtype=np.int64)
    owner[form.full_cols] = info["server"]
    has_partial = form.partial_cols >= 0
    partial = np.r_[form.partial_cols[has_partial], info["z_cols"][has_partial]]
    owner[partial] = np.r_[info["server"][has_partial], info["server"][has_partial]]
    rows_of = np.flatnonzero(form.unserved_cols >= 0)
    owner[form.unserved_cols[rows_of]] = rows_of
    # A server keeps its own columns if any of its partial columns may be nonzero, or a bound forces a column.
    keep = np.zeros(n_servers, dtype=bool)
    keep[owner[partial[ub[partial] > 0]]] = True
    keep[owner[(lb > 0) & (owner >= 0)]] = True
    keep_cols_mask = (owner < 0) | keep[np.maximum(owner, 0)]
    m_form = form.A.shape[0]
    fixed = np.arange(m_form, A.shape[0])  # the rows that keep earlier stages at their optimum
    glob = np.r_[info["capacity_rows"], fixed]
    is_cap = np.zeros(A.shape[0], dtype=bool)
    is_cap[info["capacity_rows"]] = True
    on_cap = is_cap[A.row]
    cap_row = np.full(n, -1, dtype=np.int64)
    cap_coef = np.zeros(n)
    cap_row[A.col[on_cap]] = A.row[on_cap]
    cap_coef[A.col[on_cap]] = A.data[on_cap]
    on_fixed = A.row >= m_form
    fixed_by_col = sp.csr_matrix((A.data[on_fixed], (A.col[on_fixed], A.row[on_fixed] - m_form)),
                                 shape=(n, len(fixed)))  # per column, its coefficients in the kept rows
    ptr, idx, val = fixed_by_col.indptr, fixed_by_col.indices, fixed_by_col.data

    def key(j: int) -> tuple:
        lo, hi = ptr[j], ptr[j + 1]
        return (float(c[j]), tuple(zip(idx[lo:hi].tolist(), val[lo:hi].tolist())) if hi > lo else ())

    full_of: dict[int, list[int]] = {}
    for j, i in zip(form.full_cols.tolist(), info["server"].tolist()):
        if not keep[i] and ub[j] > 0:
            full_of.setdefault(i, []).append(j)
    groups: dict[tuple, list[tuple[int, dict]]] = {}
    for i in rows_of.tolist():
        if keep[i]:
            continue
        best: dict[tuple, int] = {}  # option key -> the column with the fewest cards (then table order)
        for j in full_of.get(i, []):
            k = (int(cap_row[j]), *key(j))
            if k not in best or cap_coef[j] < cap_coef[best[k]]:
                best[k] = j
        options = {k + (float(cap_coef[j]),): j for k, j in best.items()}
        signature = (key(int(form.unserved_cols[i])), tuple(sorted(options)))
        groups.setdefault(signature, []).append((i, options))
    if not any(len(g) >= min_group for g in groups.values()):
        return None

    kept_cols = np.flatnonzero(keep_cols_mask)
    dropped = ~keep_cols_mask
    if (ub[dropped & ~np.isin(np.arange(n), form.full_cols) & ~np.isin(np.arange(n), form.unserved_cols)]
            > 0).any():  # pragma: no cover - a dropped server's partial columns are closed by definition
        return None
    # per-server rows of kept servers; the rows of dropped servers are replaced by the group rows
    is_glob = np.zeros(A.shape[0], dtype=bool)
    is_glob[glob] = True
    touched_dropped = np.zeros(A.shape[0], dtype=bool)
    touched_dropped[A.row[dropped[A.col]]] = True
    local_rows = np.flatnonzero(~is_glob & ~touched_dropped)
    member_cols, unserved_cols, option_cols, left_cols, rep_cols, sizes, options_per_group = [], [], [], [], [], [], []
    col = len(kept_cols)
    for signature, members in groups.items():
        opts = signature[1]
        member_cols.append(np.array([[m[1][o] for m in members] for o in opts], dtype=np.int64).reshape(len(opts),
                                                                                                  len(members)))
        unserved_cols.append(np.array([form.unserved_cols[m[0]] for m in members], dtype=np.int64))
        option_cols.append(np.arange(col, col + len(opts), dtype=np.int64))
        left_cols.append(col + len(opts))
        rep_cols.extend(member_cols[-1][:, 0].tolist() + [int(unserved_cols[-1][0])])
        sizes.append(len(members))
        options_per_group.append(len(opts))
        col += len(opts) + 1
    rep_cols = np.array(rep_cols, dtype=np.int64)
    n_groups, n_new = len(sizes), col
    # group rows: Σ options + unserved = size
    counts = np.array(options_per_group) + 1
    caps = info["capacity_rows"]
    # rows: the kept servers' own rows, capacity, one per group, then the kept rows (last, as fixed_rows says)
    row_map = np.full(A.shape[0], -1, dtype=np.int64)
    row_map[local_rows] = np.arange(len(local_rows))
    row_map[caps] = len(local_rows) + np.arange(len(caps))
    row_map[fixed] = len(local_rows) + len(caps) + n_groups + np.arange(len(fixed))
    col_map = np.full(n, -1, dtype=np.int64)
    col_map[kept_cols] = np.arange(len(kept_cols))
    col_map[rep_cols] = np.arange(len(kept_cols), n_new)  # a group's column takes its first member's entries
    new_row, new_col = row_map[A.row], col_map[A.col]
    entry = (new_row >= 0) & (new_col >= 0)
    group_row = len(local_rows) + len(caps) + np.repeat(np.arange(n_groups), counts)
    A_new = sp.csr_matrix((np.r_[A.data[entry], np.ones(len(group_row))],
                           (np.r_[new_row[entry], group_row], np.r_[new_col[entry], np.arange(len(kept_cols), n_new)])),
                          shape=(len(local_rows) + len(caps) + n_groups + len(fixed), n_new))
    size_per_col = np.repeat(np.array(sizes, dtype=np.float64), counts)
    start = None
    if problem.warm_start is not None:
        start = np.r_[problem.warm_start[kept_cols], np.zeros(n_new - len(kept_cols))]
        w = problem.warm_start
        for g, (signature, members) in enumerate(groups.items()):
            index = {o: k for k, o in enumerate(signature[1])}
            for i, options in members:
                chosen = [j for j in full_of.get(i, []) if w[j] > 0.5]
                if not chosen:
                    start[left_cols[g]] += 1
                    continue
                j = chosen[0]
                k = (int(cap_row[j]), *key(j))
                option = next(o for o in index if o[:-1] == k)
                start[option_cols[g][index[option]]] += 1
    agg_problem = MipProblem(
        A=A_new,
        row_lb=np.r_[problem.row_lb[local_rows], problem.row_lb[caps], sizes, problem.row_lb[fixed]],
        row_ub=np.r_[problem.row_ub[local_rows], problem.row_ub[caps], sizes, problem.row_ub[fixed]],
        lb=np.r_[lb[kept_cols], np.zeros(n_new - len(kept_cols))],
        ub=np.r_[ub[kept_cols], size_per_col],
        integer=np.r_[problem.integer[kept_cols], np.ones(n_new - len(kept_cols), dtype=bool)],
        c=np.r_[c[kept_cols], c[rep_cols]], maximize=problem.maximize, warm_start=start,
        fixed_rows=problem.fixed_rows)
    return StageAggregation(agg_problem, n, kept_cols, tuple(member_cols), tuple(unserved_cols),
                            tuple(option_cols))
