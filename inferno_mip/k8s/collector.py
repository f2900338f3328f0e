"""KubeCollector: the managed Deployments of a cluster as a FleetObservation.

Per Deployment: its labels as inferno names them, its desired replicas, and its pods: a pod serves when it is
running, ready and started at least ``startup_delay`` seconds ago (as inferno's ``INFERNO_STARTUP_DELAY``); other
live pods, and replicas wanted but not created yet, are starting. Pods are listed once per namespace; where that
is not allowed, the Deployments' ready counts stand in. Load and latency come from Prometheus where configured,
field by field, with the load labels as fallback.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from ..control.protocols import CollectError, FleetObservation, ServerObservation
from .kubeapi import REQUEST_TIMEOUT, api_errors, describe, list_managed
from .labels import ManagedDeployment
from .prometheus import PrometheusJoin, PrometheusReading


class KubeCollector:
    """Collect managed Deployments (optionally one namespace and an extra label selector)."""

    def __init__(self, api, namespace: str | None = None, selector: str = "", startup_delay: float = 0.0,
                 prometheus: PrometheusJoin | None = None, clock: Callable[[], float] = time.time):
        self.api, self.namespace, self.selector = api, namespace or None, selector
        self.startup_delay, self.prometheus, self.clock = float(startup_delay), prometheus, clock
        self.deployments: dict[str, ManagedDeployment] = {}  # of the last collect, by server name

    def collect(self) -> FleetObservation:
        now = self.clock()
        where = f"namespace {self.namespace}" if self.namespace else "all namespaces"
        try:
            listing = list_managed(self.api, self.namespace, self.selector)
        except api_errors() as exc:
            raise CollectError(describe(exc, f"list deployments in {where}")) from None
        problems = list(listing.problems)
        pods = self._pods({d.namespace for d in listing.deployments.values()}, problems)
        servers = {}
        for name, dep in listing.deployments.items():
            listed = pods.get(dep.namespace)
            if listed is None or not dep.match_labels:
                ready, starting = dep.ready, max(0, dep.desired - dep.ready)
            else:
                ready, starting = self._pod_counts(dep, listed, now)
            reading = self._prometheus(dep, problems)
            servers[name] = _observation(dep, ready, starting, reading)
        self.deployments = listing.deployments
        return FleetObservation(time=now, servers=servers, problems=tuple(problems))

    def _pods(self, namespaces: set[str], problems: list[str]) -> dict[str, list | None]:
        """The pods of each namespace (one call each); None where they cannot be listed."""
        from kubernetes import client

        core = client.CoreV1Api(self.api)
        out: dict[str, list | None] = {}
        for namespace in sorted(namespaces):
            try:
                out[namespace] = core.list_namespaced_pod(namespace, _request_timeout=REQUEST_TIMEOUT).items
            except api_errors() as exc:
                out[namespace] = None
                problems.append(describe(exc, f"list pods in namespace {namespace}")
                                + "; using the Deployments' ready counts")
        return out

    def _pod_counts(self, dep: ManagedDeployment, pods: list, now: float) -> tuple[int, int]:
        """(serving, starting) replicas of `dep` from the pods its selector matches."""
        ready = starting = 0
        for pod in pods:
            labels = pod.metadata.labels or {}
            if any(labels.get(k) != v for k, v in dep.match_labels.items()):
                continue
            if not _owned_by(pod, dep.name) or pod.metadata.deletion_timestamp is not None:
                continue
            phase = pod.status.phase if pod.status else None
            if phase in ("Succeeded", "Failed"):
                continue
            if phase == "Running" and _ready(pod) and _age(pod, now) >= self.startup_delay:
                ready += 1
            else:
                starting += 1
        # replicas wanted but not serving yet (pods not even created count too)
        return ready, max(starting, dep.desired - ready)

    def _prometheus(self, dep: ManagedDeployment, problems: list[str]) -> PrometheusReading:
        if self.prometheus is None:
            return PrometheusReading()
        reading = self.prometheus.read(dep.namespace, dep.name, dep.server)
        if reading.error:
            problems.append(f"prometheus for {dep.ref}: {reading.error}; using the load labels")
        return reading


def _observation(dep: ManagedDeployment, ready: int, starting: int, p: PrometheusReading) -> ServerObservation:
    def pick(measured, labelled):
        return measured if measured is not None else labelled

    return ServerObservation(
        name=dep.server, model=dep.model, service_class=dep.service_class, accelerator=dep.accelerator,
        max_batch=dep.max_batch, replicas_ready=ready, replicas_starting=starting,
        arrival_rate=pick(p.arrival_rate, dep.load.arrival_rate), throughput=p.throughput,
        in_tokens=pick(p.in_tokens, dep.load.in_tokens), out_tokens=pick(p.out_tokens, dep.load.out_tokens),
        itl=p.itl, ttft=p.ttft, engine_ttft=p.engine_ttft, running=p.running, waiting=p.waiting)


def _owned_by(pod, deployment: str) -> bool:
    """A pod matching the selector belongs to the Deployment unless a ReplicaSet of another one owns it."""
    owners = pod.metadata.owner_references or []
    sets = [o.name for o in owners if o.kind == "ReplicaSet"]
    return not sets or any(name.startswith(deployment + "-") for name in sets)


def _ready(pod) -> bool:
    conditions = (pod.status.conditions if pod.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def _age(pod, now: float) -> float:
    start = pod.status.start_time if pod.status else None
    if not isinstance(start, datetime):
        return 0.0
    return now - start.timestamp()
