"""Prometheus metrics of one optimizer app (its own registry: two apps in one process never share counters)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..solution import Solution

__all__ = ["CONTENT_TYPE_LATEST", "OptimizerMetrics"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class OptimizerMetrics:
    """Solve latency, solves by solver and status, servers by status, requests by endpoint and code."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.solve_seconds = Histogram("inferno_mip_solve_seconds", "Wall time of a solve, queueing in the pool "
                                       "included", ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.solves = Counter("inferno_mip_solves", "Solves by solver and solver status",
                              ["solver", "status"], registry=self.registry)
        self.servers = Counter("inferno_mip_servers", "Server entries of answered solves by status",
                               ["status"], registry=self.registry)
        self.shared = Counter("inferno_mip_shared_solves", "Requests answered by an identical solve already "
                              "in flight", registry=self.registry)
        self.requests = Counter("inferno_mip_http_requests", "HTTP requests by route and status code",
                                ["route", "code"], registry=self.registry)

    def observe(self, endpoint: str, seconds: float, solution: Solution | None, failure: str = "",
                shared: bool = False) -> None:
        """Record one answer: its latency, and, unless it was `shared` (the answer of an identical solve already
        in flight, counted there), the solve's solver/status (or `failure`) and per-server statuses."""
        self.solve_seconds.labels(endpoint).observe(seconds)
        if shared:
            self.shared.inc()
            return
        if solution is None:
            self.solves.labels("", failure or "error").inc()
            return
        self.solves.labels(solution.solver, solution.status).inc()
        for status, n in solution.counts().items():
            self.servers.labels(status).inc(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)
