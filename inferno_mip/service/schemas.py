"""Request and response bodies of the native API (``/v1``): a scenario plus solve options in, a Solution out."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..policies import BATCH_RULES, SATURATION_POLICIES
from ..queueing.versions import PERF_MODELS
from ..wire import SystemData


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ChurnOptions(_Body):
    """Costs of changing the current allocation (``inferno_mip.tables.ChurnCosts``), in the objective's unit."""

    replica_added: float = Field(0.0, ge=0)
    replica_removed: float = Field(0.0, ge=0)
    accelerator_change: float = Field(0.0, ge=0)
    batch_change: float = Field(0.0, ge=0)


class SolveOptions(_Body):
    """Options of ``inferno_mip.solve()``; absent means the default."""

    compat: bool | None = Field(None, description="reproduce inferno exactly (queue 10N, its perf models)")
    perf_model: Literal[PERF_MODELS] | None = None  # type: ignore[valid-type]  (every version solve() takes)
    batch_rule: Literal[BATCH_RULES] | None = None  # type: ignore[valid-type]
    queue_ratio: int | None = Field(None, ge=1, le=1000)
    max_num_tokens: int | None = Field(None, ge=1)
    saturation_policy: Literal[SATURATION_POLICIES] | None = None  # type: ignore[valid-type]
    delayed_best_effort: bool | None = None
    unlimited: bool | None = None
    heterogeneous: bool | None = None
    time_limit: float | None = Field(None, gt=0, description="seconds for the whole solve (capped by the server)")
    mip_gap: float | None = Field(None, ge=0, le=1)
    threads: int | None = Field(None, ge=1, le=256)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    warm_start: Literal["greedy", "current", "none"] | None = None
    best_effort: bool | None = None
    max_replica_change: int | None = Field(None, ge=0)
    churn: ChurnOptions | None = Field(None, description="churn costs: the optimum trades changes against cost")
    pyomo_solver: str | None = Field(None, min_length=1, max_length=64)
    speedups: str | None = Field(None, max_length=256, description="exact speed-ups: 'default', 'all', 'none' or "
                                 "comma-separated names (inferno_mip.models.lexicographic.SPEEDUPS)")


class PerfParams(_Body):
    alpha: float = Field(ge=0)
    beta: float = Field(ge=0)
    gamma: float = Field(ge=0)


class SolveRequest(SystemData):
    """inferno's SystemData (the scenario JSON), plus the solver, its options and tuned perf parameters."""

    solver: Literal["greedy", "highs", "cpsat", "pyomo", "unlimited"] | None = Field(
        None, description="default: unlimited if capacity is unlimited, greedy with compat, else highs")
    options: SolveOptions = SolveOptions()
    params: dict[str, PerfParams] | None = Field(
        None, description="tuned perf parameters by 'model/accelerator'; they replace the scenario's")


class _Sized(BaseModel):
    """Replicas on an accelerator and what they are predicted to do (shared by a server and its placements)."""

    accelerator: str
    acceleratorType: str
    replicas: int
    maxBatch: int
    maxQueue: int
    cost: float
    units: int
    maxRatePerReplica: float = Field(description="requests/second per replica within the SLOs")
    itl: float = Field(description="ms")
    ttft: float = Field(description="ms")
    rho: float


class PlacementBody(_Sized):
    rate: float = Field(description="requests/second routed to these replicas")


class ServerAllocationBody(_Sized):
    name: str
    serviceClass: str
    model: str
    priority: int
    status: str = Field(description="ok, best-effort, infeasible-SLO, no-perf-data, capacity-limited, zero-load, "
                                    "invalid-input")
    reason: str
    arrivalRate: float = Field(description="requests/second offered")
    totalRate: float
    servedRate: float
    itlTarget: float
    ttftTarget: float
    tpsTarget: float
    avgInTokens: float
    avgOutTokens: float
    binding: str
    placements: list[PlacementBody]


class SolutionBody(BaseModel):
    """``Solution.to_dict()``: totals, solver statistics and one entry per server."""

    solver: str
    status: str
    message: str
    totalCost: float
    objective: float | None
    bound: float | None
    gap: float | None
    unitsUsed: dict[str, int]
    capacity: dict[str, float | None] = Field(description="cards per accelerator type; null = unlimited")
    counts: dict[str, int]
    timings: dict[str, float]
    issues: list[str]
    servers: list[ServerAllocationBody]


class SolverInfo(BaseModel):
    name: str
    available: bool
    description: str


class SolversBody(BaseModel):
    default: str
    solvers: list[SolverInfo]


class Health(BaseModel):
    status: Literal["ok"]
    mode: Literal["stateless", "stateful"]
    compat: bool
    workers: int


class ErrorBody(BaseModel):
    message: str
