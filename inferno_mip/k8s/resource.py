"""The Optimizer custom resource: its spec (validated), its static data, and the status a cycle writes.

``spec.data`` holds inferno's SystemData sections inline (acceleratorData, modelData, serviceClassData,
capacityData, optimizerData); ``spec.dataFrom`` names ConfigMaps whose keys are inferno's file names
(``accelerator-data.json`` ..., or one ``system-data.json``; YAML too). Later ConfigMaps override earlier ones
section by section, and inline data overrides them all. Servers come from the cluster, never from the data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..api import SETTINGS_OPTIONS, SOLVER_OPTIONS, SYSTEM_OPTIONS
from ..io import SECTIONS, SYSTEM_STEM
from .cycle import CycleResult

GROUP = "inferno-mip.io"
VERSION = "v1alpha1"
PLURAL = "optimizers"
KIND = "Optimizer"
ALL_NAMESPACES = "*"
MAX_LISTED_PROBLEMS = 20
FILE_SECTIONS = {stem: key for key, stem in SECTIONS.items()}  # "model-data" -> "modeldata"


class SpecError(ValueError):
    """The resource's spec or its referenced data is unusable; the message names the field."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class ConfigMapRef(_Spec):
    name: str = Field(min_length=1, alias="configMapName")


class PrometheusSpec(_Spec):
    address: str = Field(min_length=1)
    selector: str = ""
    window: str = "1m"
    arrival_metric: str = Field(default="", alias="arrivalMetric")
    token_file: str = Field(default="", alias="tokenFile")


class OptimizerSpec(_Spec):
    period_seconds: float = Field(default=60.0, gt=0, alias="periodSeconds")
    min_interval_seconds: float = Field(default=10.0, ge=0, alias="minIntervalSeconds")
    namespace: str = ""
    selector: str = ""
    startup_delay_seconds: float = Field(default=0.0, ge=0, alias="startupDelaySeconds")
    dry_run: bool = Field(default=False, alias="dryRun")
    data: dict[str, Any] = Field(default_factory=dict)
    data_from: tuple[ConfigMapRef, ...] = Field(default=(), alias="dataFrom")
    solver: str | None = None
    solver_options: dict[str, Any] = Field(default_factory=dict, alias="solverOptions")
    prometheus: PrometheusSpec | None = None

    @field_validator("solver_options")
    @classmethod
    def _known_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        known = SETTINGS_OPTIONS | SYSTEM_OPTIONS | SOLVER_OPTIONS
        out = {}
        for key, v in value.items():
            name = _snake(key)
            if name not in known or name == "heterogeneous":
                raise ValueError(f"unknown option {key!r}; known: "
                                 f"{', '.join(sorted(_camel(k) for k in known - {'heterogeneous'}))}")
            out[name] = v
        return out

    def target_namespace(self, own: str) -> str | None:
        """Where the managed Deployments are: the resource's namespace by default, None for all."""
        if self.namespace == ALL_NAMESPACES:
            return None
        return self.namespace or own


def parse_spec(spec: Mapping | None, where: str) -> OptimizerSpec:
    try:
        return OptimizerSpec.model_validate(dict(spec or {}))
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise SpecError(f"{where}: spec.{field}: {err['msg']}") from None


def static_data(api, spec: OptimizerSpec, namespace: str, where: str) -> dict[str, Any]:
    """The SystemData sections from the referenced ConfigMaps (in order) and the inline data."""
    from kubernetes import client

    from .kubeapi import REQUEST_TIMEOUT, api_errors, describe

    sections: dict[str, Any] = {}
    for ref in spec.data_from:
        try:
            cm = client.CoreV1Api(api).read_namespaced_config_map(ref.name, namespace,
                                                                  _request_timeout=REQUEST_TIMEOUT)
        except api_errors() as exc:
            raise SpecError(describe(exc, f"{where}: read configmap {namespace}/{ref.name}")) from None
        sections.update(configmap_sections(cm.data or {}, f"configmap {namespace}/{ref.name}"))
    sections.update({k.lower(): v for k, v in spec.data.items()})
    return sections


def configmap_sections(data: Mapping[str, str], where: str) -> dict[str, Any]:
    """SystemData sections from ConfigMap keys named like inferno's files (JSON or YAML)."""
    out: dict[str, Any] = {}
    for key in sorted(data):
        stem, _, suffix = key.rpartition(".")
        if suffix not in ("json", "yaml", "yml") or (stem not in FILE_SECTIONS and stem != SYSTEM_STEM):
            continue
        try:
            content = yaml.safe_load(data[key])
        except yaml.YAMLError as exc:
            raise SpecError(f"{where}: key {key}: not JSON/YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(content, dict):
            raise SpecError(f"{where}: key {key}: expected an object")
        if stem == SYSTEM_STEM:
            out.update({k.lower(): v for k, v in content.get("system", content).items()})
        else:
            out[FILE_SECTIONS[stem]] = content
    return out


def status_body(result: CycleResult, generation: int | None, previous: Mapping | None) -> dict[str, Any]:
    """The status subresource after a cycle: allocation, per-server statuses, timings, conditions."""
    now = _now()
    collected = result.phase != "collect"
    solved = result.phase in ("done", "actuate")
    actuated = result.phase == "done" and not any(s.action.startswith(("failed", "gone")) for s in result.servers)
    conditions = [
        _condition("Collected", collected, "Collected" if collected else "CollectFailed",
                   "" if collected else result.message),
        _condition("Solved", solved, "Solved" if solved else
                   ("InvalidData" if result.phase == "data" else "NotSolved"),
                   result.solve_status if solved else result.message),
        _condition("Actuated", actuated, "Actuated" if actuated else "NotActuated",
                   "" if actuated else result.message or _failures(result)),
        _condition("Ready", result.ok, "CycleDone" if result.ok else "Held", result.message),
    ]
    body = {
        "observedGeneration": generation,
        "lastCycleTime": now,
        "phase": result.phase,
        "message": result.message,
        "solver": result.solver,
        "solveStatus": result.solve_status,
        "totalCost": result.total_cost,
        "timings": {k: round(v, 6) for k, v in result.timings.items()},
        "problems": list(result.problems[:MAX_LISTED_PROBLEMS]),
        "servers": [{"name": s.name, "status": s.status, "reason": s.reason, "action": s.action}
                    for s in result.servers],
        "conditions": _keep_transitions(conditions, (previous or {}).get("conditions") or [], now),
    }
    if solved:  # the last allocation stays until a new one is computed
        body["allocation"] = {s.name: {"accelerator": s.target.accelerator, "replicas": s.target.replicas,
                                       "maxBatch": s.target.max_batch, "cost": s.cost}
                              for s in result.servers if s.target is not None}
    return without_empty_strings(body)


def without_empty_strings(status: dict[str, Any]) -> dict[str, Any]:
    """Empty strings dropped: a top-level one becomes null (a merge patch deletes the field), nested ones go.

    Some API servers (seen on a v1.20 build) decode an empty string in a custom resource as null and then
    reject it as not a string.
    """
    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if v != ""}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return {k: (None if v == "" else clean(v)) for k, v in status.items()}


def invalid_status(message: str, generation: int | None, previous: Mapping | None) -> dict[str, Any]:
    now = _now()
    conditions = [_condition("Ready", False, "InvalidSpec", message)]
    return without_empty_strings({
        "observedGeneration": generation, "lastCycleTime": now, "phase": "spec", "message": message,
        "conditions": _keep_transitions(conditions, (previous or {}).get("conditions") or [], now)})


def _failures(result: CycleResult) -> str:
    bad = [f"{s.name}: {s.action}" for s in result.servers if s.action.startswith(("failed", "gone"))]
    return "; ".join(bad[:5])


def _condition(kind: str, ok: bool, reason: str, message: str) -> dict[str, str]:
    return {"type": kind, "status": "True" if ok else "False", "reason": reason, "message": message[:1000]}


def _keep_transitions(conditions: list[dict], previous: list[dict], now: str) -> list[dict]:
    """lastTransitionTime moves only when a condition's status changes."""
    before = {c.get("type"): c for c in previous if isinstance(c, dict)}
    for c in conditions:
        old = before.get(c["type"])
        same = old is not None and old.get("status") == c["status"] and old.get("lastTransitionTime")
        c["lastTransitionTime"] = old["lastTransitionTime"] if same else now
    return conditions


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.capitalize() for w in rest)
