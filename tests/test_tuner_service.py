"""Tuner service over HTTP: lifecycle and status codes, bad input, persistence across restarts, thread safety,
merge into model data and Systems."""

from __future__ import annotations

import json
import threading
import warnings

import numpy as np
import pytest

from inferno_mip.tuner import TunerError, merge, predict
from inferno_mip.tuner.app import create_app
from inferno_mip.tuner.service import ServiceSettings, TunerService

with warnings.catch_warnings():  # starlette's httpx deprecation notice
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

TRUTH = (12, 0.04, 6e-5)
LOADS = [(30, 512, 256), (60, 1024, 128), (90, 512, 256), (60, 256, 512), (120, 512, 256), (45, 768, 384)]


def spec(rpm, i, o, model="m", acc="A100", n=128, x=TRUTH, **alloc):
    from inferno_mip.tuner import Observation

    z = predict(x, Observation(rpm=rpm, in_tokens=i, out_tokens=o, max_batch=n))
    ca = {"accelerator": acc, "numReplicas": 1, "maxBatch": n, "ttftAverage": z[0], "itlAverage": z[1],
          "load": {"arrivalRate": rpm, "avgInTokens": i, "avgOutTokens": o}}
    ca.update(alloc)
    return {"name": "srv", "class": "Premium", "model": model, "maxBatchSize": n, "maxQueueSize": 0,
            "currentAlloc": ca}


def client(tmp_path=None, **kw):
    if tmp_path is not None:
        kw.setdefault("state_file", str(tmp_path / "state.json"))
    svc = TunerService(ServiceSettings(**kw))
    return svc, TestClient(create_app(svc))


def test_ekf_lifecycle_status_codes_and_warmup(tmp_path):
    init, warm = 3, 2
    svc, c = client(tmp_path, init_obs=init, warm_up_cycles=warm)
    assert c.get("/warmup").json() == {"warmingUp": False}
    for k in range(1, 9):
        r = c.post("/tune", json=[spec(*LOADS[k % len(LOADS)])])
        if k < init:
            assert r.status_code == 422 and "collecting initial observations" in r.json()["error"]
        else:
            assert r.status_code == 200, r.text
            m = r.json()["models"][0]
            assert (m["name"], m["acc"], m["maxBatchSize"]) == ("m", "A100", 128)
        assert c.get("/warmup").json()["warmingUp"] == (k < init + warm - 1)
    p = c.get("/getparams", params={"model": "m", "accelerator": "A100"}).json()
    assert p["updateCount"] == 8 - init + 1 and p["lastUpdated"].endswith("Z")
    assert c.get("/getparams", params={"model": "m"}).status_code == 400
    assert c.get("/getparams", params={"model": "x", "accelerator": "y"}).status_code == 404
    st = c.get("/calibration-status").json()["statuses"][0]
    assert st["obsCount"] == 8 and st["obsTarget"] == init and not st["illConditioned"]


def test_tuned_service_predicts_truth():
    svc, c = client(init_obs=4)
    for k in range(12):
        c.post("/tune", json=[spec(*LOADS[k % len(LOADS)])])
    from inferno_mip.tuner import Observation

    p = svc.params()[("m", "A100")]
    held = Observation(rpm=75, in_tokens=700, out_tokens=200, max_batch=128)
    np.testing.assert_allclose(predict(list(p.values()), held), predict(TRUTH, held), rtol=0.05)


@pytest.mark.parametrize("body, code", [("not json", 400), ("[]", 400), ("{}", 400), ("[1, 2]", 422)])
def test_bad_bodies(body, code):
    svc, c = client()
    r = c.post("/tune", content=body, headers={"content-type": "application/json"})
    assert r.status_code == code and "error" in r.json()


@pytest.mark.parametrize("edit, reason", [
    (lambda s: s["currentAlloc"].__setitem__("ttftAverage", float("nan")), "ttftAverage: must be finite"),
    (lambda s: s["currentAlloc"].__setitem__("itlAverage", -3), "itlAverage: must be > 0"),
    (lambda s: s["currentAlloc"].pop("ttftAverage"), "ttftAverage: must be > 0"),
    (lambda s: s.pop("model"), "model: missing"),
    (lambda s: s.__setitem__("maxBatchSize", 0) or s["currentAlloc"].__setitem__("maxBatch", 0), "maxBatch"),
])
def test_bad_observations_rejected_with_reason_never_crash(edit, reason):
    svc, c = client(init_obs=1)
    bad = spec(*LOADS[0])
    edit(bad)
    raw = json.dumps([bad]).replace("NaN", "NaN")
    r = c.post("/tune", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422 and reason in r.json()["error"], r.text
    r = c.post("/tune", content=json.dumps([bad, spec(*LOADS[1])]), headers={"content-type": "application/json"})
    assert r.status_code == 200 and any(reason in i for i in r.json()["issues"])


@pytest.mark.parametrize("edit, field", [
    (lambda s: s["currentAlloc"]["load"].__setitem__("avgInTokens", "many"), "load.avgInTokens"),
    (lambda s: s["currentAlloc"]["load"].__setitem__("avgOutTokens", "512"), "load.avgOutTokens"),
    (lambda s: s["currentAlloc"]["load"].__setitem__("avgInTokens", 512.5), "load.avgInTokens"),
    (lambda s: s.__setitem__("maxBatchSize", "128"), "specs[0].maxBatchSize"),
    (lambda s: s["currentAlloc"].__setitem__("ttftAverage", "fast"), "currentAlloc.ttftAverage"),
    (lambda s: s.__setitem__("keepAccelerator", 1), "keepAccelerator"),
])
def test_wrongly_typed_fields_are_a_400_as_in_go(edit, field):
    """Go's binding rejects the whole body when a field has the wrong JSON type; so do we, naming the field."""
    svc, c = client(init_obs=1)
    assert c.post("/tune", json=[spec(*LOADS[0])]).status_code == 200  # the pair has parameters
    bad = spec(*LOADS[1])
    edit(bad)
    r = c.post("/tune", json=[bad])  # before: 200 with maxBatchSize 0 for the pair
    assert r.status_code == 400 and field in r.json()["error"], r.text
    r = c.post("/tune", json=[bad, spec(*LOADS[2])])
    assert r.status_code == 400 and field in r.json()["error"], r.text
    assert c.get("/getparams", params={"model": "m", "accelerator": "A100"}).json()["updateCount"] == 1


@pytest.mark.parametrize("body, code", [("{}", 200), ("null", 200), ('{"models": null}', 200), ("", 400),
                                         ("[]", 400), ('{"models": {}}', 400), ("{", 400),
                                         ('{"models": [{"name": "m", "maxBatchSize": 8.5}]}', 400)])
def test_merge_binds_as_go(body, code):
    svc, c = client()
    svc.calibrate([spec(*ld) for ld in LOADS])
    r = c.post("/merge", content=body, headers={"content-type": "application/json"})
    assert r.status_code == code, r.text
    if code == 200:  # Go: an empty ModelData gets every stored pair appended
        (entry,) = r.json()["models"]
        assert (entry["name"], entry["acc"], entry["accCount"], entry["maxBatchSize"]) == ("m", "A100", 1, 256)
        np.testing.assert_allclose(list(entry["perfParms"].values()), TRUTH, rtol=1e-3)
    else:
        assert r.json()["error"]


def test_keys_case_insensitive():
    svc, c = client(init_obs=1)
    s = spec(*LOADS[0])
    s = {k.upper(): v for k, v in s.items()}
    s["CURRENTALLOC"] = {k.capitalize(): v for k, v in s["CURRENTALLOC"].items()}
    assert c.post("/tune", json=[s]).status_code == 200


def test_state_persists_across_restart(tmp_path):
    svc, c = client(tmp_path, init_obs=2, mode="ekf")
    for k in range(5):
        c.post("/tune", json=[spec(*LOADS[k])])
    before = c.get("/getparams", params={"model": "m", "accelerator": "A100"}).json()
    state = svc.state()
    svc2, c2 = client(tmp_path, init_obs=2)
    assert svc2.state() == state
    assert c2.get("/getparams", params={"model": "m", "accelerator": "A100"}).json() == before
    c.post("/tune", json=[spec(*LOADS[5])])
    c2.post("/tune", json=[spec(*LOADS[5])])
    assert svc.params() == svc2.params()  # the restarted service continues identically


def test_sliding_mode_persists(tmp_path):
    svc, c = client(tmp_path, init_obs=3, window=4, mode="sliding-window")
    for k in range(5):
        c.post("/tune", json=[spec(*LOADS[k])])
    svc2, _ = client(tmp_path, init_obs=3, window=4, mode="sliding-window")
    assert svc2.state() == svc.state() and "m/A100" in svc2.sliding


def test_concurrent_tune_calls_are_serialised():
    svc, c = client(init_obs=2)
    errors = []

    def worker(acc):
        for k in range(3):
            try:
                svc.tune([spec(*LOADS[k], acc=acc)])
            except Exception as exc:  # "collecting" is expected on the first cycle only
                if k > 0 or "collecting" not in str(exc):
                    errors.append(exc)

    threads = [threading.Thread(target=worker, args=(f"G{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert sorted(svc.store) == [f"m/G{i}" for i in range(4)]
    assert all(lp.update_count == 2 for lp in svc.store.values())


def test_merge_endpoint_and_function():
    svc, c = client()
    svc.calibrate([spec(*ld) for ld in LOADS])
    md = {"models": [{"name": "m", "acc": "A100", "accCount": 2, "maxBatchSize": 64,
                      "perfParms": {"alpha": 1, "beta": 1, "gamma": 1}},
                     {"name": "other", "acc": "L4", "accCount": 1, "maxBatchSize": 8,
                      "perfParms": {"alpha": 2, "beta": 2, "gamma": 2}}]}
    out = c.post("/merge", json=md).json()["models"]
    assert out[0]["accCount"] == 2 and out[0]["maxBatchSize"] == 64
    np.testing.assert_allclose(list(out[0]["perfParms"].values()), TRUTH, rtol=1e-3)
    assert out[1] == md["models"][1]
    added = merge(None, {"x/H100": {"alpha": 1, "beta": 0.1, "gamma": 1e-4}})
    assert added == {"models": [{"name": "x", "acc": "H100", "accCount": 1, "maxBatchSize": 256,
                                 "perfParms": {"alpha": 1.0, "beta": 0.1, "gamma": 1e-4}}]}
    with pytest.raises(TunerError, match=r"params\[m/A100\].beta"):
        merge(md, {("m", "A100"): {"alpha": 1, "beta": float("nan"), "gamma": 0}})


def test_merge_into_system_feeds_a_solve():
    from inferno_mip import load_scenario, solve
    from pathlib import Path

    system = load_scenario(Path(__file__).resolve().parent.parent / "scenarios" / "inferno-small")
    key = (system.perf[0].model, system.perf[0].accelerator)
    tuned = merge(system, {key: {"alpha": 10.0, "beta": 0.02, "gamma": 1e-4}})
    p = tuned.perf_by_key[key]
    assert (p.alpha, p.beta, p.gamma, p.generation) == (10.0, 0.02, 1e-4, "G3")
    assert p.acc_count == system.perf_by_key[key].acc_count
    assert len(tuned.perf) == len(system.perf)
    assert system.perf_by_key[key].alpha != 10.0  # input untouched
    sol = solve(tuned)
    assert sol is not None
    # Through solve(params=...), and an unknown accelerator is reported, not silently dropped.
    via_solve = solve(system, params={key: {"alpha": 10.0, "beta": 0.02, "gamma": 1e-4},
                                      (key[0], "TPU9"): {"alpha": 1.0, "beta": 0.01, "gamma": 1e-5}})
    assert via_solve.total_cost == sol.total_cost
    assert any("TPU9" in issue for issue in via_solve.issues)


@pytest.mark.parametrize("mode", ["ekf", "sliding-window"])
def test_work_on_a_copy_of_the_pair_state_equals_work_in_place(mode):
    """A worker process tunes a copy of the pair's state and hands it back (TunerService.workers); the answers
    and the state must be exactly those of tuning in place. A thread pool stands in for the processes here;
    the live-server tests run the real ones."""
    from concurrent.futures import ThreadPoolExecutor

    def run(workers):
        svc = TunerService(ServiceSettings(init_obs=3, warm_up_cycles=2, mode=mode), workers=workers)
        answers = []
        for k in range(14):
            body = [spec(*LOADS[k % len(LOADS)], acc=f"G{k % 2}")]
            try:
                answers.append(svc.tune(body))
            except TunerError as exc:
                answers.append(str(exc))
        state = svc.state()
        for lp in state["store"].values():
            lp.pop("last_updated")
        return answers, state, svc.warming_up(), svc.calibration_statuses()

    with ThreadPoolExecutor(1) as pool:
        copied = run(pool)
    in_place = run(None)
    assert copied[1]["store"] and copied[1]["estimators"]  # the sequence did tune both pairs
    assert copied[1:] == in_place[1:]
    assert [a if isinstance(a, str) else a[0] for a in copied[0]] == \
           [a if isinstance(a, str) else a[0] for a in in_place[0]]
