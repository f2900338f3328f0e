"""Live collectors and actuators: Prometheus with vLLM's metric names (joined with a static scenario), and
inferno's collector (``GET /collect``) and actuator (``POST /update``) services, so that an existing inferno
deployment can be driven.

Units as everywhere inside: requests/second and milliseconds (Prometheus gives seconds, inferno requests/minute).
"""

from __future__ import annotations

import math
import time as clock
from collections.abc import Mapping

from ..spec import System
from .protocols import ActuationError, CollectError, FleetObservation, ServerObservation, Target

# vLLM's names, as the online tuner observer queries them (inferno_mip.tuner.observers.online.METRICS)
VLLM = {
    "success": "vllm:request_success_total",
    "prompt_tokens": "vllm:prompt_tokens_total",
    "generation_tokens": "vllm:generation_tokens_total",
    "prompt_hist": "vllm:request_prompt_tokens",
    "generation_hist": "vllm:request_generation_tokens",
    "running": "vllm:num_requests_running",
    "waiting": "vllm:num_requests_waiting",
    "ttft": "vllm:time_to_first_token_seconds",
    "itl": "vllm:time_per_output_token_seconds",
    "queue_time": "vllm:request_queue_time_seconds",
    "prefill_time": "vllm:request_prefill_time_seconds",
}


def _http_client(base_url: str, timeout: float, token: str = ""):
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, headers=headers)


class PrometheusCollector:
    """Per server, per pod readings from Prometheus over vLLM's metrics; what Prometheus cannot tell (model,
    class, accelerator, max batch) comes from the scenario. A server's selector defaults to
    ``model_name="<its model>"`` (plus ``namespace`` when given); ``selectors`` overrides it per server.
    vLLM counts completions only, so the offered rate is the completion rate unless ``arrival_metric`` names a
    counter of arriving requests (e.g. a gateway's)."""

    def __init__(self, address: str, system: System, *, namespace: str = "", window: str = "1m",
                 selectors: Mapping[str, str] | None = None, arrival_metric: str = "", token: str = "",
                 timeout: float = 5.0, client=None, clock_fn=clock.time):
        self.address, self.system, self.window, self.arrival_metric = address, system, window, arrival_metric
        self.client = client or _http_client(address, timeout, token)
        self.clock = clock_fn
        ns = f',namespace="{namespace}"' if namespace else ""
        self.selectors = {s.name: "{" + f'model_name="{s.model}"' + ns + "}" for s in system.servers}
        self.selectors.update(selectors or {})

    @property
    def now(self) -> float:
        return float(self.clock())

    def vector(self, promql: str) -> dict[str, float]:
        """An instant query by pod: pod -> value (NaN samples dropped); CollectError when Prometheus fails."""
        import httpx

        try:
            r = self.client.get("/api/v1/query", params={"query": promql})
            body = r.json()
        except httpx.HTTPError as exc:
            raise CollectError(f"prometheus {self.address}: {type(exc).__name__}: {exc}") from None
        except ValueError:
            raise CollectError(f"prometheus {self.address}: answer is not JSON (HTTP {r.status_code})") from None
        if r.status_code != 200 or body.get("status") != "success":
            raise CollectError(f"prometheus {self.address}: HTTP {r.status_code}: {body.get('error', body)}")
        out = {}
        for sample in body.get("data", {}).get("result", []):
            try:
                value = float(sample["value"][1])
            except (KeyError, IndexError, TypeError, ValueError):
                continue
            if math.isfinite(value):
                out[sample.get("metric", {}).get("pod", "")] = value
        return out

    def _rate(self, metric: str, sel: str) -> dict[str, float]:
        return self.vector(f"sum by (pod) (rate({metric}{sel}[{self.window}]))")

    def collect(self) -> FleetObservation:
        servers, problems = {}, []
        for spec in self.system.servers:
            sel = self.selectors[spec.name]
            m = VLLM
            done = self._rate(m["success"], sel)
            pods = sorted(set(self.vector(f"sum by (pod) ({m['running']}{sel})")) | set(done))
            arrived = self._rate(self.arrival_metric, sel) if self.arrival_metric else done
            ratios = {k: _ratio(self._rate(num, sel), done) for k, num in
                      (("in_tokens", m["prompt_tokens"]), ("out_tokens", m["generation_tokens"]))}
            lat = {k: _ratio(self._rate(m[k] + "_sum", sel), self._rate(m[k] + "_count", sel), 1000.0)
                   for k in ("ttft", "itl", "queue_time", "prefill_time")}
            engine_ttft = {p: q + lat["prefill_time"][p] for p, q in lat["queue_time"].items()
                           if p in lat["prefill_time"]}
            running = self.vector(f"sum by (pod) (avg_over_time({m['running']}{sel}[{self.window}]))")
            waiting = self.vector(f"sum by (pod) (avg_over_time({m['waiting']}{sel}[{self.window}]))")
            replicas = {}
            for pod in pods:
                reading = {"arrival_rate": arrived.get(pod), "throughput": done.get(pod),
                           "in_tokens": ratios["in_tokens"].get(pod), "out_tokens": ratios["out_tokens"].get(pod),
                           "itl": lat["itl"].get(pod), "ttft": lat["ttft"].get(pod),
                           "engine_ttft": engine_ttft.get(pod), "running": running.get(pod),
                           "waiting": waiting.get(pod)}
                replicas[pod] = {k: v for k, v in reading.items() if v is not None}
            if not pods:
                problems.append(f"{spec.name}: no vLLM series for {sel}")
            servers[spec.name] = ServerObservation(
                name=spec.name, model=spec.model, service_class=spec.class_name,
                accelerator=spec.current.accelerator, max_batch=spec.current.max_batch,
                replicas_ready=len(pods), arrival_rate=_sum(arrived, pods), throughput=_sum(done, pods),
                in_tokens=_weighted(ratios["in_tokens"], done), out_tokens=_weighted(ratios["out_tokens"], done),
                in_tokens_cv=self._cv(m["prompt_hist"], sel), out_tokens_cv=self._cv(m["generation_hist"], sel),
                itl=_weighted(lat["itl"], done), ttft=_weighted(lat["ttft"], done),
                engine_ttft=_weighted(engine_ttft, done),
                running=_sum(running, pods), waiting=_sum(waiting, pods), replicas=replicas)
        return FleetObservation(time=self.now, servers=servers, problems=tuple(problems))

    def _cv(self, histogram: str, sel: str) -> float | None:
        """Coefficient of variation of a token-count histogram over the window (bucket upper bounds; None if
        vLLM does not export it)."""
        q = f"sum by (le) (increase({histogram}_bucket{sel}[{self.window}]))"
        import httpx

        try:
            body = self.client.get("/api/v1/query", params={"query": q}).json()
        except (httpx.HTTPError, ValueError):
            return None
        points = []
        for sample in body.get("data", {}).get("result", []) if isinstance(body, dict) else []:
            try:
                points.append((float(sample["metric"]["le"]), float(sample["value"][1])))
            except (KeyError, IndexError, TypeError, ValueError):
                continue
        return histogram_cv(points)


def histogram_cv(points: list[tuple[float, float]]) -> float | None:
    """CV from cumulative buckets (upper bound, count), each bucket's mass at its midpoint (+Inf: last bound)."""
    points = sorted(points)
    finite = [(le, c) for le, c in points if math.isfinite(le)]
    if not finite or points[-1][1] <= 0:
        return None
    mids, masses, prev_le, prev_c = [], [], 0.0, 0.0
    for le, c in points:
        upper = le if math.isfinite(le) else finite[-1][0]
        mids.append((prev_le + upper) / 2.0 if math.isfinite(le) else upper)
        masses.append(max(c - prev_c, 0.0))
        prev_le, prev_c = upper, c
    total = sum(masses)
    mean = sum(m * w for m, w in zip(mids, masses)) / total
    var = sum(w * (m - mean) ** 2 for m, w in zip(mids, masses)) / total
    return math.sqrt(var) / mean if mean > 0 else None


def _ratio(num: Mapping[str, float], den: Mapping[str, float], scale: float = 1.0) -> dict[str, float]:
    return {k: scale * v / den[k] for k, v in num.items() if den.get(k, 0.0) > 0}


def _sum(values: Mapping[str, float], pods) -> float | None:
    got = [values[p] for p in pods if p in values]
    return float(sum(got)) if got else None


def _weighted(values: Mapping[str, float], weights: Mapping[str, float]) -> float | None:
    """Throughput-weighted mean over the pods that have a value (inferno's presence-aware aggregation)."""
    pairs = [(v, weights.get(p, 0.0)) for p, v in values.items()]
    total = sum(w for _, w in pairs)
    if total > 0:
        return sum(v * w for v, w in pairs) / total
    return sum(v for v, _ in pairs) / len(pairs) if pairs else None


def _low(d) -> dict:
    return {str(k).lower(): v for k, v in d.items()} if isinstance(d, Mapping) else {}


def _number(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


class InfernoCollector:
    """inferno's collector service: ``GET /collect`` gives ServerSpecs per deployment (``servers``) and per pod
    (``replicas``, named "<server>/<pod>"), and the Kubernetes objects (``kube-resources``) the actuator needs."""

    def __init__(self, url: str, *, timeout: float = 30.0, client=None, clock_fn=clock.time):
        self.url = url.rstrip("/")
        self.client = client or _http_client(url, timeout)
        self.clock = clock_fn
        self.kube_resources: dict = {}

    @property
    def now(self) -> float:
        return float(self.clock())

    def collect(self) -> FleetObservation:
        import httpx

        try:
            r = self.client.get("/collect")
            body = r.json()
        except httpx.HTTPError as exc:
            raise CollectError(f"collector {self.url}: {type(exc).__name__}: {exc}") from None
        except ValueError:
            raise CollectError(f"collector {self.url}: answer is not JSON (HTTP {r.status_code})") from None
        if r.status_code != 200 or not isinstance(body, Mapping):
            raise CollectError(f"collector {self.url}: HTTP {r.status_code}: {str(body)[:200]}")
        self.kube_resources = dict(body.get("kube-resources") or {})
        pods: dict[str, dict[str, dict]] = {}
        for spec in body.get("replicas") or []:
            s = _low(spec)
            server, _, pod = str(s.get("name", "")).partition("/")
            pods.setdefault(server, {})[pod or server] = _reading(s)
        servers, problems = {}, []
        for i, spec in enumerate(body.get("servers") or []):
            s = _low(spec)
            name = s.get("name")
            if not isinstance(name, str) or not name:
                problems.append(f"servers[{i}].name: missing")
                continue
            alloc = _low(s.get("currentalloc"))
            reading = _reading(s)
            reporting = {p: v for p, v in pods.get(name, {}).items() if v}
            want = int(_number(alloc.get("numreplicas")) or 0)
            servers[name] = ServerObservation(
                name=name, model=str(s.get("model", "")), service_class=str(s.get("class", "")),
                accelerator=str(alloc.get("accelerator", "")),
                max_batch=int(_number(alloc.get("maxbatch")) or _number(s.get("maxbatchsize")) or 0),
                replicas_ready=len(reporting) if reporting else want, replicas_starting=max(want - len(reporting), 0)
                if reporting else 0, replicas=reporting, **{k: reading.get(k) for k in (
                    "arrival_rate", "throughput", "in_tokens", "out_tokens", "itl", "ttft")})
        return FleetObservation(time=self.now, servers=servers, problems=tuple(problems))


def _reading(s: Mapping) -> dict[str, float]:
    """ServerSpec (keys lower-cased) -> observation fields in our units; only what is present and valid."""
    alloc = _low(s.get("currentalloc"))
    load = _low(alloc.get("load"))
    out = {"arrival_rate": _number(load.get("arrivalrate")), "throughput": _number(load.get("throughput")),
           "in_tokens": _number(load.get("avgintokens")), "out_tokens": _number(load.get("avgouttokens")),
           "itl": _number(alloc.get("itlaverage")), "ttft": _number(alloc.get("ttftaverage"))}
    for k in ("arrival_rate", "throughput"):
        if out[k] is not None:
            out[k] /= 60.0
    for k in ("itl", "ttft", "in_tokens", "out_tokens"):
        if out[k] is not None and out[k] <= 0:
            out[k] = None  # inferno writes 0 for "not measured"
    return {k: v for k, v in out.items() if v is not None}


class InfernoActuator:
    """inferno's actuator service: ``POST /update`` with the changed servers' allocations and only their
    Kubernetes objects (inferno's actuator zeroes every server it is given an object for but no allocation)."""

    def __init__(self, url: str, collector: InfernoCollector, system: System | None = None, *,
                 timeout: float = 30.0, client=None):
        self.url = url.rstrip("/")
        self.collector, self.system = collector, system
        self.client = client or _http_client(url, timeout)

    def actuate(self, targets: Mapping[str, Target]) -> dict[str, str]:
        import httpx

        known = {n: t for n, t in targets.items() if n in self.collector.kube_resources}
        done = {n: "failed: no Kubernetes object from the collector" for n in targets if n not in known}
        if not known:
            if done:
                raise ActuationError("; ".join(f"{k}: {v}" for k, v in done.items()))
            return done
        body = {"allocations": {n: self._allocation(n, t) for n, t in sorted(known.items())},
                "kube-resources": {n: self.collector.kube_resources[n] for n in sorted(known)}}
        try:
            r = self.client.post("/update", json=body)
        except httpx.HTTPError as exc:
            raise ActuationError(f"actuator {self.url}: {type(exc).__name__}: {exc}") from None
        if r.status_code != 200:
            raise ActuationError(f"actuator {self.url}: HTTP {r.status_code}: {r.text[:200]}")
        done.update({n: f"set {t.accelerator} x{t.replicas} batch {t.max_batch}" for n, t in known.items()})
        return done

    def _allocation(self, name: str, t: Target) -> dict:
        cost = 0.0
        if self.system is not None:
            acc = self.system.accelerator_by_name.get(t.accelerator)
            cost = (acc.cost if acc else 0.0) * t.replicas
        return {"accelerator": t.accelerator, "numReplicas": t.replicas, "maxBatch": t.max_batch, "cost": cost}
