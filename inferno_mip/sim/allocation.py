"""Allocations to simulate, read from a solution file: the project's Solution JSON or inferno's AllocationSolution."""

from __future__ import annotations

import json
import math
import numbers
from pathlib import Path

from .errors import SimulationError, read_text


def load_allocation(path) -> dict[str, tuple[str, int, int]]:
    """{server: (accelerator, replicas, max batch)} from ``inferno-mip solve --format json`` output (``servers``
    list) or inferno's AllocationSolution (``allocations`` map; keys matched case-insensitively)."""
    path = Path(path)
    text = read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SimulationError(f"{path}: not valid JSON: {exc}") from None
    return parse_allocation(data, str(path))


def parse_allocation(data, source: str) -> dict[str, tuple[str, int, int]]:
    if not isinstance(data, dict):
        raise SimulationError(f"{source}: expected a JSON object with 'servers' or 'allocations'")
    keys = {k.lower(): k for k in data}
    if "servers" in keys and isinstance(data[keys["servers"]], list):
        return _from_solution(data[keys["servers"]], source)
    if "allocations" in keys and isinstance(data[keys["allocations"]], dict):
        return _from_inferno(data[keys["allocations"]], source)
    raise SimulationError(f"{source}: expected a Solution ('servers' list) or an AllocationSolution "
                          f"('allocations' object)")


def _from_solution(servers: list, source: str) -> dict[str, tuple[str, int, int]]:
    out = {}
    for i, entry in enumerate(servers):
        where = f"{source}: servers[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise SimulationError(f"{where}: expected an object with a name")
        name = entry["name"]
        placements = entry.get("placements") or []
        if len(placements) > 1:
            raise SimulationError(f"{where} ({name}): {len(placements)} placements; the simulator runs one "
                                  f"accelerator type per server")
        replicas = _count(entry.get("replicas", 0), f"{where} ({name}).replicas")
        batch = _count(entry.get("maxBatch", 0), f"{where} ({name}).maxBatch")
        out[name] = (str(entry.get("accelerator") or ""), replicas, batch) if replicas else ("", 0, 0)
    return out


def _from_inferno(allocations: dict, source: str) -> dict[str, tuple[str, int, int]]:
    out = {}
    for name, entry in allocations.items():
        where = f"{source}: allocations.{name}"
        if not isinstance(entry, dict):
            raise SimulationError(f"{where}: expected an object")
        low = {k.lower(): v for k, v in entry.items()}
        replicas = _count(low.get("numreplicas", 0), f"{where}.numReplicas")
        batch = _count(low.get("maxbatch", 0), f"{where}.maxBatch")
        out[str(name)] = (str(low.get("accelerator") or ""), replicas, batch) if replicas else ("", 0, 0)
    return out


def _count(value, where: str) -> int:
    if value is None:
        return 0
    if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0
            or value != int(value)):
        raise SimulationError(f"{where}: expected an integer >= 0, got {value!r}")
    return int(value)
