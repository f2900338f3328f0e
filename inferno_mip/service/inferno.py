"""inferno's optimizer REST API, wire-compatible: ``POST /optimizeOne`` (both modes), and in stateful mode the
set/get/add/remove endpoints of its system table, ``POST /optimize`` and ``GET /applyAllocation``.

Same paths, JSON field names, units (requests/minute) and status codes as inferno's Go server: a body that
does not bind is a 400, an unknown name a 404 ``{"message": ...}``. In its default mode every server is in
the answer with a status and reason (inferno's controller scales a missing server to zero); with ``compat``
the answer is inferno's: its greedy, Go's fields only, and 404 when any server gets no allocation.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ..solution import Solution
from ..wire import (
    AcceleratorCount,
    AcceleratorData,
    AcceleratorSpec,
    AllocationSolution,
    CapacityData,
    ModelAcceleratorPerfData,
    ModelData,
    OptimizerSpec,
    ServerData,
    ServerSpec,
    ServiceClassData,
    ServiceClassSpec,
    SystemData,
    wire_dict,
)
from .context import ApiError, ServiceContext
from .runner import SolveJob
from .schemas import ErrorBody
from .state import InfernoState, out

__all__ = ["allocation_solution", "inferno_router"]

ERRORS = {400: {"model": ErrorBody, "description": "the body does not bind, or the scenario is invalid"},
          404: {"model": ErrorBody, "description": "unknown name (or, with --compat, no feasible allocation)"}}


def allocation_solution(solution: Solution, servers: dict[str, ServerSpec], compat: bool) -> dict[str, Any]:
    """inferno's AllocationSolution: every server's allocation with its load echoed as sent.

    With `compat` a server left without replicas makes the whole answer inferno's 404 error.
    """
    if compat:
        unresolved = sorted(a.name for a in solution.allocations if a.replicas == 0)
        if unresolved:
            raise ApiError(404, f"optimization error: no feasible allocation for servers: [{', '.join(unresolved)}]")
    allocations = {}
    for a in solution.allocations:
        server = servers.get(a.name)
        load = out(server.current_alloc.load) if server is not None else {
            "arrivalRate": 0.0, "throughput": 0.0, "avgInTokens": 0, "avgOutTokens": 0}
        entry = {"accelerator": a.accelerator, "numReplicas": a.replicas, "maxBatch": a.max_batch, "cost": a.cost,
                 "itlAverage": a.itl, "ttftAverage": a.ttft, "load": load}
        if not compat:
            entry.update(status=a.status, reason=a.reason)
        allocations[a.name] = entry
    return {"allocations": allocations}


def _servers(spec) -> dict[str, ServerSpec]:
    return {s.name: s for s in (spec.server_data.servers or [])} if spec.server_data else {}


def _not_found(message: str) -> JSONResponse:
    return JSONResponse(status_code=404, content={"message": message})


def inferno_router(ctx: ServiceContext) -> APIRouter:
    """The routes of inferno's REST server for this app's mode."""
    router = APIRouter(tags=["inferno"], responses=ERRORS)
    compat = ctx.settings.compat

    async def optimize_table(table: InfernoState, optimizer: OptimizerSpec, endpoint: str) -> dict[str, Any]:
        data = table.system_data(optimizer)
        servers = dict(table.servers)  # as sent to the solve, for the load echo
        solution = await ctx.solve(endpoint, SolveJob(data, None, {"compat": compat}))
        answer = allocation_solution(solution, servers, compat)
        table.set_desired(answer["allocations"])
        return answer

    @router.post("/optimizeOne", response_model=AllocationSolution, summary="Optimize one SystemData")
    async def optimize_one(body: SystemData):
        """Solve a whole SystemData (arrival rates in requests/minute). Stateless: the table the GET endpoints
        read is replaced by this one. Stateful: the table is left alone."""
        solution = await ctx.solve("optimizeOne", SolveJob(wire_dict(body), None, {"compat": compat}))
        answer = allocation_solution(solution, _servers(body.system), compat)
        if not ctx.settings.stateful:
            table = InfernoState.from_spec(body.system)
            table.set_desired(answer["allocations"])
            ctx.table = table
        return JSONResponse(answer)

    _getters(router, ctx)
    if ctx.settings.stateful:
        _setters(router, ctx)

        @router.post("/optimize", response_model=AllocationSolution, summary="Optimize the table")
        async def optimize(body: OptimizerSpec):
            """Solve the table with these optimizer options (the flat OptimizerSpec, as inferno binds it); writes
            each server's desiredAlloc."""
            return JSONResponse(await optimize_table(ctx.table, body, "optimize"))

        @router.get("/applyAllocation", response_model=str, summary="desiredAlloc becomes currentAlloc")
        async def apply_allocation():
            ctx.table.apply_desired()
            return "Done"

    return router


def _getters(router: APIRouter, ctx: ServiceContext) -> None:
    """The read endpoints (inferno serves them in both modes)."""

    @router.get("/getAccelerators", response_model=list[AcceleratorSpec])
    async def get_accelerators():
        t = ctx.table
        return JSONResponse([out(a) for _, a in sorted(dict(t.accelerators).items())])

    @router.get("/getAccelerator/{name}", response_model=AcceleratorSpec)
    async def get_accelerator(name: str):
        acc = ctx.table.accelerators.get(name)
        return JSONResponse(out(acc)) if acc else _not_found(f"accelerator {name} not found")

    @router.get("/getCapacities", response_model=CapacityData)
    async def get_capacities():
        return JSONResponse({"count": ctx.table.capacities()})

    @router.get("/getCapacity/{type}", response_model=AcceleratorCount)
    async def get_capacity(type: str):
        n = ctx.table.capacity.get(type)
        return _not_found(f"capacity for {type} not found") if n is None else {"type": type, "count": n}

    @router.get("/getModels", response_model=list[str])
    async def get_models():
        return sorted(ctx.table.models)

    @router.get("/getModel/{name}", response_model=ModelData)
    async def get_model(name: str):
        perf = ctx.table.model_perf(name)
        return _not_found(f"model {name} not found") if perf is None else JSONResponse({"models": perf})

    @router.get("/getServiceClasses", response_model=ServiceClassData)
    async def get_service_classes():
        t = ctx.table
        return JSONResponse({"serviceClasses": [t.class_spec(n) for n in sorted(dict(t.classes))]})

    @router.get("/getServiceClass/{name}", response_model=ServiceClassSpec)
    async def get_service_class(name: str):
        spec = ctx.table.class_spec(name)
        return _not_found(f"service class {name} not found") if spec is None else JSONResponse(spec)

    @router.get("/getServiceClassModelTarget/{name}/{model}")
    async def get_target(name: str, model: str):
        code, body = ctx.table.target(name, model)
        return JSONResponse(status_code=code, content=body)

    @router.get("/getServers", response_model=ServerData)
    async def get_servers():
        return JSONResponse({"servers": [out(s) for _, s in sorted(dict(ctx.table.servers).items())]})

    @router.get("/getServer/{name}", response_model=ServerSpec)
    async def get_server(name: str):
        server = ctx.table.servers.get(name)
        return JSONResponse(out(server)) if server else _not_found(f"server {name} not found")

    @router.get("/getModelAcceleratorPerf/{name}/{acc}", response_model=ModelAcceleratorPerfData)
    async def get_perf(name: str, acc: str):
        perf = ctx.table.models.get(name)
        if perf is None:
            return _not_found(f"model {name} not found")
        pd = perf.get(acc)
        return JSONResponse(out(pd)) if pd else _not_found(f"accelerator {acc} not found")


def _setters(router: APIRouter, ctx: ServiceContext) -> None:
    """The write endpoints of inferno's stateful mode (each echoes what it set or removed)."""
    t = ctx.table

    @router.post("/setAccelerators", response_model=AcceleratorData)
    async def set_accelerators(body: AcceleratorData):
        for acc in body.accelerators or []:
            t.add_accelerator(acc)
        return JSONResponse(out(body))

    @router.post("/addAccelerator", response_model=AcceleratorSpec)
    async def add_accelerator(body: AcceleratorSpec):
        t.add_accelerator(body)
        return JSONResponse(out(body))

    @router.get("/removeAccelerator/{name}", response_model=AcceleratorSpec)
    async def remove_accelerator(name: str):
        acc = t.remove_accelerator(name)
        return JSONResponse(out(acc)) if acc else _not_found(f"accelerator {name} not found")

    @router.post("/setCapacities", response_model=CapacityData)
    async def set_capacities(body: CapacityData):
        for count in body.count or []:
            t.set_capacity(count)
        return JSONResponse(out(body))

    @router.post("/setCapacity", response_model=AcceleratorCount)
    async def set_capacity(body: AcceleratorCount):
        t.set_capacity(body)
        return JSONResponse(out(body))

    @router.get("/removeCapacity/{type}", response_model=AcceleratorCount)
    async def remove_capacity(type: str):
        n = t.remove_capacity(type)
        return _not_found(f"accelerator type {type} not found") if n is None else {"type": type, "count": n}

    @router.post("/setModels", response_model=ModelData)
    async def set_models(body: ModelData):
        t.set_models(body.models or [])
        return JSONResponse(out(body))

    @router.get("/addModel/{name}", response_model=str)
    async def add_model(name: str):
        t.add_model(name)
        return name

    @router.get("/removeModel/{name}", response_model=str)
    async def remove_model(name: str):
        return name if t.remove_model(name) else _not_found(f"model {name} not found")

    @router.post("/setServiceClasses", response_model=ServiceClassData)
    async def set_service_classes(body: ServiceClassData):
        t.set_classes(body.service_classes or [])
        return JSONResponse(out(body))

    @router.get("/addServiceClass/{name}/{priority}", response_model=ServiceClassSpec)
    async def add_service_class(name: str, priority: str):
        try:
            value = int(priority, 10)
        except ValueError:
            return JSONResponse(status_code=400, content={"message": f"service class priority {priority} invalid"})
        return JSONResponse(t.add_class(name, value))

    @router.get("/removeServiceClass/{name}", response_model=ServiceClassSpec)
    async def remove_service_class(name: str):
        spec = t.remove_class(name)
        return _not_found(f"service class {name} not found") if spec is None else JSONResponse(spec)

    @router.post("/addServiceClassModelTargets", response_model=ServiceClassSpec)
    async def add_targets(body: ServiceClassSpec):
        code, answer = t.update_targets(body)
        return JSONResponse(status_code=code, content=answer)

    @router.get("/removeServiceClassModelTarget/{name}/{model}")
    async def remove_target(name: str, model: str):
        code, body = t.target(name, model, remove=True)
        return JSONResponse(status_code=code, content=body)

    @router.post("/setServers", response_model=ServerData)
    async def set_servers(body: ServerData):
        for server in body.servers or []:
            t.add_server(server)
        return JSONResponse(out(body))

    @router.post("/addServer", response_model=ServerSpec)
    async def add_server(body: ServerSpec):
        t.add_server(body)
        return JSONResponse(out(body))

    @router.get("/removeServer/{name}", response_model=ServerSpec)
    async def remove_server(name: str):
        server = t.remove_server(name)
        return JSONResponse(out(server)) if server else _not_found(f"server {name} not found")

    @router.post("/addModelAcceleratorPerf", response_model=ModelAcceleratorPerfData)
    async def add_perf(body: ModelAcceleratorPerfData):
        if not t.add_perf(body):
            return _not_found(f"model {body.name} not found")
        return JSONResponse(out(body))

    @router.get("/removeModelAcceleratorPerf/{name}/{acc}", response_model=ModelAcceleratorPerfData)
    async def remove_perf(name: str, acc: str):
        if name not in t.models:
            return _not_found(f"model {name} not found")
        pd = t.remove_perf(name, acc)
        return JSONResponse(out(pd)) if pd else _not_found(f"accelerator {acc} not found")
