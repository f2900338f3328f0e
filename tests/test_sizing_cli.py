"""The hand-sizing CLI (`analyze`, `size`): through register() and, once wired, through inferno_mip.cli.main."""

from __future__ import annotations

import argparse
import json

import pytest

from inferno_mip.queueing.cli import register

G2 = ["--alpha", "12", "--beta", "0.05", "--gamma", "0.0005", "--in-tokens", "128", "--out-tokens", "512"]
NEW = ["--perf-model", "new"]  # queue-analysis v0.7+, whose golden numbers these tests check
V02 = ["--decode-alpha", "17.15", "--decode-beta", "0.34", "--prefill-gamma", "170", "--prefill-delta", "0.017",
       "--in-tokens", "96", "--out-tokens", "1024"]


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="inferno-mip")
    register(parser.add_subparsers(required=True))
    args = parser.parse_args(argv)
    return args.run(args)


def out_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def test_analyze_json_c5(capsys):
    assert run(["analyze", *G2, *NEW, "--max-batch", "48", "--max-queue", "128", "--rate", "3", "--json"]) == 0
    d = out_json(capsys)
    assert d["ttft"] == pytest.approx(67.61476, rel=1e-4) and d["itl"] == pytest.approx(20.11889, rel=1e-4)
    assert d["maxRate"] == pytest.approx(3.860929, rel=1e-4) and d["perfModel"] == "new"
    for key in ("throughput", "waitTime", "prefillTime", "rho"):
        assert key in d


def test_analyze_text_and_default_queue(capsys):
    assert run(["analyze", *G2, "--max-batch", "48", "--rate", "3"]) == 0
    text = capsys.readouterr().out
    assert "Q=480" in text and "TTFT" in text and "ITL" in text and "utilisation" in text


def test_size_g2_compat(capsys):
    assert run(["size", *G2, "--max-batch", "48", "--max-queue", "128", "--ttft", "60", "--itl", "20", "--compat",
                "--json"]) == 0
    d = out_json(capsys)
    assert d["binding"] == "ttft" and d["throughput"] == pytest.approx(2.9494622, rel=1e-4)
    assert d["metrics"]["ttft"] == pytest.approx(60.000584, rel=1e-4)
    assert run(["size", *G2, *NEW, "--max-batch", "48", "--ttft", "60", "--itl", "20"]) == 0
    assert "binding target: ttft" in capsys.readouterr().out


def test_size_optimal_batch_curve(capsys):
    argv = ["size", *G2, *NEW, "--max-queue", "128", "--ttft", "60", "--itl", "20", "--optimal-batch",
            "--max-batch-limit", "256", "--json"]
    assert run([*argv, "--compat"]) == 0
    d = out_json(capsys)
    assert d["optimalBatch"] == 49 and d["maxBatch"] == 49  # G3: Go's onset search
    assert d["throughput"] == pytest.approx(2.9715836, rel=1e-4)
    curve = d["curve"]
    assert curve["maxBatch"] == list(range(1, 257)) and len(curve["throughput"]) == 256
    assert curve["throughput"][0] == 0.0  # M = 1 infeasible in compat (B3)
    assert run(argv) == 0
    d = out_json(capsys)
    assert d["optimalBatch"] == 48 and d["peakBatch"] == 49  # exact: smallest near-peak M, and the argmax
    assert min(d["curve"]["throughput"]) > 0


def test_default_model_is_iteration_and_reads_the_length_spread(capsys):
    argv = ["analyze", *G2, "--max-batch", "48", "--max-queue", "128", "--rate", "2.5", "--json"]
    assert run(argv) == 0
    equal = out_json(capsys)
    assert equal["perfModel"] == "iteration"
    assert run([*argv, "--out-tokens-cv", "1", "--in-tokens-cv", "0.5"]) == 0
    spread = out_json(capsys)
    # the spread of output lengths adds decode work (E[m^2]): lower capacity, longer ITL and TTFT
    assert spread["maxRate"] < equal["maxRate"] and spread["itl"] > equal["itl"] and spread["ttft"] > equal["ttft"]
    assert run(["size", *G2, "--max-batch", "48", "--ttft", "60", "--itl", "20", "--out-tokens-cv", "1"]) == 0
    assert "(cv 0/1)" in capsys.readouterr().out


def test_size_v02_decode_prefill_parameters(capsys):
    assert run(["size", *V02, "--max-batch", "19", "--max-queue", "190", "--ttft", "1000", "--itl", "40",
                "--compat", "--json"]) == 0
    d = out_json(capsys)
    assert d["perfModel"] == "v02" and d["throughput"] == pytest.approx(0.5946356, rel=1e-4)


def test_size_infeasible_exit_1(capsys):
    assert run(["size", *G2, "--max-batch", "48", "--ttft", "5", "--json"]) == 1
    d = out_json(capsys)
    assert d["feasible"] is False and "TTFT target" in d["reason"]


@pytest.mark.parametrize("argv, match", [
    (["analyze", *G2, "--max-batch", "48", "--rate", "-1"], "rate"),
    (["analyze", *G2, "--max-batch", "0", "--rate", "1"], "max_batch"),
    (["analyze", "--alpha", "12", "--in-tokens", "1", "--out-tokens", "2", "--max-batch", "4", "--rate", "1"],
     "missing"),
    (["analyze", *G2, "--decode-alpha", "1", "--max-batch", "4", "--rate", "1"], "not both"),
    (["analyze", *G2, "--perf-model", "v02", "--max-batch", "4", "--rate", "1"], "v02"),
    (["size", *G2, "--ttft", "60"], "--max-batch"),
    (["size", *G2, "--max-batch", "8", "--ttft", "-1"], "ttft"),
    (["size", *G2, "--ttft", "60", "--optimal-batch", "--max-batch-limit", "0"], "limit"),
    (["analyze", *G2, "--max-batch", "8", "--rate", "1", "--out-tokens-cv", "-0.5"], "out_tokens_cv"),
    (["analyze", *G2, *NEW, "--max-batch", "8", "--rate", "1", "--out-tokens-cv", "1"], "--perf-model iteration"),
])
def test_bad_input_one_line_exit_2(capsys, argv, match):
    assert run(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and match in err[0]


def _main_or_skip(name: str):
    from inferno_mip import cli

    try:
        cli._parser().parse_args([name, "--help"])
    except SystemExit as exc:
        if exc.code != 0:
            pytest.skip(f"`{name}` is not wired into inferno_mip.cli yet")
    return cli.main


def test_wired_into_main_cli(capsys):
    main = _main_or_skip("analyze")
    capsys.readouterr()
    assert main(["analyze", *G2, *NEW, "--max-batch", "48", "--max-queue", "128", "--rate", "3", "--json"]) == 0
    assert out_json(capsys)["ttft"] == pytest.approx(67.61476, rel=1e-4)
    main = _main_or_skip("size")
    capsys.readouterr()
    assert main(["size", *G2, "--max-batch", "48", "--ttft", "5"]) == 1
    assert main(["analyze", *G2, "--max-batch", "48", "--rate", "-1"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
