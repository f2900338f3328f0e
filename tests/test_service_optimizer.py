"""The optimizer service against real uvicorn processes on 127.0.0.1: inferno's wire format replayed field by field,
a stateful session with the transition penalty, bad input, metrics, the Python client, and 8 concurrent clients."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

import inferno_mip
from inferno_mip.client import OptimizerClient, OptimizerServiceError
from inferno_mip.errors import ScenarioError

from live_server import run_clients, serve

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ("inferno-small", "inferno-large", "inferno-legacy-small", "inferno-legacy-large")
FILES = {"acceleratorData": "accelerator-data", "capacityData": "capacity-data", "modelData": "model-data",
         "serviceClassData": "serviceclass-data", "serverData": "server-data", "optimizerData": "optimizer-data"}

# control-loop.md §1.5: the body inferno's control loop posts to /optimizeOne every cycle.
SPEC_EXAMPLE = {"system": {
    "acceleratorData": {"accelerators": [{"name": "H100", "type": "H100", "multiplicity": 1, "cost": 75.0}]},
    "modelData": {"models": [{"name": "granite_8b", "acc": "H100", "accCount": 1, "maxBatchSize": 128,
                              "perfParms": {"alpha": 8.0, "beta": 0.016, "gamma": 0.0005}}]},
    "serviceClassData": {"serviceClasses": [{"name": "Premium", "priority": 1,
                                             "modelTargets": [{"model": "granite_8b", "slo-itl": 30,
                                                               "slo-ttft": 200}]}]},
    "serverData": {"servers": [{"name": "qa-granite", "class": "Premium", "model": "granite_8b",
                                "keepAccelerator": False, "minNumReplicas": 0, "maxBatchSize": 0, "maxQueueSize": 0,
                                "currentAlloc": {"accelerator": "H100", "numReplicas": 3, "maxBatch": 34, "cost": 225,
                                                 "itlAverage": 20.4, "ttftAverage": 81, "avgConcurrency": 12.1,
                                                 "load": {"arrivalRate": 60, "throughput": 58, "avgInTokens": 2048,
                                                          "avgOutTokens": 1024}}}]},
    "optimizerData": {"optimizer": {"unlimited": False, "heterogeneous": False, "milpSolver": False,
                                    "delayedBestEffort": False, "saturationPolicy": "PriorityExhaustive"}},
    "capacityData": {"count": [{"type": "H100", "count": 16}]}}}
GO_FIELDS = {"accelerator", "numReplicas", "maxBatch", "cost", "itlAverage", "ttftAverage", "load"}


def system_data(name: str) -> dict:
    """A sample folder as one SystemData body, the files' keys as they are (mixed case included)."""
    folder = ROOT / "scenarios" / name
    return {"system": {key: json.loads((folder / f"{stem}.json").read_text()) for key, stem in FILES.items()}}


@pytest.fixture(scope="module")
def stateless():
    with serve("serve-optimizer", "--workers", "1", "--max-body-mb", "1") as url:
        yield url


@pytest.fixture(scope="module")
def stateful():
    with serve("serve-optimizer", "--stateful", "--workers", "0") as url:
        yield url


def post(url: str, path: str, body, **kw) -> httpx.Response:
    content = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return httpx.post(url + path, content=content, headers={"content-type": "application/json"}, timeout=60, **kw)


# ----------------------------------------------------------------------------------------------- wire replay

def test_spec_example_every_field(stateless):
    r = post(stateless, "/optimizeOne", SPEC_EXAMPLE)
    assert r.status_code == 200, r.text
    (name, a), = r.json()["allocations"].items()
    assert name == "qa-granite" and GO_FIELDS <= set(a)
    assert a["accelerator"] == "H100" and isinstance(a["numReplicas"], int) and a["numReplicas"] >= 1
    assert isinstance(a["maxBatch"], int) and 1 <= a["maxBatch"] <= 128
    assert a["cost"] == pytest.approx(75.0 * a["numReplicas"], rel=1e-12)
    assert 0 < a["itlAverage"] <= 30 * (1 + 1e-6) and 0 < a["ttftAverage"] <= 200 * (1 + 1e-6)
    # the load is echoed as sent (req/min, integer token counts), as Go does
    assert a["load"] == {"arrivalRate": 60.0, "throughput": 58.0, "avgInTokens": 2048, "avgOutTokens": 1024}
    assert '"avgInTokens":2048' in r.text.replace(" ", "")
    local = inferno_mip.solve(copy.deepcopy(SPEC_EXAMPLE))["qa-granite"]
    assert (a["numReplicas"], a["maxBatch"], a["itlAverage"], a["ttftAverage"], a["status"]) == (
        local.replicas, local.max_batch, local.itl, local.ttft, local.status)


@pytest.mark.parametrize("name", [SAMPLES[0], SAMPLES[2]] + [pytest.param(n, marks=pytest.mark.slow)
                                                               for n in (SAMPLES[1], SAMPLES[3])])
def test_sample_sets_as_system_data(stateless, name):
    body = system_data(name)
    r = post(stateless, "/optimizeOne", body)
    assert r.status_code == 200, r.text
    got = r.json()["allocations"]
    local = inferno_mip.solve(system_data(name))
    assert sorted(got) == sorted(a.name for a in local.allocations)  # every server listed
    for a in local.allocations:
        g = got[a.name]
        assert (g["accelerator"], g["numReplicas"], g["maxBatch"], g["cost"], g["itlAverage"], g["ttftAverage"],
                g["status"], g["reason"]) == (a.accelerator, a.replicas, a.max_batch, a.cost, a.itl, a.ttft,
                                              a.status, a.reason)
        assert g["load"]["arrivalRate"] == pytest.approx(a.arrival_rate * 60, rel=1e-12)
        assert g["load"]["avgInTokens"] == a.avg_in_tokens and isinstance(g["load"]["avgInTokens"], int)
    assert sum(g["cost"] for g in got.values()) == pytest.approx(local.total_cost, rel=1e-12)


def test_stateless_gets_read_the_last_system(stateless):
    post(stateless, "/optimizeOne", SPEC_EXAMPLE)
    assert httpx.get(stateless + "/getAccelerators").json() == [
        {"name": "H100", "type": "H100", "multiplicity": 1, "memSize": 0, "memBW": 0,
         "power": {"idle": 0, "full": 0, "midPower": 0, "midUtil": 0.0}, "cost": 75.0}]
    server = httpx.get(stateless + "/getServer/qa-granite").json()
    assert server["desiredAlloc"]["accelerator"] == "H100" and server["desiredAlloc"]["numReplicas"] >= 1
    assert httpx.get(stateless + "/getServer/nope").json() == {"message": "server nope not found"}
    assert httpx.post(stateless + "/setServers", json={}).status_code in (404, 405)  # stateful only


def saturated(policy: str = "None") -> dict:
    body = copy.deepcopy(SPEC_EXAMPLE)
    body["system"]["capacityData"]["count"][0]["count"] = 1
    body["system"]["serverData"]["servers"][0]["currentAlloc"]["load"]["arrivalRate"] = 6000
    body["system"]["optimizerData"]["optimizer"]["saturationPolicy"] = policy
    return body


def test_saturated_system_answers_200_with_statuses(stateless):
    r = post(stateless, "/optimizeOne", saturated())
    assert r.status_code == 200
    a = r.json()["allocations"]["qa-granite"]  # listed: inferno's controller would scale a missing one to zero
    assert (a["numReplicas"], a["status"]) == (0, "capacity-limited") and "capacity" in a["reason"]


def test_compat_reproduces_inferno():
    from fastapi.testclient import TestClient

    from inferno_mip.service.app import create_app
    from inferno_mip.service.context import ServiceSettings

    with TestClient(create_app(ServiceSettings(compat=True, workers=0))) as c:
        r = c.post("/optimizeOne", json=system_data("inferno-small"))
        allocations = r.json()["allocations"]
        assert r.status_code == 200 and all(set(a) == GO_FIELDS for a in allocations.values())
        assert sum(a["cost"] for a in allocations.values()) == 39743  # inferno's answer (sample solution)
        r = c.post("/optimizeOne", json=saturated())
        assert (r.status_code, r.json()) == (404, {"message": "optimization error: no feasible allocation for "
                                                              "servers: [qa-granite]"})


# ----------------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("body, status, words", [
    ("{\"system\": ", 400, ["malformed JSON"]),
    ({"system": {"acceleratorData": {"accelerators": [{"name": "H100", "cost": "cheap"}]}}}, 400,
     ["acceleratorData.accelerators[0].cost", "'cheap'"]),
    ({"system": {"serverData": {"servers": [{"name": "s", "currentAlloc": {"load": {"avgInTokens": 12.5}}}]}}}, 400,
     ["servers[0].currentAlloc.load.avgInTokens", "12.5"]),
    ('{"system": {"acceleratorData": {"accelerators": [{"name": "H100", "type": "H100", "cost": NaN}]}, '
     '"modelData": {}, "serviceClassData": {}, "serverData": {}}}', 400, ["cost", "finite"]),
    ([1, 2], 400, ["body"]),
])
def test_bad_input_is_a_4xx_naming_field_and_value(stateless, body, status, words):
    r = post(stateless, "/optimizeOne", body)
    assert r.status_code == status, r.text
    assert all(w in r.json()["message"] for w in words), r.text
    assert "Traceback" not in r.text


def test_one_bad_server_does_not_sink_the_others(stateless):
    body = copy.deepcopy(SPEC_EXAMPLE)
    servers = body["system"]["serverData"]["servers"]
    servers.append({**copy.deepcopy(servers[0]), "name": "ghost", "model": "no-such-model"})
    servers.append({**copy.deepcopy(servers[0]), "name": "negative"})
    servers[-1]["currentAlloc"]["load"]["arrivalRate"] = -5
    got = post(stateless, "/optimizeOne", body).json()["allocations"]
    assert got["qa-granite"]["status"] == "ok"
    assert got["ghost"]["status"] == "invalid-input" and "no-such-model" in got["ghost"]["reason"]
    assert got["negative"]["status"] == "invalid-input" and "arrivalRate" in got["negative"]["reason"]


def test_huge_body_and_native_errors(stateless):
    r = post(stateless, "/optimizeOne", b'{"system": {"x": "' + b"y" * (2 * 1024 * 1024) + b'"}}')
    assert r.status_code == 413 and "exceeds the limit" in r.json()["message"]
    r = post(stateless, "/v1/solve", {**SPEC_EXAMPLE, "options": {"time_limit": -1}})
    assert r.status_code == 422 and r.json()["message"].startswith("body.options.time_limit")
    r = post(stateless, "/v1/solve", {**SPEC_EXAMPLE, "solver": "simplex"})
    assert r.status_code == 422 and "'simplex'" in r.json()["message"]
    r = post(stateless, "/v1/solve", {"system": {"acceleratorData": {}}})
    assert r.status_code == 400 and "missing section" in r.json()["message"]
    assert httpx.get(stateless + "/healthz").json()["status"] == "ok"  # still serving


# ----------------------------------------------------------------------------------------------- native API, client

def test_native_solve_and_client_equal_local_solve(stateless):
    r = post(stateless, "/v1/solve", {**system_data("inferno-small"), "solver": "greedy", "options": {"compat": True}})
    assert r.status_code == 200
    remote = inferno_mip.Solution.from_dict(r.json())
    local = inferno_mip.solve(system_data("inferno-small"), solver="greedy", compat=True)
    assert replace(remote, timings={}) == replace(local, timings={}) and remote.total_cost == 39743
    with OptimizerClient(stateless) as client:
        for kwargs in ({}, {"perf_model": "iteration", "solver": "greedy"}, {"speedups": "none"},
                       {"saturation_policy": "RoundRobin", "time_limit": 20, "params": {
                           ("llama_13b", "A100"): {"alpha": 10.0, "beta": 0.02, "gamma": 1e-4}}}):
            got = client.solve(ROOT / "scenarios" / "inferno-small", **kwargs)
            want = inferno_mip.solve(ROOT / "scenarios" / "inferno-small", **kwargs)
            assert replace(got, timings={}) == replace(want, timings={}), kwargs
        assert [s["name"] for s in client.solvers()["solvers"]] == ["highs", "cpsat", "pyomo", "greedy", "unlimited"]
        with pytest.raises(ScenarioError, match="perf_model"):
            client.solve(ROOT / "scenarios" / "inferno-small", perf_model="v9")
        with pytest.raises(ScenarioError, match="speedup"):
            client.solve(ROOT / "scenarios" / "inferno-small", speedups="warp")
        with pytest.raises(TypeError, match="unknown option"):
            client.solve(ROOT / "scenarios" / "inferno-small", colour="blue")
    with pytest.raises(OptimizerServiceError):
        OptimizerClient("http://127.0.0.1:9", timeout=2).solve(ROOT / "scenarios" / "inferno-small")


def test_metrics_count_solves_and_statuses(stateless):
    post(stateless, "/optimizeOne", SPEC_EXAMPLE)
    text = httpx.get(stateless + "/metrics").text
    count = [line for line in text.splitlines() if line.startswith('inferno_mip_solve_seconds_count{endpoint="optimizeOne"}')]
    assert count and float(count[0].split()[-1]) >= 1
    assert 'inferno_mip_servers_total{status="ok"}' in text and 'inferno_mip_solves_total{solver="highs"' in text
    assert 'inferno_mip_http_requests_total{code="200",route="/optimizeOne"}' in text


# ----------------------------------------------------------------------------------------------- stateful session

def test_stateful_session_shows_the_transition_penalty(stateful):
    def call(method: str, path: str, body=None):
        r = httpx.request(method, stateful + path, json=body, timeout=60)
        assert r.status_code == 200, (path, r.text)
        return r.json()

    perf = {"alpha": 8.0, "beta": 0.016, "gamma": 0.0005}
    echo = call("POST", "/setAccelerators", {"accelerators": [
        {"name": "A", "type": "TA", "multiplicity": 1, "cost": 10.0},
        {"name": "B", "type": "TB", "multiplicity": 1, "cost": 10.5}]})
    assert [a["name"] for a in echo["accelerators"]] == ["A", "B"]
    call("POST", "/setCapacities", {"count": [{"type": "TA", "count": 100}, {"type": "TB", "count": 100}]})
    call("POST", "/setModels", {"models": [{"name": "m", "acc": acc, "accCount": 1, "maxBatchSize": 128,
                                            "perfParms": perf} for acc in ("A", "B")]})
    call("POST", "/setServiceClasses", {"serviceClasses": [
        {"name": "Premium", "priority": 1, "modelTargets": [{"model": "m", "slo-itl": 30, "slo-ttft": 200}]}]})
    call("POST", "/setServers", {"servers": [{"name": "s1", "class": "Premium", "model": "m", "currentAlloc": {
        "load": {"arrivalRate": 120, "avgInTokens": 1024, "avgOutTokens": 512}}}]})
    assert call("GET", "/getModels") == ["m"]

    first = call("POST", "/optimize", {"saturationPolicy": "None"})["allocations"]["s1"]
    assert first["accelerator"] == "A" and first["numReplicas"] >= 1  # cheaper
    assert call("GET", "/getServer/s1")["desiredAlloc"]["accelerator"] == "A"
    assert call("GET", "/applyAllocation") == "Done"
    assert call("GET", "/getServer/s1")["currentAlloc"]["numReplicas"] == first["numReplicas"]

    call("POST", "/addAccelerator", {"name": "A", "type": "TA", "multiplicity": 1, "cost": 10.9})  # B now cheaper
    second = call("POST", "/optimize", {"saturationPolicy": "None"})["allocations"]["s1"]
    assert second["accelerator"] == "A"  # moving costs 10 % of both allocations: staying is worth more
    assert second["cost"] == pytest.approx(10.9 * second["numReplicas"])
    # the same system without a current allocation moves to B: the penalty is what kept s1 on A
    table = {k: call("GET", p) for k, p in (("accelerators", "/getAccelerators"), ("models", "/getModel/m"))}
    fresh = copy.deepcopy(SPEC_EXAMPLE)
    fresh["system"].update(
        acceleratorData={"accelerators": table["accelerators"]}, modelData=table["models"],
        capacityData=call("GET", "/getCapacities"), serviceClassData=call("GET", "/getServiceClasses"),
        serverData={"servers": [{"name": "s1", "class": "Premium", "model": "m", "currentAlloc": {
            "load": {"arrivalRate": 120, "avgInTokens": 1024, "avgOutTokens": 512}}}]})
    fresh["system"]["optimizerData"]["optimizer"]["saturationPolicy"] = "None"
    assert call("POST", "/optimizeOne", fresh)["allocations"]["s1"]["accelerator"] == "B"

    assert call("GET", "/removeServer/s1")["name"] == "s1"
    assert call("POST", "/optimize", {})["allocations"] == {}
    r = httpx.get(stateful + "/getServer/s1")
    assert (r.status_code, r.json()) == (404, {"message": "server s1 not found"})
    r = httpx.get(stateful + "/addServiceClass/Gold/high")
    assert (r.status_code, r.json()) == (400, {"message": "service class priority high invalid"})
    assert call("GET", "/addServiceClass/Gold/0") == {"name": "Gold", "priority": 100, "modelTargets": []}
    r = httpx.post(stateful + "/addModelAcceleratorPerf", json={"name": "nope", "acc": "A"})
    assert (r.status_code, r.json()) == (404, {"message": "model nope not found"})


# ----------------------------------------------------------------------------------------------- concurrency

def tiny(rate: float) -> dict:
    body = copy.deepcopy(SPEC_EXAMPLE)
    body["system"]["serverData"]["servers"][0]["currentAlloc"]["load"]["arrivalRate"] = rate
    return body


# Two solves in eight requests; every /optimizeOne posts the same system, so what the GETs read is fixed too.
MIXED = [("POST", "/optimizeOne", tiny(60)), ("GET", "/healthz", None), ("GET", "/getAccelerators", None),
         ("GET", "/v1/solvers", None), ("POST", "/optimizeOne", "{bad json"),
         ("POST", "/v1/solve", {**tiny(90), "solver": "greedy"}), ("GET", "/getServers", None),
         ("POST", "/v1/solve", {"system": {"serverData": {"servers": [{"name": 7}]}}})]


def answer(client: httpx.Client, method: str, path: str, body) -> tuple[int, object]:
    if isinstance(body, str):
        r = client.request(method, path, content=body, headers={"content-type": "application/json"})
    else:
        r = client.request(method, path, json=body)
    data = r.json()
    if isinstance(data, dict):
        data.pop("timings", None)
    return r.status_code, data


def test_eight_concurrent_clients_get_the_serial_answers(stateless):
    with httpx.Client(base_url=stateless, timeout=60) as c:
        answer(c, *MIXED[0])  # the table the GETs read
        serial = [answer(c, *req) for req in MIXED]
    assert [code for code, _ in serial] == [200, 200, 200, 200, 400, 200, 200, 422]
    mismatches, errors = [], []

    def client(k: int):
        try:
            with httpx.Client(base_url=stateless, timeout=60) as c:
                for i in range(100):
                    j = (i + k) % len(MIXED)
                    if answer(c, *MIXED[j]) != serial[j]:
                        mismatches.append((k, i, MIXED[j][1]))
        except Exception as exc:  # a dropped connection is a failure too
            errors.append(repr(exc))

    run_clients(client, 8)
    assert not errors and not mismatches


# ----------------------------------------------------------------------------------------------- fuzzing

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, settings  # noqa: E402

def fuzz(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck),
                    phases=[Phase.explicit, Phase.generate], derandomize=True, database=None)


@pytest.fixture(scope="module")
def stateless_schema(stateless):
    return schemathesis.openapi.from_url(stateless + "/openapi.json")


@pytest.fixture(scope="module")
def stateful_schema(stateful):
    return schemathesis.openapi.from_url(stateful + "/openapi.json")


stateless_api = schemathesis.pytest.from_fixture("stateless_schema")
stateful_api = schemathesis.pytest.from_fixture("stateful_schema")
# The default run fuzzes the table's small write bodies and /optimize (generating the nested server and
# scenario bodies takes seconds per example); the long run fuzzes every endpoint of both modes.
stateful_writes = stateful_api.include(
    path_regex="^/(optimize|setCapacities|setCapacity|addAccelerator|addServiceClassModelTargets|"
               "addModelAcceleratorPerf)$")


def fuzz_call(case) -> None:
    """No 5xx and an answer within the timeout (no hang) for whatever the schema lets through or not."""
    case.call_and_validate(checks=[schemathesis.checks.not_a_server_error], timeout=60)


@stateful_writes.parametrize()
@fuzz(2)
def test_fuzz_stateful_writes(case):
    fuzz_call(case)


@pytest.mark.slow
@stateless_api.parametrize()
@fuzz(30)
def test_fuzz_stateless_long(case):
    fuzz_call(case)


@pytest.mark.slow
@stateful_api.parametrize()
@fuzz(30)
def test_fuzz_stateful_long(case):
    fuzz_call(case)


def test_state_intact_after_fuzzing(stateless, stateful):
    """Runs after the fuzzers (file order): both servers still answer, the table still reads and solves."""
    for url in (stateless, stateful):
        assert httpx.get(url + "/healthz").json()["status"] == "ok"
        assert post(url, "/optimizeOne", SPEC_EXAMPLE).json()["allocations"]["qa-granite"]["status"] == "ok"
    servers = httpx.get(stateful + "/getServers").json()["servers"]
    assert isinstance(servers, list)
    assert httpx.post(stateful + "/optimize", json={}).status_code in (200, 400)


@pytest.mark.parametrize("argv, env, words", [
    (["--workers", "-1"], {}, "workers: must be >= 0, got -1"),
    (["--time-limit", "0"], {}, "time limit: must be > 0"),
    ([], {"INFERNO_PORT": "eighty"}, "port: expected an integer"),
    (["--port", "70000"], {}, "port: must be 0..65535"),
])
def test_serve_optimizer_bad_arguments_are_one_line(argv, env, words, capsys, monkeypatch):
    from inferno_mip.cli import main

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["serve-optimizer", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and words in err and "\n" not in err


# ----------------------------------------------------------------------------------------------- shared solves

def test_identical_requests_in_flight_share_one_solve():
    """Concurrent equal jobs get one solve and the same answer; unequal or later ones get their own; a bad job's
    error reaches every request that shared it."""
    import asyncio

    from inferno_mip.service.runner import BadInput, SolveJob, SolveRunner

    body = system_data("inferno-small")
    job = SolveJob(body, "greedy", {})
    other = SolveJob(body, "greedy", {"saturation_policy": "RoundRobin"})
    bad = SolveJob({"system": {}}, "greedy", {})

    async def scenario():
        runner = SolveRunner(workers=0, time_limit=30)
        runner.start()
        try:
            first = await asyncio.gather(runner.solve(job), runner.solve(job), runner.solve(other))
            later = await runner.solve(job)
            errors = await asyncio.gather(runner.solve(bad), runner.solve(bad), return_exceptions=True)
            return first, later, errors, dict(runner._in_flight)
        finally:
            runner.stop()

    (a, b, c), later, errors, left = asyncio.run(scenario())
    assert (a[1], b[1], c[1], later[1]) == (False, True, False, False)
    assert a[0] is b[0] and c[0] is not a[0] and later[0] is not a[0]
    assert later[0].total_cost == a[0].total_cost
    assert all(isinstance(e, BadInput) for e in errors) and str(errors[0]) == str(errors[1])
    assert left == {}
