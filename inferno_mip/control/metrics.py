"""Run metrics from cycle records (measured by the fleet, never predicted): the share of (server, cycle)
records within both SLOs (inferno's definition: cycle-average ITL and TTFT at or under target), per-request SLO
attainment, replica reversals, card-hours, peak cards against capacity, over-capacity and held cycles."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence


def in_windows(t: float, windows: Iterable[tuple[float, float]]) -> bool:
    return any(a <= t < b for a, b in windows)


def reversals(counts: Sequence[int]) -> int:
    """Sign changes of the direction of replica changes (unchanged cycles carry the last direction)."""
    last, n = 0, 0
    for a, b in zip(counts, counts[1:]):
        d = (b > a) - (b < a)
        if d and last and d != last:
            n += 1
        if d:
            last = d
    return n


def summarize(records: Sequence[dict], exclude: Iterable[tuple[float, float]] = (), period: float = 30.0) -> dict:
    """Metrics of a run; records whose time falls in an `exclude` window (e.g. the first start-up delay after a
    step) are left out of the SLO shares (they still count for cost, reversals and capacity)."""
    exclude = list(exclude)
    within = total = 0
    req_ok = req_all = 0.0
    replicas: dict[str, list[int]] = {}
    card_seconds = 0.0
    peak: dict[str, int] = {}
    over = 0
    held = Counter()
    for r in records:
        counted = not in_windows(r["time"], exclude)
        for s in r["servers"]:
            replicas.setdefault(s["name"], []).append(s["replicas"])
            if not counted:
                continue
            itl, ttft = s.get("itl"), s.get("ttft")
            if itl is not None and ttft is not None and (s.get("completed") or 0) > 0:
                total += 1
                within += (itl <= (s["sloItl"] or float("inf"))) and (ttft <= (s["sloTtft"] or float("inf")))
            done = s.get("completed") or 0
            if s.get("withinSlo") is not None and done:
                req_ok += s["withinSlo"] * done
                req_all += done
        for c in r["capacity"]:
            card_seconds += c["allocated"] * period
            peak[c["type"]] = max(peak.get(c["type"], 0), c["allocated"])
        over += any(c["allocated"] > c["available"] for c in r["capacity"])
        if r.get("held"):
            held[r["held"].split(":")[0]] += 1
        for s in r["servers"]:
            if s.get("fault"):
                held[s["fault"].split(":")[0]] += 1
    available = {c["type"]: c["available"] for c in records[-1]["capacity"]} if records else {}
    return {
        "cycles": len(records),
        "records": total,
        "both_slo": within / total if total else None,
        "request_slo": req_ok / req_all if req_all else None,
        "reversals": sum(reversals(v) for v in replicas.values()),
        "card_hours": card_seconds / 3600.0,
        "cost_hours": sum(r["totalCost"] * period / 3600.0 for r in records),
        "peak_cards": peak,
        "capacity": available,
        "over_capacity_cycles": over,
        "held": dict(sorted(held.items())),
    }
