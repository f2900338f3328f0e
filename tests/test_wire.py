"""inferno's JSON types bind as Go binds them; the Solution survives its JSON form."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import inferno_mip
from inferno_mip.wire import ServerSpec, SystemData, describe_error, wire_dict

ROOT = Path(__file__).resolve().parent.parent
SERVER = {"name": "s", "class": "Premium", "model": "m", "keepAccelerator": True, "minNumReplicas": 1,
          "currentAlloc": {"accelerator": "H100", "numReplicas": 2, "maxBatch": 8, "cost": 150.0,
                           "load": {"arrivalRate": 60.5, "avgInTokens": 128, "avgOutTokens": 256}}}


def recase(data, flips):
    """The same JSON with each key's letters upper/lower-cased by the flips drawn."""
    if isinstance(data, dict):
        out = {}
        for i, (k, v) in enumerate(data.items()):
            flip = flips[i % len(flips)]
            key = "".join(c.upper() if (j + flip) % 3 == 0 else c.lower() for j, c in enumerate(k))
            out[key] = recase(v, flips)
        return out
    return data


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 2), min_size=1, max_size=8))
def test_keys_bind_case_insensitively(flips):
    assert wire_dict(ServerSpec.model_validate(recase(SERVER, flips))) == SERVER


@pytest.mark.parametrize("path, value, field", [
    (("currentAlloc", "load", "avgInTokens"), 128.5, "currentAlloc.load.avgInTokens"),
    (("currentAlloc", "load", "avgInTokens"), "128", "currentAlloc.load.avgInTokens"),
    (("currentAlloc", "load", "arrivalRate"), "60", "currentAlloc.load.arrivalRate"),
    (("keepAccelerator",), 1, "keepAccelerator"),
    (("minNumReplicas",), True, "minNumReplicas"),
    (("name",), 7, "name"),
])
def test_wrong_json_types_are_rejected_naming_field_and_value(path, value, field):
    data = json.loads(json.dumps(SERVER))
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ValidationError) as err:
        ServerSpec.model_validate(data)
    message = describe_error(err.value)
    assert message.startswith(f"body.{field}:") and repr(value) in message


def test_absent_and_unknown_fields():
    bound = ServerSpec.model_validate({"name": "s", "colour": "blue", "currentAlloc": {"load": {"arrivalRate": 1}}})
    assert wire_dict(bound) == {"name": "s", "currentAlloc": {"load": {"arrivalRate": 1.0}}}
    assert bound.max_batch_size == 0  # Go's zero value when read


@pytest.mark.parametrize("name", ["inferno-small", "inferno-large", "inferno-legacy-small", "inferno-legacy-large"])
def test_sample_sets_bind_and_solution_round_trips(name):
    folder = ROOT / "scenarios" / name
    files = {"acceleratorData": "accelerator-data", "capacityData": "capacity-data", "modelData": "model-data",
             "serviceClassData": "serviceclass-data", "serverData": "server-data", "optimizerData": "optimizer-data"}
    raw = {"system": {k: json.loads((folder / f"{stem}.json").read_text()) for k, stem in files.items()}}
    bound = wire_dict(SystemData.model_validate(raw))
    assert inferno_mip.parse_system(bound).model_dump() == inferno_mip.parse_system(raw).model_dump()
    solution = inferno_mip.solve(bound, solver="greedy")
    assert inferno_mip.Solution.from_dict(json.loads(json.dumps(solution.to_dict()))) == solution
