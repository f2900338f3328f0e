"""A simulated vLLM metrics exporter (prometheus_client) for tests and demos.

Each operating point (a ``model_name`` label) serves counters that grow linearly in wall time at its request
rate, with latency sums = count * latency from the perf model at the truth parameters, so that PromQL
``rate()`` ratios recover the operating point exactly. Every sample carries the timestamp of the instant its
counters were computed: Prometheus honours exposed timestamps by default, and without them it stamps a sample at
the scrape's start, so a response delayed by a loaded machine would skew ``rate()`` over a short window by the
delay's variation over the window.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from ...queueing import make_perf_model

__all__ = ["OperatingPoint", "VllmExporter"]


@dataclass(frozen=True)
class OperatingPoint:
    model_name: str
    rpm: float
    in_tokens: float
    out_tokens: float
    max_batch: int = 128
    replicas: int = 1


class VllmExporter:
    """Serve vLLM-named metrics for operating points at truth (alpha, beta, gamma) on 127.0.0.1."""

    def __init__(self, truth, points, *, namespace: str = "test", max_queue: int = 0, clock=time.monotonic):
        from prometheus_client.core import CollectorRegistry

        self.truth = dict(zip(("alpha", "beta", "gamma"), (float(v) for v in truth)))
        self.points, self.namespace, self.max_queue, self._clock = list(points), namespace, max_queue, clock
        self._t0, self._wall0 = clock(), time.time()  # counters grow in `clock`; samples are stamped in wall time
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self._server = self._thread = None
        self.port = 0

    def metrics(self, p: OperatingPoint):
        m = make_perf_model("new", self.truth, in_tokens=p.in_tokens, out_tokens=p.out_tokens,
                            max_batch=p.max_batch, max_queue=self.max_queue).analyze(p.rpm / 60.0)
        return m

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

        now = self._clock() - self._t0
        elapsed, stamp = now + 1.0, self._wall0 + now
        labels = ["namespace", "model_name", "pod"]
        fam = {
            "success": CounterMetricFamily("vllm:request_success", "finished requests", labels=labels),
            "gen": CounterMetricFamily("vllm:generation_tokens", "generated tokens", labels=labels),
            "prompt": CounterMetricFamily("vllm:prompt_tokens", "prompt tokens", labels=labels),
            "running": GaugeMetricFamily("vllm:num_requests_running", "running requests", labels=labels),
        }
        sums = {k: SummaryMetricFamily(f"vllm:{k}_seconds", k, labels=labels)  # exposes _sum and _count
                for k in ("time_to_first_token", "time_per_output_token", "request_queue_time",
                          "request_prefill_time")}
        for p in self.points:
            m = self.metrics(p)
            for r in range(p.replicas):
                lab = [self.namespace, p.model_name, f"{p.model_name}-{r}"]
                n = p.rpm / 60.0 * elapsed  # requests per replica so far
                fam["success"].add_metric(lab, n, timestamp=stamp)
                fam["gen"].add_metric(lab, n * p.out_tokens, timestamp=stamp)
                fam["prompt"].add_metric(lab, n * p.in_tokens, timestamp=stamp)
                fam["running"].add_metric(lab, m.num_in_service, timestamp=stamp)
                for k, v in (("time_to_first_token", m.ttft), ("time_per_output_token", m.itl),
                             ("request_queue_time", m.wait_time), ("request_prefill_time", m.ttft - m.wait_time)):
                    sums[k].add_metric(lab, count_value=n, sum_value=n * v / 1000.0, timestamp=stamp)
        yield from fam.values()
        yield from sums.values()

    def start(self, port: int = 0) -> int:
        """Serve /metrics on 127.0.0.1 in the Prometheus text format 0.0.4 (names keep their colons).

        prometheus_client's own server negotiates OpenMetrics and then escapes ':' in sample names only,
        which Prometheus 2.42 drops; a plain handler around ``generate_latest`` avoids that.
        """
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        registry = self.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                body = generate_latest(registry)
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.port = self._server.server_address[1]
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None
