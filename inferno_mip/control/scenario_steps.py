"""Where a workload steps (a phase that jumps rather than ramps), for leaving the reaction time after each
step out of the SLO shares, as the experiments' targets say."""

from __future__ import annotations


def step_times(workload) -> list[float]:
    """Seconds at which some server's phased rate jumps up or down (read by attribute access)."""
    times = set()
    for spec in getattr(workload, "servers", {}).values():
        rate = getattr(spec, "rate", None)
        durations, rates, ramps = (getattr(rate, k, None) for k in ("durations", "rates", "ramps"))
        if durations is None:
            continue
        t, prev = 0.0, None
        for d, r, ramp in zip(durations, rates, ramps):
            if prev is not None and not ramp and r != prev:
                times.add(t)
            t, prev = t + d, r
    return sorted(times)


def step_windows(workload, reaction: float) -> list[tuple[float, float]]:
    """[step, step + reaction) for every step; `reaction` is the start-up delay plus a period (the first
    cycle that can see a step acts one period after it, and its replicas serve a start-up delay later)."""
    return [(t, t + reaction) for t in step_times(workload)]
