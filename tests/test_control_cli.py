"""inferno-mip control: a short simulated run end to end, and bad input as one line with exit code 2."""

import json

import pytest

from inferno_mip.cli import main

from conftest import SCENARIOS

WORKLOAD = SCENARIOS / "workloads" / "step-surge.yaml"


def test_control_runs_and_records(tmp_path, capsys):
    record = tmp_path / "cycles.jsonl"
    code = main(["control", str(SCENARIOS / "inferno-ramp"), "--workload", str(WORKLOAD), "--duration", "300",
                 "--no-tuner", "--forecast", "ewma", "--solver", "greedy", "--record", str(record), "--quiet"])
    assert code == 0
    lines = [json.loads(x) for x in record.read_text().splitlines()]
    assert len(lines) == 10 and lines[-1]["time"] == 300.0
    summary = json.loads(capsys.readouterr().out)
    assert summary["cycles"] == 10 and summary["over_capacity_cycles"] == 0


@pytest.mark.slow
def test_control_full_configuration_plots(tmp_path, capsys):
    plot = tmp_path / "cycles.png"
    assert main(["control", str(SCENARIOS / "inferno-ramp"), "--workload", str(WORKLOAD), "--duration", "600",
                 "--plot", str(plot), "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["cycles"] == 20
    assert plot.stat().st_size > 10_000


def test_inferno_mode(tmp_path, capsys):
    record = tmp_path / "c.jsonl"
    assert main(["control", str(SCENARIOS / "inferno-ramp"), "--workload", str(WORKLOAD), "--duration", "120",
                 "--mode", "inferno", "--record", str(record), "--quiet"]) == 0
    first = json.loads(record.read_text().splitlines()[0])
    assert first["config"] == "inferno" and first["solver"]["name"] == "greedy"
    assert all(s.get("forecaster") is None for s in first["servers"])


@pytest.mark.parametrize("args, message", [
    (["--stability", "windw=3"], "--stability: unknown setting"),
    (["--churn", "added=x"], "--churn: added expects a number"),
    (["--margin", "2"], "--margin: expected a number in (0, 1)"),
    (["--period", "0"], "--period: must be > 0"),
])
def test_bad_options(args, message, capsys):
    code = main(["control", str(SCENARIOS / "inferno-ramp"), "--workload", str(WORKLOAD), *args])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and message in err and "Traceback" not in err


def test_bad_workload(tmp_path, capsys):
    bad = tmp_path / "w.yaml"
    bad.write_text("servers: {ghost: {rate: {phases: [{for: 10, rpm: 1}]}}}\n")
    assert main(["control", str(SCENARIOS / "inferno-ramp"), "--workload", str(bad)]) == 2
    assert "ghost" in capsys.readouterr().err
