"""inferno's JSON types as pydantic models: the request and response bodies of its REST services.

They bind as Go's ``encoding/json`` does: keys match case-insensitively, unknown keys are ignored, missing
fields are absent (Go's zero values apply downstream), and a value of the wrong JSON type is rejected
(a string or a fraction where Go has an int, a string where it has a number). Values are checked further
where they are used (``inferno_mip.io`` for scenarios, ``inferno_mip.tuner.specs`` for observations), so
NaN is let through here. Bodies are handed on as ``model_dump(by_alias=True, exclude_unset=True)``, which
keeps the difference between an absent and a zero field.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "AcceleratorCount", "AcceleratorData", "AcceleratorSpec", "AllocationData", "AllocationSolution",
    "CapacityData", "ModelAcceleratorPerfData", "ModelData", "ModelTarget", "OptimizerData", "OptimizerSpec",
    "ServerData", "ServerLoadSpec", "ServerSpec", "ServiceClassData", "ServiceClassSpec", "SystemData",
    "SystemSpec", "WireModel", "describe_error", "wire_dict",
]


class WireModel(BaseModel):
    """Base of inferno's JSON types: Go's binding rules (see the module docstring)."""

    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True, allow_inf_nan=True)

    @model_validator(mode="before")
    @classmethod
    def _case_insensitive_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        names = _aliases(cls)
        return {names.get(str(k).lower(), k): v for k, v in data.items()}


@lru_cache(maxsize=None)
def _aliases(cls: type[BaseModel]) -> dict[str, str]:
    return {(f.alias or name).lower(): (f.alias or name) for name, f in cls.model_fields.items()}


def wire_dict(model: BaseModel) -> dict[str, Any]:
    """The JSON form of a bound body with only the keys that were sent, spelled as inferno spells them."""
    return model.model_dump(by_alias=True, exclude_unset=True)


def describe_error(exc: ValidationError | list[dict], root: str = "body") -> str:
    """One line naming the first invalid field and its value, e.g. ``system.serverData.servers[0].name: ...``."""
    errors = exc.errors() if isinstance(exc, ValidationError) else exc
    if not errors:
        return f"{root}: invalid"
    err = errors[0]
    path = root
    for part in err.get("loc", ()):
        if part == "body":
            continue
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    msg = str(err.get("msg", "invalid"))
    msg = msg[0].lower() + msg[1:] if msg else "invalid"
    if "input" in err and err.get("type") != "missing":
        shown = repr(err["input"])
        msg += f", got {shown if len(shown) <= 60 else shown[:57] + '...'}"
    return f"{path}: {msg}"


# ------------------------------------------------------------------------------------------------ accelerators

class PowerSpec(WireModel):
    idle: int = 0
    full: int = 0
    mid_power: int = Field(0, alias="midPower")
    mid_util: float = Field(0.0, alias="midUtil")


class AcceleratorSpec(WireModel):
    name: str = ""
    type: str = ""
    multiplicity: int = Field(0, description="cards of `type` per accelerator unit (inferno-mip: 1 when omitted)")
    mem_size: int = Field(0, alias="memSize", description="GB")
    mem_bw: int = Field(0, alias="memBW", description="GB/s")
    power: PowerSpec = PowerSpec()
    cost: float = Field(0.0, description="per accelerator unit per hour")


class AcceleratorData(WireModel):
    accelerators: list[AcceleratorSpec] | None = None


class AcceleratorCount(WireModel):
    type: str = ""
    count: int = 0


class CapacityData(WireModel):
    count: list[AcceleratorCount] | None = None


# ------------------------------------------------------------------------------------------------ models

class PerfParms(WireModel):
    """G3 perf parameters: iteration time = alpha + beta * computed tokens + gamma * transferred tokens (ms)."""

    alpha: float = 0.0
    beta: float = 0.0
    gamma: float = 0.0


class DecodeParms(WireModel):
    """G2 decode time = alpha + beta * batch (ms)."""

    alpha: float = 0.0
    beta: float = 0.0


class PrefillParms(WireModel):
    """G2 prefill time = gamma + delta * in tokens * batch (ms)."""

    gamma: float = 0.0
    delta: float = 0.0


class ModelAcceleratorPerfData(WireModel):
    name: str = ""
    acc: str = ""
    acc_count: int = Field(0, alias="accCount")
    max_batch_size: int = Field(0, alias="maxBatchSize")
    at_tokens: int = Field(0, alias="atTokens")
    perf_parms: PerfParms | None = Field(None, alias="perfParms")
    decode_parms: DecodeParms | None = Field(None, alias="decodeParms", description="G2 format")
    prefill_parms: PrefillParms | None = Field(None, alias="prefillParms", description="G2 format")
    alpha: float | None = Field(None, description="G1 format (flat decode alpha)")
    beta: float | None = Field(None, description="G1 format (flat decode beta)")


class ModelData(WireModel):
    models: list[ModelAcceleratorPerfData] | None = None


# ------------------------------------------------------------------------------------------------ classes

class ModelTarget(WireModel):
    model: str = ""
    slo_itl: float = Field(0.0, alias="slo-itl", description="ms")
    slo_ttft: float = Field(0.0, alias="slo-ttft", description="ms, queueing included")
    slo_tps: float = Field(0.0, alias="slo-tps", description="tokens/s")
    slo_ttw: float | None = Field(None, alias="slo-ttw", description="G1 time to wait (ms), read as the TTFT target")


class ServiceClassSpec(WireModel):
    name: str = ""
    priority: int = Field(0, description="1 (highest) to 100; other values become 100")
    model_targets: list[ModelTarget] | None = Field(None, alias="modelTargets")
    model: str | None = Field(None, description="G1 flat form: one entry per (class, model)")
    slo_itl: float | None = Field(None, alias="slo-itl", description="G1 flat form")
    slo_ttft: float | None = Field(None, alias="slo-ttft", description="G1 flat form")
    slo_tps: float | None = Field(None, alias="slo-tps", description="G1 flat form")
    slo_ttw: float | None = Field(None, alias="slo-ttw", description="G1 flat form")


class ServiceClassData(WireModel):
    service_classes: list[ServiceClassSpec] | None = Field(None, alias="serviceClasses")


# ------------------------------------------------------------------------------------------------ servers

class ServerLoadSpec(WireModel):
    arrival_rate: float = Field(0.0, alias="arrivalRate", description="offered load, requests/minute")
    throughput: float = Field(0.0, description="goodput, requests/minute (carried through, unused)")
    avg_in_tokens: int = Field(0, alias="avgInTokens")
    avg_out_tokens: int = Field(0, alias="avgOutTokens")


class AllocationData(WireModel):
    accelerator: str = ""
    num_replicas: int = Field(0, alias="numReplicas")
    max_batch: int = Field(0, alias="maxBatch")
    cost: float = 0.0
    itl_average: float = Field(0.0, alias="itlAverage", description="ms")
    ttft_average: float = Field(0.0, alias="ttftAverage", description="ms")
    avg_concurrency: float | None = Field(None, alias="avgConcurrency")
    load: ServerLoadSpec = ServerLoadSpec()


class ServerSpec(WireModel):
    name: str = ""
    class_name: str = Field("", alias="class")
    model: str = ""
    keep_accelerator: bool = Field(False, alias="keepAccelerator")
    min_num_replicas: int = Field(0, alias="minNumReplicas")
    max_batch_size: int = Field(0, alias="maxBatchSize")
    max_queue_size: int = Field(0, alias="maxQueueSize")
    current_alloc: AllocationData = Field(AllocationData(), alias="currentAlloc")
    desired_alloc: AllocationData = Field(AllocationData(), alias="desiredAlloc")


class ServerData(WireModel):
    servers: list[ServerSpec] | None = None


# ------------------------------------------------------------------------------------------------ system

class OptimizerSpec(WireModel):
    unlimited: bool = False
    heterogeneous: bool = False
    milp_solver: bool = Field(False, alias="milpSolver")
    use_cplex: bool = Field(False, alias="useCplex")
    delayed_best_effort: bool = Field(False, alias="delayedBestEffort")
    saturation_policy: str = Field("", alias="saturationPolicy",
                                   description="None, PriorityExhaustive, PriorityRoundRobin or RoundRobin")


class OptimizerData(WireModel):
    optimizer: OptimizerSpec = OptimizerSpec()


class SystemSpec(WireModel):
    accelerator_data: AcceleratorData | None = Field(None, alias="acceleratorData")
    model_data: ModelData | None = Field(None, alias="modelData")
    service_class_data: ServiceClassData | None = Field(None, alias="serviceClassData")
    server_data: ServerData | None = Field(None, alias="serverData")
    optimizer_data: OptimizerData | None = Field(None, alias="optimizerData")
    capacity_data: CapacityData | None = Field(None, alias="capacityData")


class SystemData(WireModel):
    system: SystemSpec


class AllocationResult(AllocationData):
    """inferno's AllocationData plus why: the status and reason of the server (extra fields Go ignores)."""

    status: str = ""
    reason: str = ""


class AllocationSolution(WireModel):
    allocations: dict[str, AllocationResult] = Field(default_factory=dict)
