"""The miss diagnosis of the control experiments: one cause per missed record, by the rules it documents."""

from __future__ import annotations

import sys

import pytest

from inferno_mip import load_scenario

from conftest import ROOT, SCENARIOS

sys.path.insert(0, str(ROOT / "benchmarks"))

G = "Premium-granite_8b"


@pytest.fixture(scope="module")
def tools():
    import control_diagnose

    system = load_scenario(SCENARIOS / "inferno-ramp")
    return control_diagnose, system, control_diagnose.needs(system)


def record(t, rpm, ready, *, itl=20.0, forecast=None, rec=None, replicas=None):
    server = {"name": G, "rpm": rpm, "itl": itl, "ttft": 80.0, "sloItl": 30.0, "sloTtft": 200.0, "completed": 10,
              "replicasReady": ready, "replicas": ready if replicas is None else replicas,
              "forecastRpm": rpm if forecast is None else forecast,
              "recommended": {"replicas": ready if rec is None else rec}, "solverStatus": "ok", "rules": []}
    return {"time": t, "cycle": int(t // 30), "servers": [server], "capacity": [{"available": 16}]}


def causes(tools, records, exclude=()):
    mod, system, _ = tools
    counted, rows = mod.diagnose(records, system, exclude, 30.0, 90.0)
    return [r["cause"] for r in rows]


def test_each_cause(tools):
    _, _, need = tools
    n = need(G, 300.0)
    assert need(G, 150.0) < n
    calm = [record(30.0 * i, 300.0, n) for i in range(1, 5)]
    assert causes(tools, calm) == []
    assert causes(tools, calm + [record(150.0, 300.0, n, itl=40.0)]) == ["model"]
    assert causes(tools, calm[:-1] + [record(120.0, 300.0, n - 2, itl=40.0, rec=n - 2, replicas=n - 2),
                                      record(150.0, 300.0, n, itl=40.0)])[-1] == "backlog"
    # the decision three cycles before sized for half the rate that came
    low = [record(30.0, 150.0, n, forecast=150.0, rec=need(G, 150.0), replicas=need(G, 150.0))]
    assert causes(tools, low + calm[1:3] + [record(120.0, 300.0, n - 3, itl=40.0)]) == ["forecast"]
    # ... or recommended fewer than its own forecast needs (tuned parameters)
    short = [record(30.0, 300.0, n, rec=n - 3, replicas=n - 3)]
    assert causes(tools, short + calm[1:3] + [record(120.0, 300.0, n - 3, itl=40.0)]) == ["params"]
    # ... or ordered enough, not ready yet
    assert causes(tools, calm[:3] + [record(120.0, 300.0, n - 3, itl=40.0)]) == ["starting"]
    # right after an excluded step window: the step's backlog
    assert causes(tools, calm + [record(150.0, 300.0, n, itl=40.0)], exclude=[(30.0, 60.0)]) == ["step"]
