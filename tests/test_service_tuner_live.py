"""The tuner service as a real uvicorn process on 127.0.0.1: its start line, /healthz, concurrent clients on
different (model, accelerator) pairs getting the serial answers, and schema fuzzing that leaves its state intact."""

from __future__ import annotations


import httpx
import pytest
from hypothesis import HealthCheck, Phase, settings
from live_server import run_clients, serve
from test_tuner_service import LOADS, spec

from inferno_mip.tuner.service import ServiceSettings, TunerService

INIT_OBS = 2
TUNED: dict[str, dict] = {}  # what the burst left, checked again after the fuzzer


@pytest.fixture(scope="module")
def tuner(tmp_path_factory):
    env = {"TUNER_INIT_OBS": str(INIT_OBS), "TUNER_WARM_UP_CYCLES": "1"}
    with serve("serve-tuner", "--state-file", str(tmp_path_factory.mktemp("tuner") / "state.json"),
               env=env) as url:
        yield url


def strip(answer: dict) -> dict:
    return {k: v for k, v in answer.items() if k != "lastUpdated"}


def client_requests(k: int, rounds: int) -> list[tuple[str, str, object]]:
    """Client k's own pair (m, G<k>): mostly cheap reads, a /tune every fourth request."""
    reqs = []
    for i in range(rounds):
        if i % 4 == 0:
            reqs.append(("POST", "/tune", [spec(*LOADS[(i // 4) % len(LOADS)], acc=f"G{k}")]))
        else:
            reqs.append(("GET", "/getparams", {"model": "m", "accelerator": f"G{k}"}))
    return reqs


def run(c: httpx.Client, method: str, path: str, body) -> tuple[int, object]:
    r = c.get(path, params=body) if method == "GET" else c.post(path, json=body)
    data = r.json()
    return r.status_code, strip(data) if isinstance(data, dict) else data


@pytest.mark.slow
def test_eight_clients_on_their_own_pairs_get_the_serial_answers(tuner):
    """Serial answers from an in-process service with the same settings; every live answer equals its twin."""
    local = TunerService(ServiceSettings(init_obs=INIT_OBS, warm_up_cycles=1))
    serial = {}
    for k in range(8):
        answers = []
        for method, path, body in client_requests(k, 100):
            if path == "/tune":
                try:
                    data, issues = local.tune(body)
                    answers.append((200, {**data, **({"issues": issues} if issues else {})}))
                except Exception as exc:
                    answers.append((422, {"error": str(exc)}))
            else:
                p = local.get_params(body["model"], body["accelerator"])
                answers.append((404, None) if p is None else (200, strip(p)))
        serial[k] = answers
    mismatches, errors = [], []

    def client(k: int):
        try:
            with httpx.Client(base_url=tuner, timeout=120) as c:
                for i, req in enumerate(client_requests(k, 100)):
                    code, data = run(c, *req)
                    want_code, want = serial[k][i]
                    if code != want_code or (want is not None and data != want):
                        mismatches.append((k, i, req[1], code, data, want))
        except Exception as exc:
            errors.append(repr(exc))

    run_clients(client, 8)
    assert not errors and not mismatches[:3]


def test_health_and_a_short_concurrent_burst(tuner):
    assert httpx.get(tuner + "/healthz").json()["status"] == "ok"
    errors = []

    def client(k: int):
        with httpx.Client(base_url=tuner, timeout=120) as c:
            for method, path, body in client_requests(k, 8):
                code, _ = run(c, method, path, body)
                if code >= 500:
                    errors.append((k, path, code))

    run_clients(client, 8)
    assert not errors
    # every pair tuned twice -> stored (INIT_OBS = 2), and the store reads back through /merge
    merged = httpx.post(tuner + "/merge", json={}).json()["models"]
    assert sorted(m["acc"] for m in merged) == sorted(f"G{k}" for k in range(8))
    TUNED.update({m["acc"]: m for m in merged})


schemathesis = pytest.importorskip("schemathesis")


@pytest.fixture(scope="module")
def tuner_schema(tuner):
    return schemathesis.openapi.from_url(tuner + "/openapi.json")


tuner_api = schemathesis.pytest.from_fixture("tuner_schema")


def fuzz(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck),
                    derandomize=True, database=None, phases=[Phase.explicit, Phase.generate])


def fuzz_call(case) -> None:
    case.call_and_validate(checks=[schemathesis.checks.not_a_server_error], timeout=60)


# Generating ServerSpec arrays takes seconds per example: /tune and /calibrate are fuzzed in the long run only.
@tuner_api.exclude(path_regex="^/(tune|calibrate)$").parametrize()
@fuzz(2)
def test_fuzz_tuner(case):
    fuzz_call(case)


@pytest.mark.slow
@tuner_api.parametrize()
@fuzz(30)
def test_fuzz_tuner_long(case):
    fuzz_call(case)


def test_tuner_state_intact_after_fuzzing(tuner):
    """After the fuzzer (file order): the pairs tuned by the burst read back exactly as they were."""
    assert len(TUNED) == 8
    after = {m["acc"]: m for m in httpx.post(tuner + "/merge", json={"models": []}).json()["models"]
             if m["name"] == "m"}
    assert after == TUNED
    for acc, m in TUNED.items():
        p = httpx.get(tuner + "/getparams", params={"model": "m", "accelerator": acc}).json()
        assert [p["alpha"], p["beta"], p["gamma"]] == list(m["perfParms"].values())
    assert httpx.get(tuner + "/healthz").json()["status"] == "ok"
