"""The table behind inferno's stateful endpoints: accelerators, capacity, perf data, classes and servers.

Same semantics as inferno's ``core.System`` (add or replace by name, set calls never clear other entries,
``addModel`` replaces a model with an empty one, class priorities outside [1, 100] become 100), but every
read and write holds one lock, so a request never sees a half-applied update, and lists come out sorted by
name so answers are deterministic.
"""

from __future__ import annotations

import threading
from typing import Any

from ..spec import HIGHEST_PRIORITY, LOWEST_PRIORITY
from ..wire import (
    AcceleratorCount,
    AcceleratorSpec,
    AllocationData,
    ModelAcceleratorPerfData,
    ModelTarget,
    OptimizerSpec,
    ServerSpec,
    ServiceClassSpec,
    SystemSpec,
    wire_dict,
)

__all__ = ["InfernoState", "out"]


def out(model) -> dict[str, Any]:
    """A stored entity as inferno writes it: every field, optional format fields only when present."""
    return model.model_dump(by_alias=True, exclude_none=True)


def _priority(p: int) -> int:
    return p if HIGHEST_PRIORITY <= p <= LOWEST_PRIORITY else LOWEST_PRIORITY


class InfernoState:
    """inferno's system table, guarded by one lock."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.accelerators: dict[str, AcceleratorSpec] = {}
        self.capacity: dict[str, int] = {}
        self.models: dict[str, dict[str, ModelAcceleratorPerfData]] = {}
        self.classes: dict[str, tuple[int, dict[str, ModelTarget]]] = {}
        self.servers: dict[str, ServerSpec] = {}

    @classmethod
    def from_spec(cls, spec: SystemSpec) -> InfernoState:
        """A fresh table holding one SystemData (as inferno's /optimizeOne builds it)."""
        state = cls()
        for acc in (spec.accelerator_data.accelerators or []) if spec.accelerator_data else []:
            state.add_accelerator(acc)
        for count in (spec.capacity_data.count or []) if spec.capacity_data else []:
            state.set_capacity(count)
        state.set_models((spec.model_data.models or []) if spec.model_data else [])
        state.set_classes((spec.service_class_data.service_classes or []) if spec.service_class_data else [])
        for server in (spec.server_data.servers or []) if spec.server_data else []:
            state.add_server(server)
        return state

    # -- accelerators and capacity ---------------------------------------------------------------------------
    def add_accelerator(self, acc: AcceleratorSpec) -> None:
        with self._lock:
            self.accelerators[acc.name] = acc

    def remove_accelerator(self, name: str) -> AcceleratorSpec | None:
        with self._lock:
            return self.accelerators.pop(name, None)

    def set_capacity(self, count: AcceleratorCount) -> None:
        with self._lock:
            self.capacity[count.type] = count.count

    def remove_capacity(self, type_: str) -> int | None:
        with self._lock:
            return self.capacity.pop(type_, None)

    def capacities(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"type": t, "count": n} for t, n in sorted(self.capacity.items())]

    # -- models -----------------------------------------------------------------------------------------------
    def set_models(self, entries: list[ModelAcceleratorPerfData]) -> None:
        with self._lock:
            for pd in entries:
                self.models.setdefault(pd.name, {})[pd.acc] = pd

    def add_model(self, name: str) -> None:
        with self._lock:
            self.models[name] = {}

    def remove_model(self, name: str) -> bool:
        with self._lock:
            return self.models.pop(name, None) is not None

    def model_perf(self, name: str) -> list[dict[str, Any]] | None:
        with self._lock:
            perf = self.models.get(name)
            return None if perf is None else [out(p) for _, p in sorted(perf.items())]

    def add_perf(self, pd: ModelAcceleratorPerfData) -> bool:
        """Add perf data to an existing model; False if the model is unknown."""
        with self._lock:
            if pd.name not in self.models:
                return False
            self.models[pd.name][pd.acc] = pd
            return True

    def remove_perf(self, name: str, acc: str) -> ModelAcceleratorPerfData | None:
        with self._lock:
            return self.models.get(name, {}).pop(acc, None)

    # -- service classes --------------------------------------------------------------------------------------
    def set_classes(self, specs: list[ServiceClassSpec]) -> None:
        with self._lock:
            for spec in specs:
                self.classes[spec.name] = (_priority(spec.priority), {t.model: t for t in spec.model_targets or []})

    def add_class(self, name: str, priority: int) -> dict[str, Any]:
        with self._lock:
            self.classes[name] = (_priority(priority), {})
            return self.class_spec(name)

    def remove_class(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            spec = self.class_spec(name)
            self.classes.pop(name, None)
            return spec

    def class_spec(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            if name not in self.classes:
                return None
            priority, targets = self.classes[name]
            return {"name": name, "priority": priority,
                    "modelTargets": [_target(t, model) for model, t in sorted(targets.items())]}

    def update_targets(self, spec: ServiceClassSpec) -> tuple[int, Any]:
        """inferno's addServiceClassModelTargets: (status code, body)."""
        with self._lock:
            if spec.name not in self.classes:
                return 404, f"service class {spec.name} not found"
            priority, targets = self.classes[spec.name]
            if spec.priority != priority:
                return 400, f"inconsistent specs: svcName={spec.name} ; svcPrio={spec.priority}"
            for t in spec.model_targets or []:
                targets[t.model] = t
            return 200, self.class_spec(spec.name)

    def target(self, name: str, model: str, remove: bool = False) -> tuple[int, dict[str, Any]]:
        with self._lock:
            if name not in self.classes:
                return 404, {"message": f"service class {name} not found"}
            targets = self.classes[name][1]
            if model not in targets:
                return 404, {"message": f"model {model} not found"}
            t = targets.pop(model) if remove else targets[model]
            return 200, _target(t, model)

    # -- servers ----------------------------------------------------------------------------------------------
    def add_server(self, server: ServerSpec) -> None:
        with self._lock:
            self.servers[server.name] = server

    def remove_server(self, name: str) -> ServerSpec | None:
        with self._lock:
            return self.servers.pop(name, None)

    # -- optimisation -----------------------------------------------------------------------------------------
    def system_data(self, optimizer: OptimizerSpec) -> dict[str, Any]:
        """A snapshot as inferno's SystemData (for ``inferno_mip.io.parse_system``)."""
        with self._lock:
            classes = [self.class_spec(name) for name in sorted(self.classes)]
            return {"system": {
                "acceleratorData": {"accelerators": [wire_dict(a) for _, a in sorted(self.accelerators.items())]},
                "capacityData": {"count": self.capacities()},
                "modelData": {"models": [wire_dict(p) for _, perf in sorted(self.models.items())
                                         for _, p in sorted(perf.items())]},
                "serviceClassData": {"serviceClasses": classes},
                "serverData": {"servers": [wire_dict(s) for _, s in sorted(self.servers.items())]},
                "optimizerData": {"optimizer": wire_dict(optimizer)},
            }}

    def set_desired(self, allocations: dict[str, dict[str, Any]]) -> None:
        """Write an answer into the servers' desiredAlloc (servers removed meanwhile are skipped)."""
        with self._lock:
            for name, alloc in allocations.items():
                server = self.servers.get(name)
                if server is not None:
                    desired = AllocationData.model_validate(alloc)
                    self.servers[name] = server.model_copy(update={"desired_alloc": desired})

    def apply_desired(self) -> None:
        """inferno's applyAllocation: every server's currentAlloc (and so its load) := its desiredAlloc."""
        with self._lock:
            self.servers = {name: s.model_copy(update={"current_alloc": s.desired_alloc})
                            for name, s in self.servers.items()}


def _target(t: ModelTarget, model: str) -> dict[str, Any]:
    entry = {"model": model, "slo-itl": t.slo_itl, "slo-ttft": t.slo_ttft, "slo-tps": t.slo_tps}
    if t.slo_ttw is not None:  # G1 data
        entry["slo-ttw"] = t.slo_ttw
    return entry
