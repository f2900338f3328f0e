"""A client of the optimizer service: ``OptimizerClient(url).solve(system, ...)`` mirrors ``inferno_mip.solve()``.

The system travels as inferno's SystemData (requests/minute on the wire) to ``POST /v1/solve``; the answer is
the same :class:`Solution` a local solve gives (its timings are the server's). Bad input raises
:class:`ScenarioError` with the server's one-line message; an unreachable or failing service raises
:class:`OptimizerServiceError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from .api import reject_unknown_options
from .errors import ScenarioError
from .io import load_scenario, to_system_data
from .solution import ServerAllocation, Solution
from .spec import System

__all__ = ["OptimizerClient", "OptimizerServiceError"]

INERT_OPTIONS = frozenset({"milp_solver", "use_cplex"})  # read from scenarios, used by no backend


class OptimizerServiceError(RuntimeError):
    """The optimizer service could not be reached, timed out or failed (5xx)."""


class OptimizerClient:
    """Solves on a remote optimizer service (``inferno-mip serve-optimizer``)."""

    def __init__(self, base_url: str, timeout: float = 30.0):
        import httpx

        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def solve(self, system: System | Mapping | str | Path, solver: str | None = None, *,
              params: Mapping | None = None, **options) -> Solution:
        """As ``inferno_mip.solve(system, solver, params=..., **options)``, solved by the service."""
        reject_unknown_options(options)
        local = _as_system(system)
        body = _system_data(system, local)
        body["solver"] = solver
        body["options"] = {k: _wire(v) for k, v in options.items() if k not in INERT_OPTIONS and v is not None}
        if params:
            from .tuner.merging import normalize_params

            body["params"] = {f"{m}/{a}": p for (m, a), p in normalize_params(params).items()}
        solution = Solution.from_dict(self._post("/v1/solve", body))
        return _with_invalid(solution, local) if local is not None else solution

    def solvers(self) -> dict[str, Any]:
        """``GET /v1/solvers``: the backends, which are available and the default."""
        return self._get("/v1/solvers")

    def health(self) -> dict[str, Any]:
        return self._get("/healthz")

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OptimizerClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _post(self, path: str, body: dict) -> dict:
        return self._answer(lambda: self._http.post(path, json=body), path)

    def _get(self, path: str) -> dict:
        return self._answer(lambda: self._http.get(path), path)

    def _answer(self, call, path: str) -> dict:
        import httpx

        try:
            response = call()
        except httpx.HTTPError as exc:
            raise OptimizerServiceError(f"{self.base_url}{path}: {type(exc).__name__}: {exc}") from None
        if response.status_code == 200:
            return response.json()
        message = _message(response)
        if 400 <= response.status_code < 500 and response.status_code not in (404, 408, 413, 429):
            raise ScenarioError(self.base_url + path, "", message)
        raise OptimizerServiceError(f"{self.base_url}{path}: HTTP {response.status_code}: {message}")


def _wire(value):
    """An option value as JSON: dataclasses (``ChurnCosts``) as their fields."""
    from dataclasses import asdict, is_dataclass

    return asdict(value) if is_dataclass(value) and not isinstance(value, type) else value


def _as_system(system) -> System | None:
    if isinstance(system, System):
        return system
    if isinstance(system, (str, Path)):
        return load_scenario(system)
    if isinstance(system, Mapping):
        return None
    raise TypeError(f"solve() takes a System, a SystemData dict or a scenario path, not {type(system).__name__}")


def _system_data(system, local: System | None) -> dict:
    if local is not None:
        return to_system_data(local)
    data = dict(system)
    return data if any(str(k).lower() == "system" for k in data) else {"system": data}


def _with_invalid(solution: Solution, system: System) -> Solution:
    """Entries and issues of the servers the local read already rejected (they never reach the service)."""
    if not system.invalid_servers and not system.issues:
        return solution
    invalid = tuple(ServerAllocation(name=s.name, service_class="", model="", priority=0, status="invalid-input",
                                     reason=s.reason) for s in system.invalid_servers)
    local = tuple(map(str, system.issues))
    issues = local + tuple(i for i in solution.issues if i not in local)
    return replace(solution, allocations=tuple(sorted(solution.allocations + invalid, key=lambda a: a.name)),
                   issues=issues)


def _message(response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        return str(body.get("message") or body.get("detail") or body)
    return str(body)
