"""``inferno-mip simulate``: both forms, JSON/CSV, and one error line with exit code 2 on bad input."""

from __future__ import annotations

import csv
import io
import json

from pathlib import Path

import pytest

from inferno_mip.cli import main
from inferno_mip.sim.allocation import load_allocation

ROOT = Path(__file__).resolve().parent.parent
SMALL = str(ROOT / "scenarios" / "inferno-small")
DATA = ROOT / "tests" / "data" / "sim"
SOLUTION = str(DATA / "inferno-small-solution.json")
INFERNO_SOLUTION = str(DATA / "inferno-small-allocation-solution.json")
ONE = ["simulate", "--alpha", "8", "--beta", "0.016", "--gamma", "0.0005", "--in-tokens", "256", "--out-tokens",
       "256", "--max-batch", "16", "--rate", "2", "--duration", "200", "--seeds", "3"]


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_one_replica_json_has_means_intervals_and_per_seed_values(capsys):
    code, out, err = run(ONE + ["--out-tokens-cv", "1", "--out-tokens-dist", "geometric", "--json"], capsys)
    assert code == 0 and not err
    data = json.loads(out)
    assert data["seeds"] == 3 and data["outTokens"] == "geometric mean 256" and data["maxQueue"] == 160
    for key in ("throughput", "ttft", "ttftP95", "itl", "itlP95", "respTime", "rho", "blocking"):
        entry = data[key]
        assert len(entry["values"]) == 3
        assert entry["mean"] == pytest.approx(sum(entry["values"]) / 3)
        assert entry["ci95"] >= 0
    assert data["throughput"]["mean"] == pytest.approx(2.0, rel=0.1)
    assert data["rho"]["mean"] == pytest.approx(data["numInService"]["mean"] / 16)


def test_one_replica_table_and_decode_prefill_parameters(capsys):
    code, out, _ = run(["simulate", "--decode-alpha", "17", "--decode-beta", "0.34", "--prefill-gamma", "170",
                        "--prefill-delta", "0.017", "--in-tokens", "96", "--out-tokens", "64", "--max-batch", "8",
                        "--rate", "0.01", "--duration", "2000", "--seeds", "2"], capsys)
    assert code == 0
    lines = {line.split()[0] + (" " + line.split()[1] if line.split()[1] in ("mean", "p95") else ""): line
             for line in out.splitlines()[1:-1]}
    ttft = float(lines["TTFT mean"].split()[2])
    assert ttft == pytest.approx(170 + 0.017 * 96, rel=0.02)  # light load: a lone prefill, as the G2 model has it


def test_fleet_json_and_csv_agree(capsys):
    base = ["simulate", SMALL, "--allocation", SOLUTION, "--duration", "40", "--window", "20",
            "--workload", str(ROOT / "tests" / "data" / "sim" / "five-phase-ramp.yaml")]
    code, out, _ = run(base + ["--json"], capsys)
    assert code == 0
    windows = json.loads(out)
    assert [(w["start"], w["end"]) for w in windows] == [(0, 20), (20, 40)]
    server = windows[1]["servers"]["Premium-granite_13b"]
    assert server["accelerator"] and server["replicas_ready"] >= 1 and server["offered_rate"] > 0
    code, out, _ = run(base + ["--csv"], capsys)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 2 * len(windows[0]["servers"])
    row = next(r for r in rows if r["server"] == "Premium-granite_13b" and r["start"] == "20.0")
    assert float(row["offered_rate"]) == pytest.approx(server["offered_rate"])
    assert float(row["ttft_mean"]) == pytest.approx(server["ttft_mean"])


def test_both_solution_formats_give_the_same_allocation():
    assert load_allocation(SOLUTION) == load_allocation(INFERNO_SOLUTION)


@pytest.mark.parametrize("argv, message", [
    (["simulate", "--alpha", "8", "--beta", "0.01", "--in-tokens", "10", "--out-tokens", "10", "--max-batch", "4",
      "--rate", "1"], "--gamma"),
    (ONE[:-6] + ["--rate", "-1"], "rate"),
    (ONE[:-6] + ["--rate", "nan"], "rate"),
    (["simulate", "--alpha", "nan", "--beta", "0", "--gamma", "0", "--in-tokens", "10", "--out-tokens", "10",
      "--max-batch", "4", "--rate", "1"], "alpha"),
    (["simulate", "--alpha", "8", "--beta", "0", "--gamma", "0", "--in-tokens", "0", "--out-tokens", "10",
      "--max-batch", "4", "--rate", "1"], "--in-tokens"),
    (ONE + ["--out-tokens-cv", "-2"], "--out-tokens-cv"),
    (ONE + ["--seeds", "0"], "--seeds"),
    (ONE + ["--max-num-tokens", "4"], "--max-num-tokens"),
    (["simulate", str(ROOT / "scenarios" / "nope")], "no such file"),
    ([*ONE, "--allocation", "x.json"], "--allocation: only for the fleet form"),
    (["simulate", SMALL, "--allocation", SOLUTION, "--rate", "2"], "--rate: only for the one-replica form"),
    (["simulate", SMALL], "--allocation"),
    (["simulate", SMALL, "--allocation", SOLUTION, "--window", "0"], "--window"),
    (["simulate", SMALL, "--allocation", str(DATA / "missing.json")], "cannot read"),
    (["simulate", SMALL, "--allocation", SOLUTION, "--workload",
      str(DATA / "missing.yaml")], "cannot read"),
])
def test_bad_input_is_one_error_line_and_exit_2(capsys, argv, message):
    code, out, err = run(argv, capsys)
    assert code == 2 and not out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


@pytest.mark.parametrize("content, message", [
    ('{"servers": [{"name": "x", "replicas": -1}]}', "replicas"),
    ('{"servers": [{"name": "x", "replicas": 1, "maxBatch": 4, "accelerator": "A100", "placements": [{}, {}]}]}',
     "placements"),
    ('{"allocations": {"x": {"numReplicas": 1.5}}}', "numReplicas"),
    ('{"something": 1}', "Solution"),
    ('{"servers": [', "not valid JSON"),
])
def test_bad_allocation_files(tmp_path, capsys, content, message):
    path = tmp_path / "sol.json"
    path.write_text(content)
    code, out, err = run(["simulate", SMALL, "--allocation", str(path)], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("content, message", [
    ("servers:\n  '*':\n    rate: {phases: [{for: 60, rpm: -3}]}\n", "servers.*.rate.phases[0].rpm"),
    ("servers:\n  '*':\n    rate: {phases: [{for: 60, rpm: 3}]}\n    burst: 2\n", "servers.*.burst"),
    ("servers:\n  '*':\n    rate: {phases: [{for: 60, rpm: 3}]}\n    out_tokens: {dist: fixed, mean: 0}\n",
     "out_tokens.mean"),
    ("servers:\n  Nobody:\n    rate: {phases: [{for: 60, rpm: 3}]}\n", "servers.Nobody: no such server"),
])
def test_bad_workload_through_the_cli(tmp_path, capsys, content, message):
    path = tmp_path / "w.yaml"
    path.write_text(content)
    code, out, err = run(["simulate", SMALL, "--allocation", SOLUTION, "--workload", str(path)],
                         capsys)
    assert code == 2 and not out and message in err and len(err.strip().splitlines()) == 1
