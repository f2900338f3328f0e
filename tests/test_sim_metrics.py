"""The fleet served as Prometheus metrics under vLLM's names, scraped over HTTP on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from inferno_mip.cli import main
from inferno_mip.sim import Fleet, LengthDist, Workload
from inferno_mip.sim.metrics import serve
from inferno_mip.tuner.observers.online import METRICS as OBSERVER_METRICS
from inferno_mip.spec import CurrentAllocation, Load, PerfData, Server, System

ROOT = Path(__file__).resolve().parent.parent
SMALL = str(ROOT / "scenarios" / "inferno-small")
SYSTEM = System(perf=(PerfData(model="m", accelerator="A", generation="G3", alpha=8.0, beta=0.016, gamma=0.0005),),
                servers=(Server(name="s1", model="m", load=Load(arrival_rate=3.0),
                                current=CurrentAllocation(accelerator="A", num_replicas=2, max_batch=16)),))


def scrape(port: int) -> dict[str, dict[tuple, float]]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def total(samples: dict, name: str) -> float:
    return sum(v for k, v in samples[name].items() if not any(key == "le" for key, _ in k))


def test_scraped_metrics_match_the_fleet_windows():
    fleet = Fleet.from_system(SYSTEM, Workload.constant(3.0, LengthDist.fixed(200), LengthDist.geometric(100)))
    metrics = serve(fleet, 0)
    try:
        for t in (40.0, 90.0, 120.0):  # several updates accumulate
            fleet.advance(t)
            metrics.update()
        got = scrape(metrics.port)
    finally:
        metrics.close()
    w = fleet.window(0.0)["s1"]
    assert len(got["vllm:num_requests_running"]) == 2  # one series per replica, as the observer counts them
    assert total(got, "vllm:request_success_total") == w.completed
    assert total(got, "inferno_sim_requests_arrived_total") == pytest.approx(w.offered_rate * 120)
    assert total(got, "vllm:prompt_tokens_total") == 200 * w.completed
    assert total(got, "vllm:generation_tokens_total") == pytest.approx(w.out_tokens_mean * w.completed)
    ttft = total(got, "vllm:time_to_first_token_seconds_sum") / total(got, "vllm:time_to_first_token_seconds_count")
    assert 1000 * ttft == pytest.approx(w.ttft_mean, rel=1e-9)
    itl = total(got, "vllm:time_per_output_token_seconds_sum") / total(got, "vllm:time_per_output_token_seconds_count")
    assert 1000 * itl == pytest.approx(w.itl_mean, rel=1e-9)
    # The engine's TTFT (queue + prefill time, per completed request) is the completed requests' TTFT.
    queue, prefill = (total(got, f"vllm:request_{k}_time_seconds_sum") for k in ("queue", "prefill"))
    count = total(got, "vllm:request_prefill_time_seconds_count")
    assert count == total(got, "vllm:request_queue_time_seconds_count") == w.completed
    assert queue > 0 and prefill > 0
    assert 1000 * (queue + prefill) / count == pytest.approx(1000 * w.sample.done_ttft.mean(), rel=1e-9)
    # Buckets are cumulative and end at the count.
    for labels, count in got["vllm:time_to_first_token_seconds_count"].items():
        inf = dict(labels) | {"le": "+Inf"}
        assert got["vllm:time_to_first_token_seconds_bucket"][tuple(sorted(inf.items()))] == count
    running = sum(got["vllm:num_requests_running"].values())
    engine_running = sum(r.engine.running for r in fleet.servers["s1"].replicas)
    assert running == engine_running


def test_every_metric_the_online_observer_queries_is_exported():
    fleet = Fleet.from_system(SYSTEM, None)
    metrics = serve(fleet, 0)
    try:
        fleet.advance(30.0)
        metrics.update()
        got = scrape(metrics.port)
    finally:
        metrics.close()
    for name in OBSERVER_METRICS.values():
        assert name in got or f"{name}_sum" in got, name
    labels = dict(next(iter(got["vllm:num_requests_running"])))
    assert labels["model_name"] == "m" and labels["namespace"] == "sim"


def test_cli_serves_metrics_while_simulating(tmp_path, capsys):
    sol = tmp_path / "sol.json"
    sol.write_text('{"allocations": {"Premium-llama_13b": {"accelerator": "A100", "numReplicas": 1, "maxBatch": 8}}}')
    code = main(["simulate", SMALL, "--allocation", str(sol), "--duration", "4", "--window",
                 "2", "--serve-metrics", "0", "--speed", "40", "--json"])
    out, err = capsys.readouterr()
    assert code == 0 and "serving vLLM metrics on http://127.0.0.1:" in err
