"""Online observer: one Observation per call from a Prometheus HTTP API over vLLM metrics.

Settings (``PrometheusConfig``, or ``from_env``): ``PROMETHEUS_ADDRESS``, optional bearer ``TOKEN``, namespace
(empty: no namespace matcher), model regex, window, max batch/queue of the replicas. Per-replica values divide
the fleet sums by the number of replicas (series of ``vllm:num_requests_running``).

Rates: vLLM exports completions (``vllm:request_success_total``), i.e. *throughput*; it equals the offered
(arrival) rate only for a stable server that drops nothing. ``arrival_metric`` names a counter of arriving
requests (e.g. from a gateway) to use instead; ``last_rates`` reports both.

TTFT: vLLM stamps ``vllm:time_to_first_token_seconds`` in its API server, so it holds that process's own delay
too, which the perf model does not describe. Where the engine's queue and prefill times are exported, their sum
(the engine's TTFT) is observed instead; ``last_rates`` keeps vLLM's figure as ``api_ttft_ms``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Iterator, Mapping

import httpx

from ..errors import TunerError
from ..observation import PREFILL_DECODE, Observation

__all__ = ["OnlineObserver", "PrometheusConfig", "METRICS"]

METRICS = {  # vLLM metric names
    "success": "vllm:request_success_total",
    "generation_tokens": "vllm:generation_tokens_total",
    "prompt_tokens": "vllm:prompt_tokens_total",
    "running": "vllm:num_requests_running",
    "queue_time": "vllm:request_queue_time_seconds",
    "prefill_time": "vllm:request_prefill_time_seconds",
    "ttft": "vllm:time_to_first_token_seconds",
    "itl": "vllm:time_per_output_token_seconds",
}


@dataclass(frozen=True)
class PrometheusConfig:
    address: str
    token: str = ""
    namespace: str = ""
    model_regex: str = ".*"
    window: str = "1m"
    max_batch: int = 256
    max_queue: int = 0
    timeout: float = 5.0
    arrival_metric: str = ""  # counter of arriving requests; empty: use the completion rate
    extra_labels: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> PrometheusConfig:
        env = os.environ if env is None else env
        addr = overrides.pop("address", None) or env.get("PROMETHEUS_ADDRESS", "")
        if not addr:
            raise TunerError("PROMETHEUS_ADDRESS: not set (e.g. http://127.0.0.1:9090)")
        token = overrides.pop("token", None)
        return cls(address=addr, token=env.get("TOKEN", "") if token is None else token,
                   **{k: v for k, v in overrides.items() if v is not None})

    def selector(self) -> str:
        def esc(v: str) -> str:
            return v.replace("\\", "\\\\").replace('"', '\\"')
        parts = [f'model_name=~"{esc(self.model_regex)}"']
        if self.namespace:
            parts.insert(0, f'namespace="{esc(self.namespace)}"')
        parts += [f'{k}="{esc(v)}"' for k, v in sorted(self.extra_labels.items())]
        return "{" + ",".join(parts) + "}"


class OnlineObserver:
    """Query Prometheus once per ``observe()``; ``__iter__`` yields ``steps`` observations (optionally spaced)."""

    kind = PREFILL_DECODE

    def __init__(self, config: PrometheusConfig, *, steps: int = 1, interval: float = 0.0, client=None,
                 sleep=None):
        self.config, self.steps, self.interval = config, int(steps), float(interval)
        headers = {"Authorization": f"Bearer {config.token}"} if config.token else {}
        self._client = client or httpx.Client(base_url=config.address.rstrip("/"), headers=headers,
                                              timeout=config.timeout)
        self._sleep = sleep
        self.last_rates: dict[str, float] = {}

    def close(self) -> None:
        self._client.close()

    def query(self, promql: str) -> float:
        """An instant query's first sample value (NaN if there is no sample); TunerError on HTTP/API errors."""
        try:
            r = self._client.get("/api/v1/query", params={"query": promql})
        except httpx.HTTPError as exc:
            raise TunerError(f"prometheus {self.config.address}: {type(exc).__name__}: {exc}") from None
        try:
            body = r.json()
        except ValueError:
            raise TunerError(f"prometheus: HTTP {r.status_code}, not JSON: {r.text[:200]!r}") from None
        if r.status_code != 200 or body.get("status") != "success":
            raise TunerError(f"prometheus: HTTP {r.status_code}: {body.get('error', body)} (query {promql})")
        result = body.get("data", {}).get("result", [])
        if not result:
            return math.nan
        try:
            return float(result[0]["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            raise TunerError(f"prometheus: unexpected result {result[0]!r} (query {promql})") from None

    def _ratio(self, num: str, den: str) -> float:
        s, w = self.config.selector(), self.config.window
        return self.query(f"sum(rate({num}{s}[{w}])) / sum(rate({den}{s}[{w}]))")

    def observe(self) -> Observation:
        """One observation per replica (fleet sums / replicas); NaN fields make the tuner reject it."""
        c, s, w, m = self.config, self.config.selector(), self.config.window, METRICS
        replicas = self.query(f"count({m['running']}{s})")
        completion = self.query(f"sum(rate({m['success']}{s}[{w}]))") * 60.0
        arrival = self.query(f"sum(rate({c.arrival_metric}{s}[{w}]))") * 60.0 if c.arrival_metric else math.nan
        n = replicas if replicas and replicas > 0 else math.nan
        mean = {k: 1000.0 * self._ratio(m[k] + "_sum", m[k] + "_count") for k in ("ttft", "queue_time",
                                                                                    "prefill_time")}
        engine_ttft = mean["queue_time"] + mean["prefill_time"]
        self.last_rates = {"completion_rpm": completion, "arrival_rpm": arrival, "replicas": replicas,
                           "api_ttft_ms": mean["ttft"]}
        rpm = (arrival if c.arrival_metric else completion) / n
        return Observation(
            rpm=rpm,
            in_tokens=self._ratio(m["prompt_tokens"], m["success"]),
            out_tokens=self._ratio(m["generation_tokens"], m["success"]),
            max_batch=c.max_batch, max_queue=c.max_queue,
            ttft=engine_ttft if math.isfinite(engine_ttft) else mean["ttft"],
            itl=1000.0 * self._ratio(m["itl"] + "_sum", m["itl"] + "_count"),
            wait=_nan0(mean["queue_time"]),
            batch_size=_nan0(self.query(f"avg(avg_over_time({m['running']}{s}[{w}]))")),
        )

    def __iter__(self) -> Iterator[Observation]:
        import time

        sleep = self._sleep or time.sleep
        for i in range(self.steps):
            if i and self.interval > 0:
                sleep(self.interval)
            yield self.observe()


def _nan0(v: float) -> float:
    return 0.0 if math.isnan(v) else v
