"""A simulated fleet served as Prometheus metrics under vLLM's names, one series per live replica.

Labels: ``model_name`` (the server's model), ``namespace``, ``pod`` (the replica), ``server``. Metrics, as vLLM
exports them (and as the online tuner observer queries them): ``vllm:num_requests_running`` and
``vllm:num_requests_waiting`` (gauges), ``vllm:request_success_total``, ``vllm:prompt_tokens_total`` and
``vllm:generation_tokens_total`` (counters), histograms ``vllm:time_to_first_token_seconds``,
``vllm:time_per_output_token_seconds``, ``vllm:request_queue_time_seconds``,
``vllm:request_prefill_time_seconds`` and ``vllm:e2e_request_latency_seconds``; plus ``inferno_sim_requests_arrived_total`` and
``inferno_sim_requests_rejected_total`` (a gateway's view: offered load and rejections).
Call ``update()`` after advancing the fleet; scrapes read the last update.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from .fleet import Fleet
from .stats import Sample, replica_sample

# vLLM's bucket bounds (seconds).
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
               80.0)
LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
                   480.0, 960.0, 1920.0, 7680.0)
HISTOGRAMS = {  # name -> (buckets, help)
    "vllm:time_to_first_token_seconds": (TTFT_BUCKETS, "Histogram of time to first token in seconds."),
    "vllm:time_per_output_token_seconds": (ITL_BUCKETS, "Histogram of time per output token in seconds."),
    "vllm:request_queue_time_seconds": (LATENCY_BUCKETS, "Histogram of time spent waiting in the queue."),
    "vllm:request_prefill_time_seconds": (LATENCY_BUCKETS, "Histogram of time spent in PREFILL phase for request."),
    "vllm:e2e_request_latency_seconds": (LATENCY_BUCKETS, "Histogram of end to end request latency in seconds."),
}
COUNTERS = {
    "vllm:request_success_total": "Count of successfully processed requests.",
    "vllm:prompt_tokens_total": "Number of prefill tokens processed.",
    "vllm:generation_tokens_total": "Number of generation tokens processed.",
    "inferno_sim_requests_arrived_total": "Requests routed to this replica (accepted or rejected).",
    "inferno_sim_requests_rejected_total": "Requests this replica rejected (queue full).",
}
GAUGES = {
    "vllm:num_requests_running": "Number of requests in model execution batches.",
    "vllm:num_requests_waiting": "Number of requests waiting to be processed.",
}


@dataclass
class _Histogram:
    bounds: tuple[float, ...]
    counts: np.ndarray = None
    total: float = 0.0

    def __post_init__(self):
        self.counts = np.zeros(len(self.bounds) + 1)

    def observe(self, values: np.ndarray, weights: np.ndarray | None = None) -> None:
        if not len(values):
            return
        w = np.ones(len(values)) if weights is None else weights
        idx = np.searchsorted(np.array(self.bounds), values, side="left")  # bucket le >= value
        self.counts += np.bincount(idx, weights=w, minlength=len(self.bounds) + 1)
        self.total += float(values @ w)


@dataclass
class _ReplicaSeries:
    labels: dict[str, str]
    counters: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0.0))
    histograms: dict[str, _Histogram] = field(
        default_factory=lambda: {k: _Histogram(b) for k, (b, _) in HISTOGRAMS.items()})
    gauges: dict[str, float] = field(default_factory=lambda: dict.fromkeys(GAUGES, 0.0))

    def add(self, s: Sample) -> None:
        c = self.counters
        c["vllm:request_success_total"] += len(s.done_in)
        c["vllm:prompt_tokens_total"] += float(s.done_in.sum())
        c["vllm:generation_tokens_total"] += float(s.done_out.sum())
        c["inferno_sim_requests_arrived_total"] += s.offered
        c["inferno_sim_requests_rejected_total"] += s.rejected
        h = self.histograms
        h["vllm:time_to_first_token_seconds"].observe(s.ttft)
        h["vllm:time_per_output_token_seconds"].observe(s.gaps, s.gap_weights)
        h["vllm:request_queue_time_seconds"].observe(s.done_wait)
        h["vllm:request_prefill_time_seconds"].observe(s.done_ttft - s.done_wait)
        resp = s.done_ttft + np.nan_to_num(s.done_itl) * (s.done_out - 1)
        h["vllm:e2e_request_latency_seconds"].observe(resp)


class FleetMetrics:
    """Cumulative vLLM-style series of a fleet's replicas; a prometheus_client collector."""

    def __init__(self, fleet: Fleet, namespace: str = "sim"):
        self.fleet = fleet
        self.namespace = namespace
        self._series: dict[str, _ReplicaSeries] = {}
        self._live: list[_ReplicaSeries] = []
        self._since = fleet.now
        self._lock = threading.Lock()
        self.port: int | None = None
        self._server = None

    def update(self) -> None:
        """Fold everything observed since the last update into the series; live replicas only are exported."""
        now = self.fleet.now
        live = []
        for sim in self.fleet.servers.values():
            for r in sim.replicas:
                if r.ready_at > now or r.gone_at < self._since:
                    continue
                series = self._series.get(r.name)
                if series is None:
                    series = self._series[r.name] = _ReplicaSeries(
                        {"model_name": sim.model, "namespace": self.namespace, "pod": r.name, "server": sim.name})
                if now > self._since:
                    series.add(replica_sample(r.engine, self._since, now))
                if r.gone_at > now:
                    series.gauges["vllm:num_requests_running"] = r.engine.running
                    series.gauges["vllm:num_requests_waiting"] = len(r.engine.waiting)
                    live.append(series)
        with self._lock:
            self._live = live
        self._since = now

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        with self._lock:
            live = list(self._live)
        names = ["model_name", "namespace", "pod", "server"]
        for name, text in GAUGES.items():
            fam = GaugeMetricFamily(name, text, labels=names)
            for s in live:
                fam.add_metric([s.labels[k] for k in names], s.gauges[name])
            yield fam
        for name, text in COUNTERS.items():
            fam = CounterMetricFamily(name.removesuffix("_total"), text, labels=names)
            for s in live:
                fam.add_metric([s.labels[k] for k in names], s.counters[name])
            yield fam
        for name, (bounds, text) in HISTOGRAMS.items():
            fam = HistogramMetricFamily(name, text, labels=names)
            for s in live:
                h = s.histograms[name]
                cum = np.cumsum(h.counts)
                buckets = [(_le(b), float(c)) for b, c in zip(bounds, cum[:-1])] + [("+Inf", float(cum[-1]))]
                fam.add_metric([s.labels[k] for k in names], buckets, h.total)
            yield fam

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _le(bound: float) -> str:
    return repr(float(bound))


def serve(fleet: Fleet, port: int, namespace: str = "sim") -> FleetMetrics:
    """Serve the fleet's metrics on 127.0.0.1:``port`` (0 = any free port; see ``.port``)."""
    from .errors import SimulationError

    try:
        from prometheus_client import CollectorRegistry, start_http_server
    except ImportError:
        raise SimulationError("serving metrics needs prometheus-client (pip install prometheus-client)") from None
    metrics = FleetMetrics(fleet, namespace)
    metrics.update()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    try:
        server, _ = start_http_server(port, addr="127.0.0.1", registry=registry)
    except OSError as exc:
        raise SimulationError(f"--serve-metrics {port}: cannot listen on 127.0.0.1: {exc.strerror or exc}") from None
    metrics._server = server
    metrics.port = server.server_port
    return metrics
