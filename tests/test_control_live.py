"""Live collectors and actuator against mocked Prometheus and inferno services (no network)."""

import json
import re

import httpx
import pytest

from inferno_mip import load_scenario
from inferno_mip.control.live import InfernoActuator, InfernoCollector, PrometheusCollector, histogram_cv
from inferno_mip.control.protocols import ActuationError, CollectError, Target
from inferno_mip.control.tune import server_specs

from conftest import SCENARIOS

PODS = {"p1": {"success": 1.0, "prompt": 2048.0, "gen": 1024.0, "ttft_s": 0.08, "itl_s": 0.020, "run": 12.0,
               "queue_s": 0.01, "prefill_s": 0.05},
        "p2": {"success": 3.0, "prompt": 3 * 2048.0, "gen": 3 * 1024.0, "ttft_s": 0.3, "itl_s": 0.075, "run": 30.0,
               "queue_s": 0.1, "prefill_s": 0.15}}


def prometheus(request: httpx.Request) -> httpx.Response:
    q = request.url.params["query"]
    if "llama" in q:
        return httpx.Response(200, json={"status": "success", "data": {"result": []}})
    if "_bucket" in q:
        result = [{"metric": {"le": le}, "value": [0, str(c)]} for le, c in (("512", 0), ("1024", 5), ("2048", 10),
                                                                             ("+Inf", 10))]
        return httpx.Response(200, json={"status": "success", "data": {"result": result}})
    key = next((k for pat, k in (("success_total", "success"), ("prompt_tokens_total", "prompt"),
                                 ("generation_tokens_total", "gen"), ("first_token_seconds_sum", "ttft_s"),
                                 ("output_token_seconds_sum", "itl_s"), ("queue_time_seconds_sum", "queue_s"),
                                 ("prefill_time_seconds_sum", "prefill_s"), ("_count", "success"),
                                 ("num_requests_running", "run"), ("num_requests_waiting", None))
                if pat in q), None)
    if key is None:
        result = [{"metric": {"pod": p}, "value": [0, "0"]} for p in PODS]
    else:
        result = [{"metric": {"pod": p}, "value": [0, str(v[key] if not key.endswith("_s") else v[key] * v["success"])]}
                  for p, v in PODS.items()]
    return httpx.Response(200, json={"status": "success", "data": {"result": result}})


@pytest.fixture(scope="module")
def system():
    return load_scenario(SCENARIOS / "inferno-ramp")


def test_prometheus_collector_aggregates_pods(system):
    c = PrometheusCollector("http://127.0.0.1:9090", system, client=httpx.Client(
        base_url="http://127.0.0.1:9090", transport=httpx.MockTransport(prometheus)), clock_fn=lambda: 1000.0)
    obs = c.collect()
    g = obs.servers["Premium-granite_8b"]
    assert g.arrival_rate == pytest.approx(4.0) and g.throughput == pytest.approx(4.0)
    assert (g.in_tokens, g.out_tokens) == (pytest.approx(2048.0), pytest.approx(1024.0))
    assert g.ttft == pytest.approx(1000 * (0.08 * 1 + 0.3 * 3) / 4)  # throughput-weighted over pods
    assert g.itl == pytest.approx(1000 * (0.02 * 1 + 0.075 * 3) / 4)
    # the engine's TTFT: queue + prefill time, what the tuner fits (vLLM's TTFT adds the API server's delay)
    assert g.engine_ttft == pytest.approx(1000 * ((0.01 + 0.05) * 1 + (0.1 + 0.15) * 3) / 4)
    assert g.replicas["p1"]["engine_ttft"] == pytest.approx(60.0)
    assert [s["currentAlloc"]["ttftAverage"] for s in server_specs(obs) if s["name"] in PODS] == [
        pytest.approx(60.0), pytest.approx(250.0)]
    assert g.replicas_ready == 2 and g.running == pytest.approx(42.0)
    assert g.replicas["p2"]["itl"] == pytest.approx(75.0) and g.complete
    assert g.out_tokens_cv == pytest.approx(histogram_cv([(512, 0), (1024, 5), (2048, 10), (float("inf"), 10)]))
    llama = obs.servers["Bronze-llama_13b"]
    assert not llama.complete and llama.replicas_ready == 0  # no series: missing, never zero load
    assert any("Bronze-llama_13b" in p for p in obs.problems)


def test_prometheus_down_is_a_collect_error(system):
    def down(request):
        raise httpx.ConnectError("connection refused")
    c = PrometheusCollector("http://127.0.0.1:9", system, client=httpx.Client(
        base_url="http://127.0.0.1:9", transport=httpx.MockTransport(down)))
    with pytest.raises(CollectError, match="ConnectError"):
        c.collect()


def test_histogram_cv():
    # half at 768 (mid of 512..1024), half at 1536: mean 1152, sd 384
    assert histogram_cv([(512, 0), (1024, 5), (2048, 10), (float("inf"), 10)]) == pytest.approx(384 / 1152)
    assert histogram_cv([]) is None and histogram_cv([(1.0, 0.0)]) is None


COLLECT = {
    "servers": [{"name": "qa-granite", "class": "Premium", "model": "granite_8b",
                 "currentAlloc": {"accelerator": "H100", "numReplicas": 3, "maxBatch": 64, "itlAverage": 20.5,
                                  "ttftAverage": 80.0, "load": {"arrivalRate": 120, "avgInTokens": 2048,
                                                                "avgOutTokens": 1024}}}],
    "replicas": [{"name": f"qa-granite/pod-{k}", "model": "granite_8b",
                  "currentAlloc": {"accelerator": "H100", "maxBatch": 64, "itlAverage": 20.0 + k, "ttftAverage": 80.0,
                                   "load": {"arrivalRate": 60, "avgInTokens": 2048, "avgOutTokens": 1024}}}
                 for k in range(2)],
    "kube-resources": {"qa-granite": {"uid": "u1", "name": "qa-granite-8b", "space": "infer"},
                       "qa-llama": {"uid": "u2", "name": "qa-llama-13b", "space": "infer"}},
}


def test_inferno_collector_and_actuator():
    posted = []

    def service(request):
        if request.url.path == "/collect":
            return httpx.Response(200, json=COLLECT)
        posted.append(json.loads(request.content))
        return httpx.Response(200, json="Done")

    client = httpx.Client(base_url="http://127.0.0.1:3301", transport=httpx.MockTransport(service))
    collector = InfernoCollector("http://127.0.0.1:3301", client=client, clock_fn=lambda: 5.0)
    obs = collector.collect()
    g = obs.servers["qa-granite"]
    assert g.arrival_rate == pytest.approx(2.0) and g.itl == 20.5 and g.max_batch == 64
    assert (g.replicas_ready, g.replicas_starting) == (2, 1)  # 3 asked for, 2 reporting
    assert g.replicas["pod-1"]["itl"] == 21.0 and g.replicas["pod-1"]["arrival_rate"] == pytest.approx(1.0)
    actuator = InfernoActuator("http://127.0.0.1:3303", collector, client=client)
    done = actuator.actuate({"qa-granite": Target("H100", 4, 64), "ghost": Target("H100", 1, 64)})
    assert done["qa-granite"].startswith("set H100 x4") and done["ghost"].startswith("failed")
    body = posted[-1]
    assert body["allocations"] == {"qa-granite": {"accelerator": "H100", "numReplicas": 4, "maxBatch": 64,
                                                  "cost": 0.0}}
    assert list(body["kube-resources"]) == ["qa-granite"]  # never qa-llama: inferno would zero it


def test_inferno_actuator_error():
    def broken(request):
        return httpx.Response(500, json={"message": "kube client: forbidden"})
    client = httpx.Client(base_url="http://127.0.0.1:3303", transport=httpx.MockTransport(broken))
    collector = InfernoCollector("http://127.0.0.1:3301", client=client)
    collector.kube_resources = COLLECT["kube-resources"]
    with pytest.raises(ActuationError, match="HTTP 500"):
        InfernoActuator("http://127.0.0.1:3303", collector, client=client).actuate({"qa-granite": Target("H100", 2, 64)})
