"""What the stages of the control loop exchange, and the two stages that touch a fleet.

A collector reads a fleet (the simulator, Prometheus, inferno's collector service, Kubernetes) into a
:class:`FleetObservation`; an actuator applies :class:`Target` allocations to it. Units as everywhere inside:
requests/second and milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


class CollectError(RuntimeError):
    """The fleet could not be read (source down, unreadable answer); the loop holds its last allocation."""


class ActuationError(RuntimeError):
    """An allocation could not be applied (API down, permission denied, object gone)."""


@dataclass(frozen=True)
class Target:
    """The allocation one server should have: accelerator, replicas, max batch size."""

    accelerator: str
    replicas: int
    max_batch: int


@dataclass(frozen=True)
class ServerObservation:
    """One server as seen in one collection window; ``None`` means the source did not report it.

    ``arrival_rate`` is the offered load, ``throughput`` the completed request rate (both req/s); token
    counts are per request, with their coefficients of variation where the source has histograms; ``itl`` and
    ``ttft`` are window means in ms; ``running`` and ``waiting`` are request counts summed over replicas.
    ``engine_ttft`` (ms) is the engine core's part of TTFT, queue time plus prefill time, where the source has
    both: vLLM stamps ``ttft`` in its API server, so it also holds that process's own delay, which the perf model
    does not describe; the tuner fits the engine's figure when there is one.
    """

    name: str
    model: str
    service_class: str
    accelerator: str
    max_batch: int
    replicas_ready: int
    replicas_starting: int = 0
    arrival_rate: float | None = None
    throughput: float | None = None
    in_tokens: float | None = None
    out_tokens: float | None = None
    in_tokens_cv: float | None = None
    out_tokens_cv: float | None = None
    itl: float | None = None
    ttft: float | None = None
    engine_ttft: float | None = None
    running: float | None = None
    waiting: float | None = None
    # Per-replica readings (replica name -> observation fields), for the tuner; empty when not available.
    replicas: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Whether load and latency were both reported (a server missing them is held, never scaled to zero)."""
        return None not in (self.arrival_rate, self.in_tokens, self.out_tokens, self.itl, self.ttft)


@dataclass(frozen=True)
class FleetObservation:
    """Every managed server at one instant (seconds on the collector's clock), plus what went wrong reading it."""

    time: float
    servers: Mapping[str, ServerObservation]
    problems: tuple[str, ...] = ()


@runtime_checkable
class Collector(Protocol):
    def collect(self) -> FleetObservation:
        """Read the fleet now; raise :class:`CollectError` when it cannot be read at all."""
        ...


@runtime_checkable
class Actuator(Protocol):
    def actuate(self, targets: Mapping[str, Target]) -> Mapping[str, str]:
        """Apply the targets (server name -> Target); return server name -> what was done ("scaled 2->3",
        "unchanged", ...). Servers not named are left alone. Raise :class:`ActuationError` when nothing could be
        applied; a per-server failure is reported in the returned mapping and the others still applied."""
        ...


def slo_by_server(system) -> dict[str, tuple[float, float]]:
    """(ITL, TTFT) SLO in ms of every server of `system` by name; (0, 0) where its class sets no target."""
    out = {}
    for server in system.servers:
        target = system.target(server)
        out[server.name] = (target.itl, target.ttft) if target else (0.0, 0.0)
    return out
