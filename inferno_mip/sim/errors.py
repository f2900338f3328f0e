"""The simulator's one error type: bad input, named by field and value."""

from __future__ import annotations

from pathlib import Path


class SimulationError(ValueError):
    """Input the simulator cannot run (names the field and the offending value)."""


def read_text(path: Path) -> str:
    """The file's text, or a SimulationError naming it."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SimulationError(f"{path}: cannot read: {exc.strerror or exc}") from None
