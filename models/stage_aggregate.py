"""Best-effort and value stages with interchangeable servers aggregated.

In a best-effort or value stage of a single-assign formulation, server i touches the rest of the MIP only through
- its unserved column u_i: its coefficients in the stage objective and in the rows that keep earlier stages at
  their optimum (the count rows: its priority),
- each open full-service column x_c: its accelerator type's capacity row (cards, a ``<=`` row with coefficients
  >= 0), its coefficient in the stage objective (value in the value stage, 0 in best effort) and in the kept rows,
- each open partial-service pair (y_c, z_c) (y_c replicas, at most R_c - 1, on a ``z_c`` = 1; Σ_c z_c <= u_i):
  the capacity row (cards per replica), the objective (rate per replica in its level's best-effort stage, value
  per replica in the value stage) and the kept rows (the best-effort rows of its level). A pair whose y_c is held
  at 0 (lower levels' ``Stage.zero_cols``, levels proven 0 by ``idle-partial``) is closed: z_c <= y_c holds z_c at
  0 too.
Per server, of the full-service options with the same capacity row and the same coefficients elsewhere only one
with the fewest cards is needed (replacing x_c by it keeps every row and the objective), and of the partial-service
options with the same coefficients and bounds one. Servers whose u_i and reduced option sets agree are
interchangeable: a group of them is one integer per full-service option (how many of the group take it), one for how
many are unserved (Σ = group size), and per partial-service option two: Y_o replicas on Z_o members, with
Y_o <= (R_o - 1) Z_o, Z_o <= Y_o and Σ_o Z_o <= the unserved count. Every other server (one with a bound that forces
a column, or a partial-service column whose bound the stage changed) keeps its own columns.

Exactness: (a) a plan of the original MIP maps to the aggregated one (each member counted at the option of its
chosen columns' key) with the same objective, no more cards per type and the same kept rows, so the aggregated
optimum is at least as good; (b) an aggregated point disaggregates (``StageAggregation.disaggregate``: the group's
members in table order take the full-service options in order, the rest are unserved, and of those, in order, Z_o
take partial option o with Y_o replicas spread as evenly as possible: between 1 and R_o - 1 each, as the two rows
allow) into a plan of the original MIP with the same objective, the same cards per type and the same kept rows,
since every member's columns for an option have the option's coefficients. So both optima are equal and the
disaggregated optimum is optimal for the stage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .aggregate import give_in_order
from .allocation import Formulation


@dataclass(frozen=True)
class PartialOptions:
    """A group's partial-service options: the members' columns and the aggregated ones."""

    member_y: np.ndarray  # (options x members) original y columns
    member_z: np.ndarray  # (options x members) original z columns
    y_cols: np.ndarray  # aggregated Y column of each option
    z_cols: np.ndarray  # aggregated Z column of each option


@dataclass(frozen=True)
class StageAggregation:
    """The aggregated stage MIP (``problem``) and how its solutions map back."""

    problem: object  # MipProblem
    n_vars: int  # columns of the original MIP
    kept_cols: np.ndarray  # original columns kept one to one: the first len(kept_cols) aggregated columns
    member_cols: tuple[np.ndarray, ...]  # per group: (options x members) original full-service columns
    unserved_cols: tuple[np.ndarray, ...]  # per group: its members' u columns, in table order
    option_cols: tuple[np.ndarray, ...]  # per group: the aggregated column of each option
    partial: tuple[PartialOptions | None, ...]  # per group: its partial-service options, if any

    def disaggregate(self, v: np.ndarray) -> np.ndarray:
        """A solution of the original MIP with the same objective and rows as the aggregated `v`."""
        x = np.zeros(self.n_vars)
        x[self.kept_cols] = v[:len(self.kept_cols)]
        for members, unserved, cols, part in zip(self.member_cols, self.unserved_cols, self.option_cols,
                                                 self.partial):
            give_in_order(x, members, v[cols], unserved)
            if part is None:
                continue
            left = len(unserved) - int(round(float(v[cols].sum())))  # the last `left` members are unserved
            who = np.arange(len(unserved) - left, len(unserved))
            taken = 0
            for o in range(len(part.y_cols)):
                members_z = int(round(v[part.z_cols[o]]))
                if members_z <= 0:
                    continue
                on = who[taken:taken + members_z]
                taken += members_z
                each, extra = divmod(int(round(v[part.y_cols[o]])), members_z)
                x[part.member_z[o, on]] = 1.0
                x[part.member_y[o, on]] = each
                x[part.member_y[o, on[:extra]]] += 1.0
        return x


def aggregate_stage(form: Formulation, problem, min_group: int = 2, partial: bool = True) -> StageAggregation | None:
    """The aggregated counterpart of a best-effort or value stage `problem` of `form`, or None when no two servers
    are interchangeable (or the formulation is not single-assign). Without `partial`, a server whose partial service
    is open keeps its own columns."""
    from .lexicographic import MipProblem

    info = form.info
    if form.heterogeneous or "server" not in info or "capacity_rows" not in info:
        return None
    n = form.n_vars
    A = problem.A.tocoo()  # one pass over the entries builds everything below (slicing costs more at 50 servers)
    lb, ub, c = problem.lb, problem.ub, problem.c
    n_servers = len(form.unserved_cols)
    server = info["server"]
    owner = np.full(n, -1, dtype=np.int64)
    owner[form.full_cols] = server
    has_partial = form.partial_cols >= 0
    y_all, z_all = form.partial_cols[has_partial], info["z_cols"][has_partial]
    owner[y_all] = owner[z_all] = server[has_partial]
    rows_of = np.flatnonzero(form.unserved_cols >= 0)
    owner[form.unserved_cols[rows_of]] = rows_of
    # A server keeps its own columns if a bound forces one of them, or the stage changed a partial column's bound
    # (the group rows take R_c - 1 and 1 from the formulation).
    keep = np.zeros(n_servers, dtype=bool)
    keep[owner[(lb > 0) & (owner >= 0)]] = True
    open_y = ub[y_all] > 0
    changed = open_y & ((ub[y_all] != form.ub[y_all]) | (ub[z_all] != form.ub[z_all]))
    keep[server[has_partial][changed | (open_y & (not partial))]] = True
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
    for j, i in zip(form.full_cols.tolist(), server.tolist()):
        if not keep[i] and ub[j] > 0:
            full_of.setdefault(i, []).append(j)
    partial_of: dict[int, list[tuple[int, int]]] = {}
    for y, z, i in zip(y_all[open_y].tolist(), z_all[open_y].tolist(), server[has_partial][open_y].tolist()):
        if not keep[i]:
            partial_of.setdefault(i, []).append((y, z))

    def partial_key(y: int, z: int) -> tuple:
        return (int(cap_row[y]), float(cap_coef[y]), float(ub[y]), *key(y), key(z))

    groups: dict[tuple, list[tuple[int, dict, dict]]] = {}
    for i in rows_of.tolist():
        if keep[i]:
            continue
        best: dict[tuple, int] = {}  # option key -> the column with the fewest cards (then table order)
        for j in full_of.get(i, []):
            k = (int(cap_row[j]), *key(j))
            if k not in best or cap_coef[j] < cap_coef[best[k]]:
                best[k] = j
        options = {k + (float(cap_coef[j]),): j for k, j in best.items()}
        partials: dict[tuple, tuple[int, int]] = {}
        for y, z in partial_of.get(i, []):
            partials.setdefault(partial_key(y, z), (y, z))
        signature = (key(int(form.unserved_cols[i])), tuple(sorted(options)), tuple(sorted(partials)))
        groups.setdefault(signature, []).append((i, options, partials))
    if not any(len(g) >= min_group for g in groups.values()):
        return None

    kept_cols = np.flatnonzero(keep_cols_mask)
    dropped = ~keep_cols_mask
    # per-server rows of kept servers; the rows of dropped servers are replaced by the group rows
    is_glob = np.zeros(A.shape[0], dtype=bool)
    is_glob[glob] = True
    touched_dropped = np.zeros(A.shape[0], dtype=bool)
    touched_dropped[A.row[dropped[A.col]]] = True
    local_rows = np.flatnonzero(~is_glob & ~touched_dropped)
    member_cols, unserved_cols, option_cols, left_cols, rep_cols = [], [], [], [], []
    partial_options: list[PartialOptions | None] = []
    # group_entries: (group, column) of each group's Σ row; partial_entries: per group with partial options, its
    # unserved column, Y and Z columns and each option's R - 1
    sizes, group_entries, partial_entries = [], [], []
    col = len(kept_cols)
    for g, (signature, members) in enumerate(groups.items()):
        opts, pkeys = signature[1], signature[2]
        member_cols.append(np.array([[m[1][o] for m in members] for o in opts], dtype=np.int64).reshape(len(opts),
                                                                                                  len(members)))
        unserved_cols.append(np.array([form.unserved_cols[m[0]] for m in members], dtype=np.int64))
        option_cols.append(np.arange(col, col + len(opts), dtype=np.int64))
        left_cols.append(col + len(opts))
        rep_cols.extend(member_cols[-1][:, 0].tolist() + [int(unserved_cols[-1][0])])
        group_entries.extend((g, j) for j in range(col, col + len(opts) + 1))
        sizes.append(len(members))
        col += len(opts) + 1
        if not pkeys:
            partial_options.append(None)
            continue
        ys = np.array([[m[2][p][0] for m in members] for p in pkeys], dtype=np.int64)
        zs = np.array([[m[2][p][1] for m in members] for p in pkeys], dtype=np.int64)
        y_cols = np.arange(col, col + len(pkeys), dtype=np.int64)
        z_cols = y_cols + len(pkeys)
        rep_cols.extend(ys[:, 0].tolist() + zs[:, 0].tolist())
        partial_options.append(PartialOptions(ys, zs, y_cols, z_cols))
        partial_entries.append((left_cols[-1], y_cols, z_cols, form.ub[ys[:, 0]]))
        col += 2 * len(pkeys)
    rep_cols = np.array(rep_cols, dtype=np.int64)
    n_groups, n_new = len(sizes), col
    caps = info["capacity_rows"]
    # rows: the kept servers' own rows, capacity, one per group, the partial-service rows, then the kept rows (last,
    # as fixed_rows says)
    first_partial = len(local_rows) + len(caps) + n_groups
    p_rows, p_cols, p_vals = [], [], []
    r = first_partial
    for left, y_cols, z_cols, most in partial_entries:
        for y, z, k in zip(y_cols.tolist(), z_cols.tolist(), most.tolist()):
            p_rows += [r, r, r + 1, r + 1]  # Y - (R - 1) Z <= 0, Z - Y <= 0
            p_cols += [y, z, z, y]
            p_vals += [1.0, -k, 1.0, -1.0]
            r += 2
        p_rows += [r] * (len(z_cols) + 1)  # Σ Z - unserved <= 0
        p_cols += z_cols.tolist() + [left]
        p_vals += [1.0] * len(z_cols) + [-1.0]
        r += 1
    n_partial_rows = r - first_partial
    row_map = np.full(A.shape[0], -1, dtype=np.int64)
    row_map[local_rows] = np.arange(len(local_rows))
    row_map[caps] = len(local_rows) + np.arange(len(caps))
    row_map[fixed] = r + np.arange(len(fixed))
    col_map = np.full(n, -1, dtype=np.int64)
    col_map[kept_cols] = np.arange(len(kept_cols))
    col_map[rep_cols] = np.arange(len(kept_cols), n_new)  # a group's column takes its first member's entries
    new_row, new_col = row_map[A.row], col_map[A.col]
    entry = (new_row >= 0) & (new_col >= 0)
    g_rows, g_cols = (np.array(v, dtype=np.int64) for v in zip(*group_entries))
    A_new = sp.csr_matrix((np.r_[A.data[entry], np.ones(len(g_rows)), p_vals],
                           (np.r_[new_row[entry], len(local_rows) + len(caps) + g_rows, p_rows],
                            np.r_[new_col[entry], g_cols, p_cols])),
                          shape=(r + len(fixed), n_new))
    col_size = np.zeros(n_new)
    col_size[g_cols] = np.array(sizes, dtype=np.float64)[g_rows]
    for part, size in zip(partial_options, sizes):
        if part is not None:
            col_size[part.z_cols] = size
            col_size[part.y_cols] = size * form.ub[part.member_y[:, 0]]
    start = None
    if problem.warm_start is not None:
        start = np.r_[problem.warm_start[kept_cols], np.zeros(n_new - len(kept_cols))]
        w = problem.warm_start
        for g, (signature, members) in enumerate(groups.items()):
            index = {o: k for k, o in enumerate(signature[1])}
            pindex = {p: k for k, p in enumerate(signature[2])}
            for i, options, partials in members:
                chosen = [j for j in full_of.get(i, []) if w[j] > 0.5]
                if chosen:
                    k = (int(cap_row[chosen[0]]), *key(chosen[0]))
                    option = next(o for o in index if o[:-1] == k)
                    start[option_cols[g][index[option]]] += 1
                    continue
                start[left_cols[g]] += 1
                for y, z in partial_of.get(i, []):
                    if w[z] > 0.5 or w[y] > 0.5:
                        o = pindex[partial_key(y, z)]
                        start[partial_options[g].z_cols[o]] += 1
                        start[partial_options[g].y_cols[o]] += w[y]
    agg_problem = MipProblem(
        A=A_new,
        row_lb=np.r_[problem.row_lb[local_rows], problem.row_lb[caps], sizes, np.full(n_partial_rows, -np.inf),
                     problem.row_lb[fixed]],
        row_ub=np.r_[problem.row_ub[local_rows], problem.row_ub[caps], sizes, np.zeros(n_partial_rows),
                     problem.row_ub[fixed]],
        lb=np.r_[lb[kept_cols], np.zeros(n_new - len(kept_cols))],
        ub=np.r_[ub[kept_cols], col_size[len(kept_cols):]],
        integer=np.r_[problem.integer[kept_cols], np.ones(n_new - len(kept_cols), dtype=bool)],
        c=np.r_[c[kept_cols], c[rep_cols]], maximize=problem.maximize, warm_start=start,
        fixed_rows=problem.fixed_rows)
    return StageAggregation(agg_problem, n, kept_cols, tuple(member_cols), tuple(unserved_cols),
                            tuple(option_cols), tuple(partial_options))
