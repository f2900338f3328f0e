"""inferno's greedy allocator with best effort (spec optimizer.md §3.2-3.4), made deterministic.

Priority first; within a priority level the server with the largest regret (value of its next option minus its
current one) goes first. An accepted allocation is never revoked. Servers left over get capacity by the
saturation policy. Go's map order and unstable sorts are replaced by total orders: candidates by
(value, cost, units, accelerator name), servers by (priority, -regret, -value, name).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, replace

import numpy as np

from inferno_mip.solution import Assignment, objective_value
from inferno_mip.tables import CandidateTable

NO_REGRET = float(np.finfo(np.float32).max)  # inferno's "last option" sentinel


@dataclass
class _Entry:
    row: int
    name: str
    priority: int
    candidates: np.ndarray  # candidate indices, best first
    idx: int
    regret: float

    def key(self, value: np.ndarray) -> tuple:
        return (self.priority, -self.regret, -float(value[self.candidates[self.idx]]), self.name)


class _Greedy:
    def __init__(self, table: CandidateTable, policy: str):
        self.t = table
        self.policy = policy
        self.available = table.capacity.astype(np.float64).copy()
        self.chosen = np.full(len(table.rows), -1, dtype=np.int64)
        self.replicas = np.zeros(len(table.rows), dtype=np.int64)

    def entries(self) -> list[_Entry]:
        t, out = self.t, []
        for i, row in enumerate(t.rows):
            cands = t.of_server(i)
            if len(cands) == 0:
                continue
            regret = float(t.value[cands[1]] - t.value[cands[0]]) if len(cands) > 1 else NO_REGRET
            out.append(_Entry(i, row.server.name, row.priority, cands, 0, regret))
        out.sort(key=lambda e: e.key(t.value))
        return out

    def allocate(self, entries: list[_Entry]) -> list[_Entry]:
        """Satisfy entries in order; an entry whose option does not fit retries its next one at its new rank."""
        t = self.t
        queue = list(entries)
        keys = [e.key(t.value) for e in queue]
        exhausted = []
        while queue:
            top = queue.pop(0)
            keys.pop(0)
            c = top.candidates[top.idx]
            need, k = t.units[c], t.type[c]
            if self.available[k] >= need:
                self.available[k] -= need
                self.chosen[top.row], self.replicas[top.row] = c, t.replicas[c]
                continue
            top.idx += 1
            if top.idx == len(top.candidates):
                exhausted.append(top)
                continue
            top.regret = (float(t.value[top.candidates[top.idx + 1]] - t.value[top.candidates[top.idx]])
                          if top.idx + 1 < len(top.candidates) else NO_REGRET)
            key = top.key(t.value)
            p = bisect.bisect_left(keys, key)  # before any entry that does not come strictly before it
            queue.insert(p, top)
            keys.insert(p, key)
        return exhausted

    def best_effort(self, unserved: list[_Entry]) -> None:
        if self.policy == "PriorityExhaustive":
            self.allocate_maximally(unserved)
        elif self.policy == "PriorityRoundRobin":
            for group in _priority_groups(unserved):
                self.allocate_equally(group)
        elif self.policy == "RoundRobin":
            self.allocate_equally(unserved)

    def allocate_maximally(self, unserved: list[_Entry]) -> None:
        t = self.t
        for e in unserved:
            for c in e.candidates:
                per = t.unit_per_replica[c]
                if per <= 0:
                    continue
                k = int(min(self.available[t.type[c]] // per, t.replicas[c]))
                if k > 0:
                    self.available[t.type[c]] -= k * per
                    self.chosen[e.row], self.replicas[e.row] = c, k
                    break

    def allocate_equally(self, group: list[_Entry]) -> None:
        """Round robin: one replica per round to every server, each bound to its first type with room."""
        t = self.t
        tickets = [[e, -1, 0] for e in group]  # entry, bound candidate, replicas given
        active = list(tickets)
        while active:
            still = []
            for ticket in active:
                e, c, n = ticket
                if c < 0:
                    fits = [c for c in e.candidates
                            if t.unit_per_replica[c] > 0 and self.available[t.type[c]] >= t.unit_per_replica[c]]
                    if not fits:
                        continue
                    c = ticket[1] = fits[0]
                per = t.unit_per_replica[c]
                if self.available[t.type[c]] >= per and n < t.replicas[c]:
                    self.available[t.type[c]] -= per
                    ticket[2] = n + 1
                    still.append(ticket)
            active = still
        for e, c, n in tickets:
            if n > 0:
                self.chosen[e.row], self.replicas[e.row] = c, n


def _priority_groups(entries: list[_Entry]) -> list[list[_Entry]]:
    groups: list[list[_Entry]] = []
    for e in entries:
        if groups and groups[-1][0].priority == e.priority:
            groups[-1].append(e)
        else:
            groups.append([e])
    return groups


def solve(table: CandidateTable, *, saturation_policy: str = "None", delayed_best_effort: bool = False,
          **_options) -> Assignment:
    """inferno's greedy with the given saturation policy; deterministic."""
    g = _Greedy(table, saturation_policy)
    entries = g.entries()
    if delayed_best_effort:
        g.best_effort(g.allocate(entries))
    else:
        for group in _priority_groups(entries):
            g.best_effort(g.allocate(group))
    assignment = Assignment.from_choices(table, g.chosen, g.replicas, status="heuristic")
    return replace(assignment, objective=objective_value(table, assignment.counts))
