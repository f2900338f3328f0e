"""CLI subcommands tune and serve-tuner (registered into an argparse parser, as the main CLI does)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from inferno_mip.tuner.cli import register

DATA = Path(__file__).parent / "data" / "tuner"


def run(argv):
    parser = argparse.ArgumentParser(prog="inferno-mip")
    register(parser.add_subparsers(required=True))
    args = parser.parse_args(argv)
    return args.run(args)


def test_tune_simulated_json_and_plot(tmp_path, capsys):
    png = tmp_path / "run.png"
    assert run(["tune", "--observer", "simulated", "--json", "--plot", str(png), "--load-spread", "0.3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kind"] == "prefill-decode" and len(out["trajectory"]) == 60
    assert set(out["final"]) == {"alpha", "beta", "gamma"}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_tune_offline_table(capsys):
    assert run(["tune", "--observer", "offline", "--trace", str(DATA / "tuner-exp13.csv")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["step", "status", "alpha"] and "final:" in out


def test_tune_compat_same_seed_is_deterministic(capsys):
    argv = ["tune", "--observer", "simulated", "--compat", "--ungated", "--json", "--seed", "3", "--x0",
            "10,0.02,1e-4"]
    run(argv)
    a = capsys.readouterr().out
    run(argv)
    assert capsys.readouterr().out == a


@pytest.mark.parametrize("argv, msg", [
    (["tune", "--observer", "offline"], "--trace: required"),
    (["tune", "--observer", "offline", "--trace", "/nonexistent.csv"], "no such trace file"),
    (["tune", "--observer", "simulated", "--config", "/nonexistent.json"], "no such config file"),
    (["tune", "--observer", "simulated", "--x0", "1,a"], "--x0"),
    (["tune", "--observer", "online"], "PROMETHEUS_ADDRESS"),
    (["tune", "--observer", "simulated", "--config", str(DATA / "decode-config-data.json")], "needs 3"),
])
def test_tune_errors_are_one_line_exit_2(argv, msg, capsys, monkeypatch):
    monkeypatch.delenv("PROMETHEUS_ADDRESS", raising=False)
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and msg in err and len(err.strip().splitlines()) == 1


def test_serve_tuner_bad_config_exit_2(capsys):
    assert run(["serve-tuner", "--config", "/nonexistent.json"]) == 2
    assert "no such config file" in capsys.readouterr().err
