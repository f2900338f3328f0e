"""Churn costs in the objective: added exactly to each candidate's transition value; they change decisions."""

import json

import numpy as np
import pytest

from inferno_mip import solve
from inferno_mip.io import parse_system
from inferno_mip.tables import ChurnCosts, Settings, build_table

from conftest import SCENARIOS


def two_accelerator_system(current_acc="H100", replicas=2, batch=128):
    """inferno-ramp's granite server with a cheaper A100 of the same speed next to its H100."""
    def load(name):
        return json.loads((SCENARIOS / "inferno-ramp" / f"{name}.json").read_text())

    models = load("model-data")["models"]
    models.append({**models[0], "acc": "A100"})
    servers = load("server-data")["servers"][:1]
    servers[0]["currentAlloc"].update(accelerator=current_acc, numReplicas=replicas, maxBatch=batch,
                                      cost=75.0 * replicas)
    return parse_system({"system": {
        "acceleratorData": {"accelerators": load("accelerator-data")["accelerators"]
                            + [{"name": "A100", "type": "A100", "multiplicity": 1, "cost": 40.0}]},
        "capacityData": {"count": [{"type": "H100", "count": 16}, {"type": "A100", "count": 16}]},
        "modelData": {"models": models}, "serviceClassData": load("serviceclass-data"),
        "serverData": {"servers": servers}, "optimizerData": load("optimizer-data")}})


@pytest.mark.parametrize("churn", [ChurnCosts(3.0, 5.0, 40.0, 7.0), ChurnCosts(replica_added=1.5)])
def test_churn_is_added_to_the_transition_value_exactly(churn):
    system = two_accelerator_system(replicas=1)
    plain = build_table(system, Settings(batch_rule="all"))
    charged = build_table(system, Settings(batch_rule="all", churn=churn))
    assert len(plain) == len(charged) > 2
    key = lambda t, c: (t.accelerators[int(t.acc[c])].name, int(t.batch[c]))  # noqa: E731
    base = {key(plain, c): float(plain.value[c]) for c in range(len(plain))}
    server = system.servers[0]
    for c in range(len(charged)):
        acc, batch = key(charged, c)
        expected = base[(acc, batch)] + churn.of(server, acc, int(charged.replicas[c]), batch)
        assert charged.value[c] == pytest.approx(expected, abs=1e-12)


def test_churn_formula():
    server = two_accelerator_system(replicas=3, batch=64).servers[0]
    churn = ChurnCosts(replica_added=2, replica_removed=3, accelerator_change=10, batch_change=5)
    assert churn.of(server, "H100", 5, 64) == 4  # two added
    assert churn.of(server, "H100", 1, 64) == 6  # two removed
    assert churn.of(server, "H100", 3, 128) == 5  # batch change only
    assert churn.of(server, "A100", 2, 64) == 10 + 3 * 3 + 2 * 2  # switch: all replicas restart
    with pytest.raises(ValueError, match="churn.replica_added"):
        ChurnCosts(replica_added=-1)


@pytest.mark.parametrize("solver", ["greedy", "highs"])
def test_an_accelerator_change_cost_keeps_the_server_where_it_is(solver):
    system = two_accelerator_system(replicas=2)
    free = solve(system, solver=solver)["Premium-granite_8b"]
    assert free.accelerator == "A100"  # inferno's 10 % penalty does not hold back a 47 % cheaper card
    held = solve(system, solver=solver, churn=ChurnCosts(accelerator_change=60.0))["Premium-granite_8b"]
    assert (held.accelerator, held.replicas) == ("H100", 2)
    cheap = solve(system, solver=solver, churn={"accelerator_change": 30.0})["Premium-granite_8b"]
    assert cheap.accelerator == "A100"  # saving 70/h against 0.1 * 230 - 70 + 30 = -17: still worth it


def test_churn_costs_and_the_step_limit_travel_to_the_optimizer_service():
    from dataclasses import replace

    from inferno_mip.client import OptimizerClient
    from inferno_mip.control.decide import optimizer_solve
    from live_server import serve

    system = two_accelerator_system(replicas=2)
    churn = ChurnCosts(accelerator_change=60.0)
    with serve("serve-optimizer", "--workers", "0") as url:
        with OptimizerClient(url) as client:
            for options in ({"churn": churn}, {"churn": {"accelerator_change": 30.0}}, {"max_replica_change": 1}):
                got = client.solve(system, "highs", **options)
                want = solve(system, "highs", **options)
                assert replace(got, timings={}) == replace(want, timings={}), options
        held = optimizer_solve(url)(system, solver="highs", churn=churn)["Premium-granite_8b"]  # the loop's path
        assert (held.accelerator, held.replicas) == ("H100", 2)
