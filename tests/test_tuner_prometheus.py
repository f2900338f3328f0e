"""A real Prometheus (Debian's /usr/bin/prometheus) scrapes a simulated vLLM exporter on loopback; the online
observer reads it through PromQL and the tuner converges to the exporter's truth parameters."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import httpx
import numpy as np
import pytest

from inferno_mip.tuner import Observation, PerfTuner, TunerOptions, default_config, predict
from inferno_mip.tuner.estimators import InitEstimator
from inferno_mip.tuner.observers import OnlineObserver, PrometheusConfig
from inferno_mip.tuner.observers.exporter import OperatingPoint, VllmExporter

TRUTH = (12.0, 0.04, 6e-5)
POINTS = [OperatingPoint("sim-0", 30, 512, 256), OperatingPoint("sim-1", 90, 512, 256, replicas=2),
          OperatingPoint("sim-2", 150, 512, 256), OperatingPoint("sim-3", 60, 1024, 128),
          OperatingPoint("sim-4", 60, 256, 512)]
PROMETHEUS = shutil.which("prometheus") or ("/usr/bin/prometheus" if os.path.exists("/usr/bin/prometheus") else None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    if PROMETHEUS is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but the prometheus binary is missing (apt-get install -y prometheus)")
        pytest.skip("prometheus binary not installed (apt-get install -y prometheus) and CI not set")
    exporter = VllmExporter(TRUTH, POINTS, namespace="test")
    eport = exporter.start(0)
    tmp = tmp_path_factory.mktemp("prometheus")
    cfg = tmp / "prometheus.yml"
    cfg.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"scrape_configs:\n  - job_name: vllm\n    static_configs:\n      - targets: ['127.0.0.1:{eport}']\n"
    )
    port = _free_port()
    log = open(tmp / "prometheus.log", "wb")
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={tmp / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        ready = False
        while time.monotonic() < deadline and proc.poll() is None:  # bounded wait for readiness and 2 scrapes
            try:
                r = httpx.get(f"{url}/api/v1/query", params={"query": "count(vllm:request_success_total)"}, timeout=1)
                res = r.json()["data"]["result"]
                if res and float(res[0]["value"][1]) == 6:
                    q = httpx.get(f"{url}/api/v1/query", timeout=1,
                                  params={"query": "count_over_time(vllm:request_success_total[8s])"}).json()
                    if all(float(s["value"][1]) >= 7 for s in q["data"]["result"]):
                        ready = True
                        break
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            time.sleep(0.5)
        if not ready:
            pytest.fail(f"prometheus did not become ready: {(tmp / 'prometheus.log').read_text()[-2000:]}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()
        exporter.stop()


def _observe(url: str, point: OperatingPoint) -> Observation:
    cfg = PrometheusConfig(address=url, namespace="test", model_regex=f"^{point.model_name}$", window="5s",
                           max_batch=point.max_batch)
    obs = OnlineObserver(cfg)
    try:
        return obs.observe()
    finally:
        obs.close()


def _scrapes_were_regular(url: str, point: OperatingPoint) -> bool:
    """Whether the scrapes in the last 7 s (which hold the 5 s window just read) came at the configured 1 s: a
    scrape delayed by machine load leaves a gap at the window's edge that Prometheus's rate() does not
    extrapolate across, and reads low (25.9 rpm for 30 once, under ``make test -n 2``)."""
    q = httpx.get(f"{url}/api/v1/query", timeout=1, params={
        "query": f'vllm:request_success_total{{model_name="{point.model_name}"}}[7s]'}).json()
    stamps = np.array([float(t) for t, _ in q["data"]["result"][0]["values"]])
    return len(stamps) >= 6 and bool(np.diff(stamps).max() <= 1.1)


def _observe_regular(url: str, point: OperatingPoint, tries: int = 5) -> Observation:
    """An observation over a window of regular scrapes (the last one read, if none of `tries` was)."""
    for _ in range(tries):
        o = _observe(url, point)
        if _scrapes_were_regular(url, point):
            break
    return o


def test_online_observer_reads_vllm_metrics(prometheus):
    for p in POINTS:
        o = _observe_regular(prometheus, p)
        truth = predict(TRUTH, Observation(rpm=p.rpm, in_tokens=p.in_tokens, out_tokens=p.out_tokens,
                                           max_batch=p.max_batch))
        # per replica; the samples carry the instant their counters were computed (ms resolution), so a
        # scrape delayed by machine load does not move rate()
        assert o.rpm == pytest.approx(p.rpm, rel=1e-3)
        assert o.in_tokens == pytest.approx(p.in_tokens, rel=1e-6)
        assert o.out_tokens == pytest.approx(p.out_tokens, rel=1e-6)
        assert o.ttft == pytest.approx(truth[0], rel=1e-6)
        assert o.itl == pytest.approx(truth[1], rel=1e-6)


def test_exporter_stamps_samples_at_the_instant_of_their_counters():
    """Counter growth between two scrapes over the stamps' difference is the rate, however late a scrape is
    answered: the stamp moves with the exporter's clock, not with the scraper."""
    from prometheus_client import generate_latest

    now = [100.0]
    exporter = VllmExporter(TRUTH, POINTS[:1], clock=lambda: now[0])

    def sample():
        line = next(x for x in generate_latest(exporter.registry).decode().splitlines()
                    if x.startswith("vllm:request_success_total{"))
        value, stamp_ms = line.rsplit(" ", 2)[1:]
        return float(value), int(stamp_ms)

    v0, t0 = sample()
    now[0] += 7.25
    v1, t1 = sample()
    assert t1 - t0 == 7250
    assert (v1 - v0) / ((t1 - t0) / 1000.0) * 60.0 == pytest.approx(POINTS[0].rpm, rel=1e-9)


def test_tuner_converges_on_prometheus_data(prometheus):
    observations = [_observe(prometheus, p) for p in POINTS]
    cfg = default_config()
    ie = InitEstimator(3, seed=cfg.init_state)
    for o in observations[:3]:
        ie.add(o)
    tuner = PerfTuner(cfg, x0=ie.fit(), options=TunerOptions(process_scale=0.01))
    for o in observations + observations:
        assert tuner.step(o, skip_nis=True).accepted
    held = Observation(rpm=75, in_tokens=768, out_tokens=192, max_batch=128)
    np.testing.assert_allclose(predict(tuner.x, held), predict(TRUTH, held), rtol=0.05)


def test_prometheus_errors_are_clear(prometheus):
    obs = OnlineObserver(PrometheusConfig(address=prometheus, model_regex="^nothing$"))
    o = obs.observe()
    with pytest.raises(Exception, match="rpm"):
        o.validate()
    with pytest.raises(Exception, match="prometheus"):
        obs.query("sum(rate(")  # PromQL syntax error -> TunerError naming Prometheus
    obs.close()


@pytest.mark.parametrize("engine", [True, False])
def test_online_observer_prefers_the_engines_ttft(engine):
    """vLLM's TTFT (API server) holds the API server's delay; queue + prefill time (engine core) does not."""
    means = {"time_to_first_token": 0.120, "time_per_output_token": 0.020, "request_queue_time": 0.030,
             "request_prefill_time": 0.060}

    def answer(request: httpx.Request) -> httpx.Response:
        q = request.url.params["query"]
        value = {"count(": 2.0, "prompt_tokens": 512.0, "generation_tokens": 256.0, "avg(avg_over_time": 12.0,
                 "vllm:request_success_total": 1.0}  # token ratios name the success counter too: first match
        found = next((v for k, v in means.items() if f"vllm:{k}_seconds_sum" in q), None)
        if found is None:
            found = next(v for k, v in value.items() if k in q)
        if "prefill" in q and not engine:
            return httpx.Response(200, json={"status": "success", "data": {"result": []}})
        return httpx.Response(200, json={"status": "success", "data": {"result": [{"metric": {},
                                                                                 "value": [0, str(found)]}]}})

    client = httpx.Client(base_url="http://127.0.0.1:9", transport=httpx.MockTransport(answer))
    obs = OnlineObserver(PrometheusConfig(address="http://127.0.0.1:9"), client=client)
    o = obs.observe()
    assert o.ttft == pytest.approx(90.0 if engine else 120.0)
    assert o.itl == pytest.approx(20.0) and o.wait == pytest.approx(30.0)
    assert obs.last_rates["api_ttft_ms"] == pytest.approx(120.0)
    assert o.rpm == pytest.approx(30.0) and o.in_tokens == pytest.approx(512.0)
    obs.close()
