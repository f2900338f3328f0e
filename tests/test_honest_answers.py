"""Answers say what they are: the time limit covers the whole call, a backend that cannot run is refused before
sizing, and every output names its arrival-rate unit."""

from __future__ import annotations

import pytest

import inferno_mip.api as api
import inferno_mip.solvers.greedy as greedy
from inferno_mip import load_scenario, solve
from inferno_mip.cli import main

from conftest import SCENARIOS


@pytest.fixture(scope="module")
def small():
    return load_scenario(SCENARIOS / "inferno-small")


class _Clock:
    """A stand-in for the time module whose perf_counter the test advances by `sizing` during table building."""

    def __init__(self, sizing: float):
        self.now, self.sizing = 1000.0, sizing

    def perf_counter(self) -> float:
        return self.now


def _budget_seen(monkeypatch, small, sizing: float, **options) -> float:
    clock, seen = _Clock(sizing), {}
    real_build, real_greedy = api.build_table, greedy.solve

    def build(*a, **k):
        table = real_build(*a, **k)
        clock.now += clock.sizing
        return table

    def backend(table, **kw):
        seen["time_limit"] = kw["time_limit"]
        return real_greedy(table, **kw)

    monkeypatch.setattr(api, "time", clock)
    monkeypatch.setattr(api, "build_table", build)
    monkeypatch.setattr(greedy, "solve", backend)
    solve(small, solver="greedy", **options)
    return seen["time_limit"]


def test_default_time_limit_covers_sizing(monkeypatch, small):
    assert _budget_seen(monkeypatch, small, sizing=50.0) == pytest.approx(api.DEFAULT_TIME_LIMIT - 50.0)


def test_given_time_limit_covers_sizing_and_never_goes_negative(monkeypatch, small):
    assert _budget_seen(monkeypatch, small, sizing=5.0, time_limit=12.0) == pytest.approx(7.0)
    assert _budget_seen(monkeypatch, small, sizing=500.0) == 0.0


def test_missing_pyomo_solver_is_refused_before_sizing(monkeypatch, small):
    def no_sizing(*a, **k):
        raise AssertionError("sized although the backend cannot run")

    monkeypatch.setattr(api, "build_table", no_sizing)
    with pytest.raises(ValueError, match="'no-such-solver'.*known"):
        solve(small, solver="pyomo", pyomo_solver="no-such-solver")
    with pytest.raises(ValueError, match="not installed here"):  # known to pyomo, absent here
        solve(small, solver="pyomo", pyomo_solver=_absent_pyomo_solver())


def _absent_pyomo_solver() -> str:
    from inferno_mip.solvers.pyomo_solver import OPTION_NAMES, available_solvers

    absent = [name for name in OPTION_NAMES if name not in available_solvers()]
    if not absent:
        pytest.skip("every pyomo solver we know is installed here")
    return absent[0]


def test_cli_absent_backend_is_one_error_line_and_exit_2(capsys):
    code = main(["solve", str(SCENARIOS / "inferno-small"), "--solver", "pyomo", "--pyomo-solver",
                 _absent_pyomo_solver()])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1


@pytest.mark.parametrize("options, field", [({"time_limit": -1}, "time_limit"), ({"time_limit": float("nan")},
                                            "time_limit"), ({"mip_gap": 2}, "mip_gap"), ({"threads": 0}, "threads"),
                                            ({"seed": 1.5}, "seed"), ({"max_replica_change": -2},
                                                                      "max_replica_change")])
def test_bad_numeric_options_name_the_option(small, options, field):
    with pytest.raises(ValueError, match=f"^{field}: "):
        solve(small, solver="greedy", **options)


def test_every_output_names_its_rate_unit(small, capsys):
    solution = solve(small, solver="greedy")
    native, inferno = solution.to_dict(), solution.to_inferno()
    assert native["units"]["rates"] == "requests/second"
    assert inferno["units"]["arrivalRate"] == "requests/minute"
    for entry in native["servers"]:
        assert inferno["allocations"][entry["name"]]["load"]["arrivalRate"] == pytest.approx(60 * entry["arrivalRate"])
    assert main(["solve", str(SCENARIOS / "inferno-small"), "--solver", "greedy"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "load req/s" in header
