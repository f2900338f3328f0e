"""Bad input anywhere is one ``error:`` line and exit code 2 (or an ``invalid-input`` entry), never a traceback,
a MemoryError or an hour of sizing; checks run before any work."""

from __future__ import annotations

import copy
import json

import pytest

import inferno_mip.api as api
from inferno_mip import ScenarioError, parse_system, solve
from inferno_mip.cli import main
from inferno_mip.queueing.limits import MAX_BATCH

from conftest import SCENARIOS


def raw(name: str = "inferno-small") -> dict:
    folder = SCENARIOS / name
    files = {"acceleratorData": "accelerator-data.json", "capacityData": "capacity-data.json",
             "modelData": "model-data.json", "serviceClassData": "serviceclass-data.json",
             "serverData": "server-data.json", "optimizerData": "optimizer-data.json"}
    return {"system": {k: json.loads((folder / f).read_text()) for k, f in files.items()}}


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    return captured.err


SMALL = str(SCENARIOS / "inferno-small")


@pytest.mark.parametrize("argv, needle", [
    (["solve", SMALL, "--time-limit", "-1"], "--time-limit"),
    (["solve", SMALL, "--gap", "2"], "--gap"),
    (["solve", SMALL, "--threads", "0"], "--threads"),
    (["solve", SMALL, "--solver", "nope"], "unknown solver 'nope'"),
    (["solve", SMALL, "--output", "/nonexistent-folder/solution.json"], "does not exist"),
    (["compare", SMALL, "--solvers", "greedy,nope"], "unknown solver 'nope'"),
    (["bench", "--sizes", "10,abc"], "--sizes"),
    (["bench", "--sizes", "10000000"], "--sizes"),
    (["bench", "--solvers", "greedy,gurobi"], "unknown solver 'gurobi'"),
    (["bench", "--repeat", "0"], "--repeat"),
    (["generate", "/tmp/never-written", "--servers", "0"], "--servers"),
    (["generate", "/tmp/never-written", "--tightness", "nan"], "--tightness"),
    (["size", "--alpha", "8", "--beta", "0.03", "--gamma", "0.0003", "--in-tokens", "1243", "--out-tokens", "279",
      "--max-batch", "2147483648", "--ttft", "379", "--json"], "max_batch"),
    (["size", "--decode-alpha", "32.85", "--decode-beta", "1e308", "--prefill-gamma", "7.7", "--prefill-delta",
      "0.0096", "--in-tokens", "1243", "--out-tokens", "279", "--max-batch", "64", "--ttft", "379"], "beta"),
    (["solve"], "required"),
])
def test_bad_arguments_are_one_line_and_exit_2_before_any_work(monkeypatch, capsys, argv, needle):
    def no_sizing(*a, **k):
        raise AssertionError("sized despite bad arguments")

    monkeypatch.setattr(api, "build_table", no_sizing)
    assert main(argv) == 2
    assert needle in one_error_line(capsys)


def test_yaml_with_a_python_tag_is_one_line(tmp_path, capsys):
    (tmp_path / "system-data.yaml").write_text("system: !!python/object/apply:os.system ['true']\n")
    assert main(["solve", str(tmp_path / "system-data.yaml")]) == 2
    assert "malformed YAML" in one_error_line(capsys)


@pytest.mark.parametrize("field, value", [("maxBatchSize", 10**6), ("maxBatchSize", 2**31), ("atTokens", 2**63)])
def test_huge_perf_sizes_are_refused_with_field_and_value(field, value):
    data = raw()
    data["system"]["modelData"]["models"][0][field] = value
    with pytest.raises(ScenarioError, match=f"models\\[0\\].{field}: .*{value}"):
        parse_system(data)


@pytest.mark.parametrize("load", [{"avgInTokens": 1e308}, {"avgOutTokens": 2**31}, {"arrivalRate": 1e300}])
def test_one_absurd_server_is_invalid_input_and_the_others_are_solved(load):
    data = raw()
    data["system"]["serverData"]["servers"][0]["currentAlloc"]["load"].update(load)
    name = data["system"]["serverData"]["servers"][0]["name"]
    solution = solve(data, solver="greedy")
    assert solution[name].status == "invalid-input"
    assert next(iter(load)) in solution[name].reason and "less than or equal" in solution[name].reason
    assert sum(a.status == "ok" for a in solution.allocations) >= len(solution.allocations) - 2


def test_fractional_output_tokens_do_not_divide_by_zero():
    data = raw()
    load = data["system"]["serverData"]["servers"][0]["currentAlloc"]["load"]
    load["avgOutTokens"] = 0.5
    solution = solve(data, solver="greedy")
    assert len(solution.allocations) == len(data["system"]["serverData"]["servers"])


def test_derived_batch_is_capped_for_tiny_outputs():
    data = raw()
    for model in data["system"]["modelData"]["models"]:
        model.update(maxBatchSize=MAX_BATCH, atTokens=1_000_000)
    for server in data["system"]["serverData"]["servers"]:
        server["currentAlloc"]["load"]["avgOutTokens"] = 1
    solution = solve(copy.deepcopy(data), solver="unlimited")
    assert all(a.max_batch <= MAX_BATCH for a in solution.allocations)
