"""Reading scenarios: the three format generations, case-insensitive keys, and clear errors on bad input."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from inferno_mip import ScenarioError, load_scenario, parse_system
from inferno_mip.cli import main

from conftest import SCENARIOS

DATA = SCENARIOS.parent / "tests" / "data" / "inferno"


@pytest.mark.parametrize("name, generation, servers, perf", [
    ("inferno-small", "G3", 15, 30), ("inferno-large", "G3", 27, 189),
    ("inferno-legacy-small", "G2", 15, 30), ("inferno-legacy-large", "G2", 27, 189),
])
def test_sample_sets_load(name, generation, servers, perf):
    system = load_scenario(SCENARIOS / name)
    assert len(system.servers) == servers
    assert len(system.perf) == perf
    assert {p.generation for p in system.perf} == {generation}
    assert not system.invalid_servers and not system.issues


def test_units_and_defaults():
    system = load_scenario(SCENARIOS / "inferno-small")
    server = next(s for s in system.servers if s.name == "Premium-llama_13b")
    assert server.load.arrival_rate == pytest.approx(1.0)  # 60 requests/minute in the file
    assert server.load.avg_in_tokens == 128 and server.load.avg_out_tokens == 1024  # keys "AvgInTokens"
    assert system.class_by_name["Premium"].priority == 1
    assert system.optimizer.saturation_policy == "RoundRobin"


def test_system_file_equals_folder(tmp_path):
    folder = load_scenario(SCENARIOS / "inferno-small")
    data = json.loads((SCENARIOS / "inferno-small" / "server-data.json").read_text())
    system = {"system": {}}
    for key, stem in [("acceleratorData", "accelerator"), ("capacityData", "capacity"), ("modelData", "model"),
                      ("serviceClassData", "serviceclass"), ("serverData", "server"), ("optimizerData", "optimizer")]:
        system["system"][key] = json.loads((SCENARIOS / "inferno-small" / f"{stem}-data.json").read_text())
    assert data == system["system"]["serverData"]
    (tmp_path / "system-data.json").write_text(json.dumps(system))
    (tmp_path / "system-data.yaml").write_text(yaml.safe_dump(system))
    for path in (tmp_path / "system-data.json", tmp_path / "system-data.yaml"):
        loaded = load_scenario(path)
        assert loaded.servers == folder.servers and loaded.perf == folder.perf and loaded.classes == folder.classes
    assert parse_system(system).servers == folder.servers


def test_single_system_file_of_inferno():
    system = load_scenario(DATA / "small-system-data.json")  # inferno's small/system-data.json
    assert len(system.servers) == 15
    assert system.optimizer.saturation_policy == "PriorityRoundRobin"


def test_keys_case_insensitive(scenario_copy):
    folder, edit = scenario_copy()
    edit("server-data.json", lambda d: {"SERVERS": [{k.upper(): v for k, v in s.items()} for s in d["servers"]]})
    assert len(load_scenario(folder).servers) == 15


def test_generation_one_flat_alpha_beta(scenario_copy):
    folder, edit = scenario_copy()

    def flat(d):
        for m in d["models"]:
            m.pop("perfParms")
            m["alpha"], m["beta"] = 10.0, 0.5
    edit("model-data.json", flat)

    def g1_classes(d):  # one flat entry per (class, model) with slo-ttw
        return {"serviceClasses": [{"name": c["name"], "priority": c["priority"], "model": t["model"],
                                    "slo-itl": t["slo-itl"], "slo-ttw": 500} for c in d["serviceClasses"]
                                   for t in c["modelTargets"]]}
    edit("serviceclass-data.json", g1_classes)
    system = load_scenario(folder)
    assert {p.generation for p in system.perf} == {"G1"}
    premium = system.class_by_name["Premium"]
    assert premium.priority == 1 and premium.targets["llama_13b"].ttft == 500
    assert len(premium.targets) == 5


def error_of(folder) -> str:
    with pytest.raises(ScenarioError) as info:
        load_scenario(folder)
    return str(info.value)


def test_malformed_json_names_file_and_line(scenario_copy):
    folder, _ = scenario_copy()
    (folder / "accelerator-data.json").write_text('{"accelerators": [ {"name": "L4",, } ]}')
    message = error_of(folder)
    assert "accelerator-data.json" in message and "line 1" in message and "malformed JSON" in message


def test_nan_cost_is_an_error(scenario_copy):
    folder, _ = scenario_copy()
    text = (folder / "accelerator-data.json").read_text().replace('"cost": 6.00', '"cost": NaN', 1)
    (folder / "accelerator-data.json").write_text(text)
    message = error_of(folder)
    assert "accelerator-data.json" in message and "accelerators[0].cost" in message and "NaN" in message


def test_wrong_type_names_field_and_value(scenario_copy):
    folder, edit = scenario_copy()
    edit("model-data.json", lambda d: d["models"][3]["perfParms"].update(alpha="fast"))
    message = error_of(folder)
    assert "model-data.json" in message and "models[3]" in message and "'fast'" in message


def test_missing_file_is_clear(tmp_path):
    message = error_of(tmp_path)
    assert "server-data.json" in message


def test_bad_server_does_not_sink_others(scenario_copy):
    folder, edit = scenario_copy()

    def corrupt(d):
        d["servers"][0]["currentAlloc"]["load"]["arrivalRate"] = -5
        d["servers"][1]["class"] = "Gold"
        d["servers"][2]["model"] = "gpt_9"
    edit("server-data.json", corrupt)
    system = load_scenario(folder)
    assert len(system.servers) == 12
    reasons = {s.name: s.reason for s in system.invalid_servers}
    assert len(reasons) == 3
    assert any("arrivalRate" in r and "-5" in r and "server-data.json" in r for r in reasons.values())
    assert any("'Gold'" in r for r in reasons.values())
    assert any("'gpt_9'" in r for r in reasons.values())


def test_cli_bad_server_exit_code_and_message(scenario_copy, capsys):
    folder, edit = scenario_copy()
    edit("server-data.json", lambda d: d["servers"][0]["currentAlloc"]["load"].update(arrivalRate=-5))
    code = main(["solve", str(folder), "--format", "json"])
    out, err = capsys.readouterr()
    assert code == 2
    assert "Traceback" not in err and "arrivalRate" in err and "-5" in err
    servers = json.loads(out)["servers"]
    assert len(servers) == 15  # the bad server is reported, the others solved
    statuses = {s["name"]: s["status"] for s in servers}
    assert statuses["Premium-llama_13b"] == "invalid-input"
    assert sum(s == "ok" for s in statuses.values()) == 14


def test_cli_malformed_json_exit_code(scenario_copy, capsys):
    folder, _ = scenario_copy()
    (folder / "server-data.json").write_text("{ not json")
    assert main(["solve", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "server-data.json" in err and "Traceback" not in err


def test_unknown_accelerator_in_perf_data_is_reported(scenario_copy):
    folder, edit = scenario_copy()
    edit("model-data.json", lambda d: d["models"][0].update(acc="TPUv9"))
    system = load_scenario(folder)
    assert len(system.perf) == 29
    assert any("TPUv9" in str(i) for i in system.issues)


def test_unknown_field_is_reported_not_fatal(scenario_copy):
    folder, edit = scenario_copy()
    edit("server-data.json", lambda d: d["servers"][0]["currentAlloc"]["load"].update(arivalRate=3))
    system = load_scenario(folder)
    assert any("arivalrate" in str(i) and "unknown field" in str(i) for i in system.issues)


def test_priority_and_class_defaults(scenario_copy):
    folder, edit = scenario_copy()

    def change(d):
        d["serviceClasses"][0]["priority"] = 0  # Premium: outside [1, 100] -> lowest
        d["serviceClasses"][1].pop("priority")  # Bronze: omitted -> lowest
    edit("serviceclass-data.json", change)
    edit("server-data.json", lambda d: d["servers"][0].update({"class": ""}))
    system = load_scenario(folder)
    priorities = {c.name: c.priority for c in system.classes}
    assert priorities["Premium"] == 100 and priorities["Bronze"] == 100 and priorities["Free"] == 3
    first = next(s for s in system.servers if s.name == "Premium-llama_13b")
    assert first.class_name == "Free"


def test_token_cv_fields_optional_validated_and_written_back(scenario_copy, tmp_path):
    from inferno_mip.io import to_system_data

    folder, edit = scenario_copy()
    plain = load_scenario(folder)
    assert all(s.load.out_tokens_cv is None and s.load.in_tokens_cv is None for s in plain.servers)

    def spread(d):
        d["servers"][0]["currentAlloc"]["load"].update(outTokensCV=1.0, INTOKENSCV=0.25)
        d["servers"][1]["currentAlloc"]["load"]["outTokensCV"] = -0.5
    edit("server-data.json", spread)
    system = load_scenario(folder)
    first = next(s for s in system.servers if s.load.out_tokens_cv is not None)
    assert (first.load.in_tokens_cv, first.load.out_tokens_cv) == (0.25, 1.0)
    bad = [s.reason for s in system.invalid_servers]
    assert len(bad) == 1 and "outTokensCV" in bad[0] and "-0.5" in bad[0]
    loads = [s["currentAlloc"]["load"] for s in to_system_data(system)["system"]["serverData"]["servers"]]
    assert sum("outTokensCV" in load for load in loads) == 1  # written only where given
    assert parse_system(to_system_data(system)).servers == system.servers
