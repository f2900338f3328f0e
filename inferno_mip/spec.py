"""Typed, validated data model of an allocation problem.

Units inside: rates in requests/second, times in milliseconds, token throughput in tokens/second,
cost per accelerator unit per hour. (inferno's JSON gives arrival rates in requests/minute; `inferno_mip.io`
converts.) Defaults are inferno's unless noted:

- accelerator ``multiplicity``: 1 when omitted (inferno decodes 0, which makes the accelerator consume no capacity);
- perf data ``accCount``: values <= 0 become 1 (as inferno);
- class ``priority``: values outside [1, 100], including 0 and omitted, become 100 (lowest, as inferno);
- server ``class``: "" becomes ``"Free"`` (as inferno).
"""

from __future__ import annotations

from functools import cached_property
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .errors import InputIssue
from .policies import SATURATION_POLICIES
from .queueing.limits import MAX_BATCH, MAX_QUEUE, MAX_TOKENS

# Resource guards: beyond these no real fleet exists, and sizing or the MIP would exhaust memory or overflow.
MAX_REPLICAS = 1_000_000  # replicas of one server, accelerator units per replica or card multiplicity
MAX_RATE = 1e9  # requests/second of one server
MAX_AMOUNT = 1e12  # costs per hour, TPS targets (tokens/s), perf parameters (ms)

DEFAULT_CLASS = "Free"
LOWEST_PRIORITY = 100
HIGHEST_PRIORITY = 1

SaturationPolicy = Literal["None", "PriorityExhaustive", "PriorityRoundRobin", "RoundRobin"]

Generation = Literal["G1", "G2", "G3"]
"""Perf-data format generation: G1 flat decode alpha/beta, G2 decodeParms/prefillParms, G3 perfParms."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Accelerator(_Frozen):
    name: str = Field(min_length=1)
    type: str = Field(min_length=1)
    multiplicity: int = Field(default=1, ge=0, le=MAX_REPLICAS)
    cost: float = Field(ge=0, le=MAX_AMOUNT)
    mem_size: float = 0.0
    mem_bw: float = 0.0


class PerfData(_Frozen):
    """Performance parameters of one model on one accelerator (per replica of ``acc_count`` units)."""

    model: str = Field(min_length=1)
    accelerator: str = Field(min_length=1)
    acc_count: int = Field(default=1, le=MAX_REPLICAS)
    max_batch_size: int = Field(default=0, ge=0, le=MAX_BATCH)
    at_tokens: int = Field(default=0, ge=0, le=MAX_TOKENS)
    generation: Generation
    alpha: float = Field(default=0.0, ge=0, le=MAX_AMOUNT)
    beta: float = Field(default=0.0, ge=0, le=MAX_AMOUNT)
    gamma: float = Field(default=0.0, ge=0, le=MAX_AMOUNT)
    delta: float = Field(default=0.0, ge=0, le=MAX_AMOUNT)

    @field_validator("acc_count")
    @classmethod
    def _at_least_one(cls, v: int) -> int:
        return v if v > 0 else 1

    @property
    def params(self) -> dict[str, float]:
        p = {"alpha": self.alpha, "beta": self.beta, "gamma": self.gamma}
        if self.generation != "G3":
            p["delta"] = self.delta
        return p


class ModelTarget(_Frozen):
    """SLO targets of a class for one model; 0 means not set."""

    model: str = Field(min_length=1)
    itl: float = Field(default=0.0, ge=0)
    ttft: float = Field(default=0.0, ge=0)
    tps: float = Field(default=0.0, ge=0, le=MAX_AMOUNT)


class ServiceClass(_Frozen):
    name: str = Field(min_length=1)
    priority: int = LOWEST_PRIORITY
    targets: dict[str, ModelTarget] = Field(default_factory=dict)

    @field_validator("priority")
    @classmethod
    def _clamp_priority(cls, v: int) -> int:
        return v if HIGHEST_PRIORITY <= v <= LOWEST_PRIORITY else LOWEST_PRIORITY


class Load(_Frozen):
    """A server's load. The token-count CVs (std/mean, optional) describe the length spread; None = not
    given, which the perf models read as equal lengths (work at the mean, as inferno assumes)."""

    arrival_rate: float = Field(default=0.0, ge=0, le=MAX_RATE, description="requests/second")
    avg_in_tokens: float = Field(default=0.0, ge=0, le=MAX_TOKENS)
    avg_out_tokens: float = Field(default=0.0, ge=0, le=MAX_TOKENS)
    in_tokens_cv: float | None = Field(default=None, ge=0)
    out_tokens_cv: float | None = Field(default=None, ge=0)


class CurrentAllocation(_Frozen):
    accelerator: str = ""
    num_replicas: int = Field(default=0, ge=0, le=MAX_REPLICAS)
    max_batch: int = Field(default=0, ge=0, le=MAX_BATCH)
    cost: float = Field(default=0.0, ge=0, le=MAX_AMOUNT)


class Server(_Frozen):
    name: str = Field(min_length=1)
    class_name: str = DEFAULT_CLASS
    model: str = Field(min_length=1)
    keep_accelerator: bool = False
    min_num_replicas: int = Field(default=0, ge=0, le=MAX_REPLICAS)
    max_batch_size: int = Field(default=0, ge=0, le=MAX_BATCH)
    max_queue_size: int = Field(default=0, ge=0, le=MAX_QUEUE)
    load: Load = Load()
    current: CurrentAllocation = CurrentAllocation()

    @field_validator("class_name")
    @classmethod
    def _default_class(cls, v: str) -> str:
        return v or DEFAULT_CLASS


class OptimizerOptions(_Frozen):
    unlimited: bool = False
    heterogeneous: bool = False
    milp_solver: bool = False
    use_cplex: bool = False
    delayed_best_effort: bool = False
    saturation_policy: SaturationPolicy = "None"


class InvalidServer(_Frozen):
    """A server entry that could not be used; it still gets an entry (status invalid-input) in every solution."""

    name: str
    reason: str


class System(BaseModel):
    """A whole allocation problem: accelerators, capacity, perf data, classes, servers and options."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    accelerators: tuple[Accelerator, ...] = ()
    capacity: dict[str, int] = Field(default_factory=dict)
    perf: tuple[PerfData, ...] = ()
    classes: tuple[ServiceClass, ...] = ()
    servers: tuple[Server, ...] = ()
    optimizer: OptimizerOptions = OptimizerOptions()
    invalid_servers: tuple[InvalidServer, ...] = ()
    issues: tuple[InputIssue, ...] = ()
    source: str = ""

    @cached_property
    def accelerator_by_name(self) -> dict[str, Accelerator]:
        return {a.name: a for a in self.accelerators}

    @cached_property
    def class_by_name(self) -> dict[str, ServiceClass]:
        return {c.name: c for c in self.classes}

    @cached_property
    def perf_by_key(self) -> dict[tuple[str, str], PerfData]:
        return {(p.model, p.accelerator): p for p in self.perf}

    @cached_property
    def models(self) -> frozenset[str]:
        return frozenset(p.model for p in self.perf)

    def target(self, server: Server) -> ModelTarget | None:
        """The SLO targets of `server`'s class for its model (None if either is not defined)."""
        cls = self.class_by_name.get(server.class_name)
        return cls.targets.get(server.model) if cls else None

    def replace(self, **fields) -> System:
        """A validated copy with some fields replaced (e.g. fresh server loads from a control loop)."""
        current = {name: getattr(self, name) for name in type(self).model_fields}
        return type(self).model_validate({**current, **fields})

    def with_options(self, **options) -> System:
        """The same system with some optimizer options replaced."""
        merged = {**self.optimizer.model_dump(), **options}
        return self.replace(optimizer=OptimizerOptions.model_validate(merged))


def reference_problem(server: Server, system: System) -> str | None:
    """Why `server` cannot be sized in `system` (unknown class, model or target), or None if it can."""
    cls = system.class_by_name.get(server.class_name)
    if cls is None:
        return f"class {server.class_name!r} is not defined"
    if server.model not in system.models:
        return f"model {server.model!r} has no perf data"
    if server.model not in cls.targets:
        return f"class {server.class_name!r} has no target for model {server.model!r}"
    return None
