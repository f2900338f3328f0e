"""Every inferno-format JSON the project writes decodes into inferno's Go types: each field's JSON kind matches the
Go field type of inferno's optimizer spec, §1.3 (copied to tests/data/go-types.md; an ``int`` field never gets
``160.0``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from inferno_mip import load_scenario, solve
from inferno_mip.cli import main
from inferno_mip.io import write_scenario

from conftest import ROOT, SCENARIOS

SPEC = ROOT / "tests" / "data" / "go-types.md"
# §1.3 leaves AllocationData's types blank; §1.1: "Floats are float32: costs, rates, SLOs, perf parameters.
# Integers: token counts, batch sizes, counts."
ALLOCATION_DATA = {"accelerator": "str", "numReplicas": "int", "maxBatch": "int", "cost": "float",
                   "itlAverage": "float", "ttftAverage": "float"}
TARGETS = {"model": "str", "slo-itl": "float", "slo-ttft": "float", "slo-tps": "float"}
GO_KIND = {"int": lambda v: isinstance(v, int) and not isinstance(v, bool),
           "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
           "float32": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
           "str": lambda v: isinstance(v, str), "bool": lambda v: isinstance(v, bool)}


def go_types() -> dict[str, dict[str, str]]:
    """Entity -> {json field: Go type} from the table of §1.3 (cells with one type apply to every field)."""
    text = SPEC.read_text(encoding="utf-8")
    table = text[text.index("### 1.3"):]
    types: dict[str, dict[str, str]] = {}
    entity = ""
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or cells[0] == "spec" or set(cells[0]) <= {"-"} and cells[0]:
            continue
        entity = cells[0] or entity
        names = [n.strip() for n in cells[1].split(",")]
        kinds = [k.strip() for k in cells[2].split(",")] if cells[2] else []
        if not kinds or any(not re.fullmatch(r"[A-Za-z][\w-]*", n) for n in names):
            continue  # untyped or structured cells (power{...}, modelTargets[]{...})
        kinds = kinds if len(kinds) == len(names) else kinds[:1] * len(names)
        types.setdefault(entity, {}).update(zip(names, kinds))
    types["AllocationData"] = {**types.get("AllocationData", {}), **ALLOCATION_DATA}
    types["ModelTarget"] = TARGETS
    return types


def check(obj: dict, entity: str, types: dict, where: str) -> list[str]:
    """Fields of `obj` whose JSON kind does not match their Go type in `entity` (unknown fields are not checked)."""
    bad = []
    for field, value in obj.items():
        kind = types[entity].get(field)  # nested types (AllocationData, ...) are checked on their own
        if kind in GO_KIND and not GO_KIND[kind](value):
            bad.append(f"{where}.{field} = {value!r} is not a Go {kind}")
    return bad


def check_scenario_folder(folder: Path, types: dict) -> list[str]:
    def read(name: str) -> dict:
        return json.loads((folder / name).read_text(encoding="utf-8"))

    bad = []
    for a in read("accelerator-data.json")["accelerators"]:
        bad += check(a, "AcceleratorSpec", types, f"accelerator {a['name']}")
    for c in read("capacity-data.json")["count"]:
        bad += check(c, "AcceleratorCount", types, f"capacity {c['type']}")
    for m in read("model-data.json")["models"]:
        bad += check(m, "ModelAcceleratorPerfData", types, f"model {m['name']}/{m['acc']}")
    for c in read("serviceclass-data.json")["serviceClasses"]:
        bad += check(c, "ServiceClassSpec", types, f"class {c['name']}")
        for t in c["modelTargets"]:
            bad += check(t, "ModelTarget", types, f"class {c['name']} target")
    for s in read("server-data.json")["servers"]:
        bad += check(s, "ServerSpec", types, f"server {s['name']}")
        bad += check(s["currentAlloc"], "AllocationData", types, f"server {s['name']}.currentAlloc")
        bad += check(s["currentAlloc"]["load"], "ServerLoadSpec", types, f"server {s['name']}.load")
    bad += check(read("optimizer-data.json")["optimizer"], "OptimizerSpec", types, "optimizer")
    return bad


def test_spec_table_parses_the_integer_fields_the_go_decoder_needs():
    types = go_types()
    assert types["AcceleratorSpec"]["memSize"] == types["AcceleratorSpec"]["memBW"] == "int"
    assert types["ServerLoadSpec"]["avgInTokens"] == "int" and types["ServerLoadSpec"]["arrivalRate"] == "float32"
    assert types["AcceleratorCount"] == {"type": "str", "count": "int"}
    assert types["ModelAcceleratorPerfData"]["maxBatchSize"] == "int"
    assert types["ServerSpec"]["maxQueueSize"] == "int"


def test_generated_fleet_matches_go_types(tmp_path):
    assert main(["generate", str(tmp_path / "fleet"), "--servers", "30", "--seed", "4", "--tightness", "0.8"]) == 0
    assert check_scenario_folder(tmp_path / "fleet", go_types()) == []


@pytest.mark.parametrize("name", ["inferno-large", "inferno-legacy-small"])
def test_rewritten_sample_set_matches_go_types(tmp_path, name):
    system = load_scenario(SCENARIOS / name)
    assert check_scenario_folder(write_scenario(system, tmp_path / name), go_types()) == []


def test_fractional_token_counts_are_written_as_nearest_integers(tmp_path):
    system = load_scenario(SCENARIOS / "inferno-small")
    s = system.servers[0]
    odd = s.model_copy(update={"load": s.load.model_copy(update={"avg_in_tokens": 243.7, "avg_out_tokens": 99.2})})
    folder = write_scenario(system.replace(servers=(odd, *system.servers[1:])), tmp_path / "odd")
    load = json.loads((folder / "server-data.json").read_text())["servers"][0]["currentAlloc"]["load"]
    assert (load["avgInTokens"], load["avgOutTokens"]) == (244, 99)


def test_solution_in_inferno_format_matches_go_types():
    types = go_types()
    solution = solve(SCENARIOS / "inferno-large", solver="greedy").to_inferno()
    bad = []
    for name, alloc in solution["allocations"].items():
        bad += check(alloc, "AllocationData", types, name) + check(alloc["load"], "ServerLoadSpec", types, name)
    assert bad == [] and len(solution["allocations"]) > 0


def test_generate_refuses_to_overwrite_without_force(tmp_path, capsys):
    target = tmp_path / "fleet"
    assert main(["generate", str(target), "--servers", "5"]) == 0
    before = (target / "server-data.json").read_text()
    assert main(["generate", str(target), "--servers", "7"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--force" in err and err.count("\n") == 1
    assert (target / "server-data.json").read_text() == before
    assert main(["generate", str(target), "--servers", "7", "--force"]) == 0
    assert len(json.loads((target / "server-data.json").read_text())["servers"]) == 7
