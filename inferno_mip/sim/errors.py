"""The simulator's one error type: bad input, named by field and value."""

from __future__ import annotations


class SimulationError(ValueError):
    """Input the simulator cannot run (names the field and the offending value)."""
