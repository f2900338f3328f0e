"""Multi-assign full service as a choice among covering patterns (per server, one binary per pattern).

A server is fully served by a multiset of replicas over its candidates (n_c per candidate) whose SLO rates cover
its load (Σ_c rate_c n_c ≥ λ_i) with at least m_i replicas (its minimum, and ceil(λ_i / best rate)). The compact
form (models.allocation) lets the LP cover a server with fractions of replicas, so its bound is far from the
integer optimum and HiGHS proves little. Here a fully served server picks one *pattern*:

    Σ_p x_ip + u_i = 1,  x_ip ∈ {0,1}       per pattern p of server i, its replicas p_c fixed
    capacity per type k:  Σ_p cards_k(p) x_ip + Σ_c units_c y_c ≤ U_k
    partial service (best effort): y_c ∈ [0, R_c] replicas of an unserved server, y_c ≤ R_c u_i,
        partial share w_i ∈ [0, S] in 1/S steps,  w_i ≤ Σ_c (S rate_c / λ_i) y_c
    best-effort rate of level p: Σ λ_i Σ_p x_ip + (λ_i / S) w_i;  value: Σ value(p) x_ip + Σ_c value_c y_c

Exact (same optimum in every stage as the compact form). Only *minimal* covers are patterns (no replica can be
dropped): a fully served server's replicas in the compact form contain a minimal cover, and dropping the rest
keeps it served, frees capacity and lowers the value. Of the minimal covers only the non-dominated ones are kept:
q dominates p when q needs no more cards of any type and has no more value (ties: the earlier one); replacing p
by q keeps every row and no stage gets worse. Within one accelerator type the same argument keeps, per number of
cards, only the replica mixes with the highest rate and least value. Partial service is the compact form's,
restricted to unserved servers (a served server's extra replicas only cost capacity and value).

A server whose patterns exceed ``PATTERN_LIMIT`` keeps the compact form (the two mix in one formulation), as do
all servers under a max replica change. ``round_and_repair`` builds count-stage starts from an LP optimum for
either form (speed-up ``lp-round``).
"""

from __future__ import annotations

import itertools

import numpy as np

PATTERN_LIMIT = 400  # non-dominated patterns per server above which the server keeps the compact form
ENUMERATION_LIMIT = 500  # minimal covers looked at per server before giving up on patterns
MIX_LIMIT = 100  # replica mixes of one type per server above which the server keeps the compact form
EVICTION_TRIES = 5  # options of a server of an earlier level tried by pushing out others (LP rounding)
COVER_RTOL = 1e-9  # as tables.CEIL_RTOL: R_c replicas of c alone always cover


def server_patterns(rate: np.ndarray, upr: np.ndarray, typ: np.ndarray, value: np.ndarray, replicas: np.ndarray,
                    need: float, min_replicas: int, limit: int = PATTERN_LIMIT,
                    mix_limit: int = MIX_LIMIT) -> np.ndarray | None:
    """The non-dominated minimal covers of one server as a (patterns, candidates) array of replica counts, in a
    deterministic order (fewest cards, then least value); None when there are more than `limit`, or one type
    offers more than `mix_limit` replica mixes.

    `rate`, `upr` (cards per replica), `typ`, `value` (per replica) and `replicas` (R_c) are per candidate; the
    server needs `need` req/s and at least `min_replicas` replicas (its minNumReplicas; the rest of the compact
    form's m_i, ceil(λ_i / best rate), follows from covering, and the caller checks it).
    """
    target = need * (1 - COVER_RTOL)
    by_type = [np.flatnonzero(typ == k) for k in np.unique(typ)]
    if max(np.prod(replicas[c] + 1.0) for c in by_type) > mix_limit:
        return None
    options = [_type_options(c, rate, upr, value, replicas, target, min_replicas > 0) for c in by_type]
    options = [o for o in options if len(o[1])]
    options.sort(key=lambda o: (-o[2].max(), int(o[0][0])))  # fastest types first: covers are found sooner
    # Plain Python in the search (it visits many small nodes): per type its mixes' rate, count and slowest rate.
    mixes = [[(float(r), int(m.sum()), float(rate[c][m > 0].min())) for m, r in zip(ms, rs)] for c, ms, rs in options]
    reach = np.r_[np.cumsum([r.max() for _, _, r in options][::-1])[::-1], 0.0].tolist()  # most rate still to add
    found: list[tuple[int, ...]] = []
    chosen = [-1] * len(options)

    def covers(total_rate: float, count: int) -> bool:
        return total_rate >= target and count >= min_replicas

    def visit(t: int, total_rate: float, count: int, slowest: float) -> bool:
        if covers(total_rate, count):
            if count == 0 or not covers(total_rate - slowest, count - 1):  # minimal
                found.append(tuple(chosen))
            return len(found) <= ENUMERATION_LIMIT
        if t == len(options) or total_rate + reach[t] < target:
            return True
        for k, (r, m, low) in enumerate(mixes[t]):
            chosen[t] = k
            if not visit(t + 1, total_rate + r, count + m, min(slowest, low)):
                return False
        chosen[t] = -1
        return visit(t + 1, total_rate, count, slowest)

    if not visit(0, 0.0, 0, np.inf):
        return None
    n_cand = len(rate)
    if not found:
        return np.zeros((0, n_cand), dtype=np.int64)
    patterns = np.zeros((len(found), n_cand), dtype=np.int64)
    for t, (cands, ms, _) in enumerate(options):
        pick = np.array([f[t] for f in found])
        has = pick >= 0
        patterns[np.ix_(np.flatnonzero(has), cands)] = ms[pick[has]]
    types = np.unique(typ)
    cards = np.stack([(patterns[:, typ == k] * upr[typ == k]).sum(axis=1) for k in types], axis=1)
    worth = patterns @ value
    keep = _non_dominated(cards, worth)
    if keep.sum() > limit:
        return None
    patterns, cards, worth = patterns[keep], cards[keep], worth[keep]
    order = np.lexsort((np.arange(len(patterns)), worth, cards.sum(axis=1)))
    return patterns[order]


def _type_options(cands: np.ndarray, rate, upr, value, replicas, target: float, with_count: bool):
    """Replica mixes over one type's candidates worth using in a minimal cover: those from which no replica can be
    dropped with the mix alone still covering, and that no other mix beats (no more cards, no less rate, no more
    value, and with a minimum replica count no fewer replicas); the empty mix is left out (the caller skips the
    type)."""
    ranges = [np.arange(int(replicas[c]) + 1) for c in cands]
    grid = np.array(np.meshgrid(*ranges, indexing="ij")).reshape(len(cands), -1).T
    grid = grid[grid.sum(axis=1) > 0]
    r = grid @ rate[cands]
    slowest = np.where(grid > 0, rate[cands], np.inf).min(axis=1)
    minimal = (r - slowest < target) | with_count  # with a minimum count, a replica may be there for the count
    grid, r = grid[minimal], r[minimal]
    cards = grid @ upr[cands]
    worth = grid @ value[cands]
    count = grid.sum(axis=1)
    keep = _non_dominated(np.stack([cards, -r] + ([-count] if with_count else []), axis=1), worth)
    order = np.lexsort((np.arange(keep.sum()), worth[keep], cards[keep]))
    return cands, grid[keep][order], r[keep][order]


def _non_dominated(costs: np.ndarray, worth: np.ndarray) -> np.ndarray:
    """Mask of the rows that no other row dominates: no more of every column of `costs`, no more `worth`, and
    strictly less somewhere (exact ties: the earlier row wins)."""
    n = len(worth)
    key = np.c_[costs, worth]
    better = (key[:, None, :] <= key[None, :, :]).all(axis=2)  # better[a, b]: a is no worse than b everywhere
    strictly = (key[:, None, :] < key[None, :, :]).any(axis=2) | (np.arange(n)[:, None] < np.arange(n)[None, :])
    np.fill_diagonal(better, False)
    # "earlier wins ties" makes dominance acyclic, so a row dominated by a dominated row is dominated by a kept one
    return ~(better & strictly).any(axis=0)


def server_patterns_of(table, kept: np.ndarray, served_rows: np.ndarray, value: np.ndarray,
                       mins: np.ndarray) -> dict:
    """Per server row that allows it, (positions of its candidates in `kept`, its patterns over them); `mins`: per
    server row, the replicas full service needs at least (``allocation.fewest_replicas``)."""
    srv = table.server[kept]
    start = np.searchsorted(srv, served_rows)
    stop = np.searchsorted(srv, served_rows, side="right")
    rate, upr = table.rate_star[kept], table.unit_per_replica[kept].astype(np.float64)
    typ, replicas = table.type[kept], table.replicas[kept].astype(np.int64)
    out = {}
    for i, a, b in zip(served_rows.tolist(), start.tolist(), stop.tolist()):
        row = table.rows[i]
        # Full service by patterns needs the compact form's m_i replicas; ceil(λ / best rate) of it is implied
        # by covering (up to COVER_RTOL), so only a minimum replica count is asked for explicitly.
        found = server_patterns(rate[a:b], upr[a:b], typ[a:b], value[a:b], replicas[a:b], max(row.total_rate, 0.0),
                                int(row.server.min_num_replicas))
        if found is not None and (found.sum(axis=1) >= mins[i]).all():
            out[i] = (np.arange(a, b), found)
    return out


def add_pattern_servers(b, table, kept, patterns: dict, full, unserved, share, need, value, best_effort: bool,
                        parts, info: dict) -> None:
    """Columns and rows of the servers in `patterns` (see the module docstring); extends `parts` and `info`."""
    import scipy.sparse as sp

    from .allocation import SHARE_STEPS

    rows = np.array(sorted(patterns), dtype=np.int64)
    n_types = len(table.types)
    pat_server, pat_cand, pat_count, col_of = [], [], [], []
    for i in rows.tolist():
        cands, found = patterns[i]
        first = len(pat_server)
        pat_server.extend([i] * len(found))
        nz_p, nz_c = np.nonzero(found)
        pat_cand.append(cands[nz_c])
        pat_count.append(found[nz_p, nz_c])
        col_of.append(first + nz_p)
    pat_server = np.array(pat_server, dtype=np.int64)
    entry_pattern = np.concatenate(col_of) if col_of else np.zeros(0, dtype=np.int64)
    entry_cand = np.concatenate(pat_cand) if pat_cand else np.zeros(0, dtype=np.int64)
    entry_count = np.concatenate(pat_count).astype(np.float64) if pat_count else np.zeros(0)
    x = b.columns(len(pat_server), 0, 1, True)
    # Σ_p x_ip + u_i = 1
    local = np.searchsorted(rows, pat_server)
    b.rows_of(np.r_[local, np.arange(len(rows))], np.r_[x, unserved[rows]], np.ones(len(x) + len(rows)), 1.0, 1.0)
    # partial service: y_c <= R_c u_i and w_i <= Σ_c (S rate_c / λ_i) y_c, on unserved servers only
    srv = table.server[kept]
    cand = np.flatnonzero(np.isin(srv, rows))
    R = table.replicas[kept][cand].astype(np.float64)
    loaded_rows = rows[need[rows] > 0]
    if not best_effort:
        b.ub_at(full[cand], 0.0)
        b.ub_at(share[rows], 0.0)
    else:
        m = len(cand)
        b.rows_of(np.r_[np.arange(m), np.arange(m)], np.r_[full[cand], unserved[srv[cand]]],
                  np.r_[np.ones(m), -R], -np.inf, 0.0)
        b.ub_at(share[rows[need[rows] <= 0]], 0.0)  # no load: nothing to serve partially
        sel = cand[need[srv[cand]] > 0]
        rank = np.searchsorted(loaded_rows, srv[sel])
        b.rows_of(np.r_[rank, np.arange(len(loaded_rows))], np.r_[full[sel], share[loaded_rows]],
                  np.r_[table.rate_star[kept][sel] * SHARE_STEPS / need[srv[sel]], -np.ones(len(loaded_rows))],
                  0.0, np.inf)
    # capacity and value of the patterns, one entry per (pattern, candidate)
    upr = table.unit_per_replica[kept].astype(np.float64)
    cards = np.zeros((len(x), n_types))
    np.add.at(cards, (entry_pattern, table.type[kept][entry_cand]), entry_count * upr[entry_cand])
    worth = np.bincount(entry_pattern, weights=entry_count * value[entry_cand], minlength=len(x))
    pk, pt = np.nonzero(cards)
    cap_cols, cap_coef, cap_types = parts.capacity
    parts.capacity = (np.r_[cap_cols, x[pk]], np.r_[cap_coef, cards[pk, pt]], np.r_[cap_types, pt])
    parts.value = (np.r_[parts.value[0], x], np.r_[parts.value[1], worth])
    rate_cols, rate_coef, rate_server = parts.rate
    parts.rate = (np.r_[rate_cols, x, share[rows]], np.r_[rate_coef, need[pat_server], need[rows] / SHARE_STEPS],
                  np.r_[rate_server, pat_server, rows])
    parts.partial_cols = np.r_[parts.partial_cols, full[cand], share[rows]]
    parts.partial_server = np.r_[parts.partial_server, srv[cand], rows]
    n_vars = len(b.lb)
    info["pattern_counts"] = sp.csr_matrix((entry_count, (entry_cand, x[entry_pattern])), shape=(len(kept), n_vars))
    info["patterns"] = {"cols": x, "server": pat_server, "cards": cards, "value": worth, "rows": rows}


def choose_patterns(form, v: np.ndarray, counts: np.ndarray, table) -> None:
    """Turn `v`, the compact form's vector for replicas `counts` per candidate (``Formulation.vector``), into one
    of a formulation with patterns: a pattern server whose replicas cover it takes the first of its patterns that
    needs no more cards of any type and has no more value than a minimal cover among them (one exists: the
    patterns kept dominate every minimal cover); the others are unserved with their replicas as partial service."""
    info = form.info
    pat = info["patterns"]
    k = counts[form.candidates].astype(np.float64)
    srv = table.server[form.candidates]
    rate = table.rate_star[form.candidates]
    upr = table.unit_per_replica[form.candidates].astype(np.float64)
    typ = table.type[form.candidates]
    worth = form.stages[-1].c[form.full_cols]
    share = info["share_cols"]
    for i in pat["rows"].tolist():
        col = form.unserved_cols[i]
        own = np.flatnonzero(srv == i)
        n = k[own]
        need = table.rows[i].total_rate
        covered = rate[own] @ n >= need * (1 - 1e-9) and n.sum() >= info["fewest"][i]
        chosen = _dominating_pattern(pat, i, _minimal_cover(n, rate[own], need, info["fewest"][i]), upr[own],
                                     typ[own], worth[own], len(table.types)) if covered else None
        if chosen is None:  # unserved, its replicas partial service (a server without load has no share)
            v[col] = 1.0
            if need <= 0:
                v[share[i]] = 0.0
        else:
            v[form.full_cols[own]] = 0.0
            v[share[i]] = v[col] = 0.0
            v[chosen] = 1.0


def _minimal_cover(n: np.ndarray, rate: np.ndarray, need: float, least: float) -> np.ndarray:
    """`n` with its slowest replicas dropped while it still covers `need` with at least `least` replicas."""
    n = n.copy()
    for c in np.argsort(rate, kind="stable"):
        while n[c] > 0 and rate @ n - rate[c] >= need * (1 - COVER_RTOL) and n.sum() - 1 >= least:
            n[c] -= 1
    return n


def _dominating_pattern(pat: dict, i: int, n: np.ndarray, upr, typ, worth, n_types: int):
    """The column of server i's first pattern with no more cards per type and no more value than `n`, or None."""
    cards = np.zeros(n_types)
    np.add.at(cards, typ, n * upr)
    value = float(worth @ n)
    mine = np.flatnonzero(pat["server"] == i)
    ok = (pat["cards"][mine] <= cards + 1e-9).all(axis=1) & (pat["value"][mine] <= value + 1e-9 * max(1.0, value))
    return int(pat["cols"][mine[np.argmax(ok)]]) if ok.any() else None


_NO_PATTERNS = {"cols": np.zeros(0, dtype=np.int64), "server": np.zeros(0, dtype=np.int64),
                "rows": np.zeros(0, dtype=np.int64)}


def round_and_repair(form, problem, lp_x: np.ndarray, start: np.ndarray | None = None) -> np.ndarray | None:
    """A count-stage start of a multi-assign formulation from an LP optimum (exactness does not depend on it: it
    only replaces the stage's start when better). Every server starts unserved, then takes its first option that
    fits the capacity still free, in one of four ways (the best plan is kept): the servers the LP serves whole
    first (their LP plans fit together), or the most important priority first, or the earlier levels' servers
    (held at their optimal counts) first and then the whole ones, each then the most served by the LP first; or
    as the first but with the servers of earlier levels that `start` serves keeping its plan.
    Options of a pattern server: the pattern the LP gives it whole, then its patterns (fewest cards first); of a
    server in the compact form: the LP's replicas, rounded down and completed to a cover (``_cover_from``), then
    R_c replicas of one candidate (fewest cards first). Levels below the stage's come last. None when neither
    plan keeps every row (an earlier level's optimal count)."""
    pat = form.info.get("patterns", _NO_PATTERNS)
    cols, server, rows = pat["cols"], pat["server"], pat["rows"]
    unserved = form.unserved_cols
    cap = problem.A[form.info["capacity_rows"]].tocsc()
    n_rows = len(unserved)
    served_lp = np.zeros(n_rows)
    np.add.at(served_lp, server, lp_x[cols])
    whole = np.zeros(n_rows, dtype=bool)
    whole[server[lp_x[cols] >= 1 - 1e-6]] = True
    compact = np.flatnonzero((unserved >= 0) & ~np.isin(np.arange(n_rows), rows))
    lp_u = lp_x[unserved[compact]]
    served_lp[compact] = 1 - lp_u
    whole[compact] = lp_u <= 1e-6
    todo = np.flatnonzero(unserved >= 0)
    priority = form.info["priority"]
    counted = priority[todo][problem.c[unserved[todo]] > 0]
    later = priority[todo] > (counted.max() if len(counted) else np.inf)  # levels no row or objective counts yet
    best = None
    keep = np.zeros(n_rows, dtype=bool)
    if start is not None and len(counted):  # third plan: earlier levels keep the start's (it meets their rows)
        keep[todo] = (priority[todo] < counted.min()) & (start[unserved[todo]] < 0.5)
    earlier = priority[todo] < (counted.min() if len(counted) else -np.inf)  # levels held at their optimum
    for key, base in (((~whole[todo], priority[todo]), None), ((priority[todo], ~whole[todo]), None),
                      ((~earlier, ~whole[todo], priority[todo]), None),
                      ((~whole[todo], priority[todo]), start if keep.any() else None)):
        order = todo[np.lexsort((todo, -served_lp[todo], *key[::-1], later))]
        if base is not None:
            order = order[~keep[order]]
        x = _fill(form, problem, order, lp_x, whole, cap, rows, server, cols, priority,
                  counted.min() if len(counted) else -np.inf, base, keep)
        if x is not None and (best is None or problem.c @ x < problem.c @ best):
            best = x
    return best


def _fill(form, problem, order, lp_x, whole, cap, rows, server, cols, priority, protect, base=None, keep=None):
    """round_and_repair's plan with the servers taking their options in `order`, the servers in `keep` holding
    their plan in `base`; servers with a priority below `protect` may push out the others. None if it breaks a
    row."""
    from .allocation import SHARE_STEPS

    unserved = form.unserved_cols
    full_server = form.info["server_of_full"]
    share = form.info["share_cols"]
    if base is None:
        x = np.zeros(form.n_vars)
        x[unserved[unserved >= 0]] = 1.0
    else:
        x = base.copy()
        x[cols[~keep[server]]] = 0.0
        x[form.full_cols[~keep[full_server]]] = 0.0
        others = np.flatnonzero((unserved >= 0) & ~keep)
        x[share[others]] = 0.0
        x[unserved[others]] = 1.0
    free = problem.row_ub[form.info["capacity_rows"]] - cap @ x
    p_first = np.searchsorted(server, order)
    p_last = np.searchsorted(server, order, side="right")
    c_first = np.searchsorted(full_server, order)
    c_last = np.searchsorted(full_server, order, side="right")
    units = np.asarray(abs(cap).sum(axis=0)).ravel()
    is_pattern = np.zeros(len(unserved), dtype=bool)
    is_pattern[rows] = True
    def options_of(i, pa, pb, ca, cb):
        if is_pattern[i]:
            out = [([j], [1.0]) for j in cols[pa:pb].tolist()]
            if whole[i]:
                out.insert(0, ([int(cols[pa + np.argmax(lp_x[cols[pa:pb]])])], [1.0]))
        else:
            own = form.full_cols[ca:cb]
            single = own[np.argsort(units[own] * form.ub[own], kind="stable")]
            out = [([j], [form.ub[j]]) for j in single.tolist()]
            if whole[i]:
                out.insert(0, (own.tolist(), _cover_from(lp_x[own], form, ca, cb, i).tolist()))
        for js, vs in out:
            need = np.zeros(len(free))
            for j, v in zip(js, vs):
                lo, hi = cap.indptr[j], cap.indptr[j + 1]
                need[cap.indices[lo:hi]] += v * cap.data[lo:hi]
            yield js, vs, need

    def place(i, js, vs, need):
        nonlocal free
        free = free - need
        x[js] = vs
        x[unserved[i]] = 0.0
        if not is_pattern[i]:
            x[share[i]] = SHARE_STEPS
        placed[i] = (js, vs, need)

    def evict(j):
        nonlocal free
        js, _, need = placed.pop(j)
        free = free + need
        x[js] = 0.0
        x[unserved[j]] = 1.0
        x[share[j]] = 0.0

    placed: dict[int, tuple] = {}
    spans = dict(zip(order.tolist(), zip(p_first.tolist(), p_last.tolist(), c_first.tolist(), c_last.tolist())))
    for i in order.tolist():
        for js, vs, need in options_of(i, *spans[i]):
            if (need <= free + 1e-9).all():
                place(i, js, vs, need)
                break
    # Servers of levels held at their optimum that found no room push out servers of the stage's level and
    # below (the lowest priority first, those using the short types most first).
    for i in [i for i in order.tolist() if i not in placed and priority[i] < protect]:
        for js, vs, need in itertools.islice(options_of(i, *spans[i]), EVICTION_TRIES):
            short = np.maximum(need - free, 0.0)
            victims = sorted((j for j in placed if priority[j] >= protect and (placed[j][2] @ short) > 0),
                             key=lambda j: (-priority[j], -(placed[j][2] @ short), j))
            gone = []
            while (need > free + 1e-9).any() and victims:
                j = victims.pop(0)
                gone.append((j, placed[j]))
                evict(j)
            if (need <= free + 1e-9).all():
                place(i, js, vs, need)
                break
            for j, plan in gone:  # undo
                place(j, *plan)
    ax = problem.A @ x
    ok = (np.all(ax >= problem.row_lb - 1e-6) and np.all(ax <= problem.row_ub + 1e-6)
          and np.all(x >= problem.lb - 1e-9) and np.all(x <= problem.ub + 1e-9))
    return x if ok else None


def _cover_from(lp_n: np.ndarray, form, a: int, b: int, i: int) -> np.ndarray:
    """Replicas of compact server i (its kept candidates a:b) that cover it, from an LP plan: rounded down, then
    one replica at a time until covered, on the candidates the LP rounded down first, the highest rate per card
    first (within R_c)."""
    rate, upr = form.info["rate_of_full"][a:b], form.info["upr_of_full"][a:b]
    need, least = form.info["need"][i] * (1 - COVER_RTOL), form.info["fewest"][i]
    ub = form.ub[form.full_cols[a:b]]
    n = np.minimum(np.floor(lp_n + 1e-6), ub)
    # the LP's own candidates first (their types have room in the LP plan), best rate per card first
    by_rate = np.lexsort((np.arange(len(n)), -rate / np.maximum(upr, 1e-9), lp_n <= n + 1e-6))
    while rate @ n < need or n.sum() < least:
        room = by_rate[n[by_rate] < ub[by_rate]]
        if not len(room):
            break
        n[room[0]] += 1
    return n
