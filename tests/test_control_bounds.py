"""The clairvoyant bounds of the control experiments: the start-up floor on worked cases and as properties."""

from __future__ import annotations

import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

from control_bounds import Clairvoyant, startup_floor  # noqa: E402


def test_floor_worked_case():
    # layer 1 serves all 5 cycles; layer 2 cycles 1 and 4: ordered before the run (cycle 0 of its start-up
    # counted), the 2-cycle gap bridged (a restart costs as much): 1 + 1 + 2 + 1
    assert startup_floor([{"s": n} for n in (1, 2, 1, 1, 2)], 2) == 5 + 5
    # a longer gap is cheaper to restart across: 2 cycles of start-up instead of 3 idle
    assert startup_floor([{"s": n} for n in (2, 1, 1, 1, 2)], 2) == 5 + (1 + 2 + 1)
    # a replica first needed after the delay is paid from its order
    assert startup_floor([{"s": n} for n in (1, 1, 1, 2)], 2) == 4 + (2 + 1)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=30), st.integers(0, 3))
def test_floor_between_the_oracle_and_holding_the_peak(series, delay):
    counts = [{"s": n} for n in series]
    floor = startup_floor(counts, delay)
    assert sum(series) <= floor <= max(series) * (len(series) + delay)
    if delay == 0:
        assert floor == sum(series)  # no start-up: the oracle itself
    assert startup_floor(counts, delay + 1) >= floor  # a longer start-up never costs less


def test_clairvoyant_sizes_for_the_highest_window_until_an_order_serves():
    f = Clairvoyant({30.0: 1.0, 60.0: 3.0, 90.0: 2.0, 120.0: 0.5}, ahead=3, period=30.0)
    f.update(0.0, 9.0)
    assert f.predict() == 3.0
    f.update(90.0, 2.0)
    assert f.predict() == 0.5  # only what is known; past the end of the series: the value seen
    f.update(120.0, 0.7)
    assert f.predict() == 0.7
