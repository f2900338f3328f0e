"""Load and latency of one managed Deployment from Prometheus (vLLM metric names), per field.

The series of a Deployment are picked by a selector template with ``$namespace``, ``$deployment`` and ``$server``
(default: the Deployment's pods, ``{namespace="$namespace",pod=~"$deployment-.*"}``). vLLM exports completions,
not arrivals: the arrival rate is the completion rate unless ``arrival_metric`` names a counter of arriving requests.
A field Prometheus cannot give (no series, NaN, an error) is None, so the caller falls back to the load labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from string import Template

from ..tuner.errors import TunerError
from ..tuner.observers.online import METRICS, OnlineObserver, PrometheusConfig

DEFAULT_SELECTOR = '{namespace="$namespace",pod=~"$deployment-.*"}'


@dataclass(frozen=True)
class PrometheusSettings:
    address: str
    token: str = ""
    selector: str = DEFAULT_SELECTOR
    window: str = "1m"
    arrival_metric: str = ""
    timeout: float = 5.0


@dataclass(frozen=True)
class PrometheusReading:
    """Window means: rates in req/s, tokens per request, latencies in ms, request counts summed over pods."""

    arrival_rate: float | None = None
    throughput: float | None = None
    in_tokens: float | None = None
    out_tokens: float | None = None
    itl: float | None = None
    ttft: float | None = None
    engine_ttft: float | None = None  # queue + prefill time: vLLM's TTFT without its API server's delay
    running: float | None = None
    waiting: float | None = None
    error: str = ""


class PrometheusJoin:
    """Reads one Deployment's metrics per call; reuses the tuner's Prometheus query client."""

    def __init__(self, settings: PrometheusSettings, client=None):
        self.settings = settings
        self._observer = OnlineObserver(PrometheusConfig(address=settings.address, token=settings.token,
                                                         timeout=settings.timeout), client=client)

    def close(self) -> None:
        self._observer.close()

    def read(self, namespace: str, deployment: str, server: str) -> PrometheusReading:
        s = Template(self.settings.selector).safe_substitute(namespace=_escape(namespace),
                                                             deployment=_escape(deployment), server=_escape(server))
        w = self.settings.window

        def rate(metric: str) -> str:
            return f"sum(rate({metric}{s}[{w}]))"

        queries = {
            "throughput": rate(METRICS["success"]),
            "in_tokens": f"{rate(METRICS['prompt_tokens'])} / {rate(METRICS['success'])}",
            "out_tokens": f"{rate(METRICS['generation_tokens'])} / {rate(METRICS['success'])}",
            "ttft": f"1000 * {rate(METRICS['ttft'] + '_sum')} / {rate(METRICS['ttft'] + '_count')}",
            "itl": f"1000 * {rate(METRICS['itl'] + '_sum')} / {rate(METRICS['itl'] + '_count')}",
            "engine_ttft": " + ".join(f"1000 * {rate(METRICS[k] + '_sum')} / {rate(METRICS[k] + '_count')}"
                                      for k in ("queue_time", "prefill_time")),
            "running": f"sum({METRICS['running']}{s})",
            "waiting": f"sum(vllm:num_requests_waiting{s})",
        }
        if self.settings.arrival_metric:
            queries["arrival_rate"] = rate(self.settings.arrival_metric)
        values: dict[str, float | None] = {}
        for name, promql in queries.items():
            try:
                value = self._observer.query(promql)
            except TunerError as exc:
                return PrometheusReading(error=str(exc))
            values[name] = value if math.isfinite(value) and value >= 0 else None
        values.setdefault("arrival_rate", values["throughput"])
        return PrometheusReading(**values)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
