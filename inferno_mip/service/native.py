"""The native API: ``POST /v1/solve`` (scenario + solver options -> the project's Solution JSON), ``GET /v1/solvers``."""

from __future__ import annotations

import importlib.util

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from .context import ServiceContext
from .runner import SolveJob
from .schemas import ErrorBody, SolutionBody, SolveRequest, SolverInfo, SolversBody

__all__ = ["native_router", "solvers"]

SOLVERS = {  # name -> (module it needs, what it does)
    "highs": ("highspy", "the mixed-integer program handed to HiGHS as a sparse matrix (default)"),
    "cpsat": ("ortools", "the same program in OR-Tools CP-SAT"),
    "pyomo": ("pyomo", "the same program as a pyomo model (appsi HiGHS by default)"),
    "greedy": (None, "inferno's priority/regret greedy with its saturation policies (default with compat)"),
    "unlimited": (None, "each server on its best candidate, capacity ignored (default when unlimited)"),
}


def solvers() -> list[SolverInfo]:
    """The solver backends and whether this installation has what each needs."""
    return [SolverInfo(name=name, available=module is None or importlib.util.find_spec(module) is not None,
                       description=text) for name, (module, text) in SOLVERS.items()]


def native_router(ctx: ServiceContext) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["native"])

    @router.post("/solve", response_model=SolutionBody, summary="Solve a scenario",
                 responses={400: {"model": ErrorBody}, 422: {"model": ErrorBody}, 504: {"model": ErrorBody}})
    async def solve(body: SolveRequest):
        """Solve inferno's SystemData (the scenario JSON: arrival rates in requests/minute) with a solver and
        options, as ``inferno_mip.solve()`` does; answers the Solution JSON (statuses, reasons, gap, timings)."""
        system = {"system": body.model_dump(by_alias=True, exclude_unset=True)["system"]}
        options = body.options.model_dump(exclude_none=True)
        params = None if body.params is None else {k: v.model_dump() for k, v in body.params.items()}
        solution = await ctx.solve("v1/solve", SolveJob(system, body.solver, options, params))
        return JSONResponse(solution.to_dict())

    @router.get("/solvers", response_model=SolversBody, summary="Solver backends")
    async def list_solvers():
        return SolversBody(default="highs", solvers=solvers())

    return router
