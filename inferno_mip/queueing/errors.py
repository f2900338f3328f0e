"""Exceptions raised by the queueing (performance) models."""

from __future__ import annotations


class QueueingError(ValueError):
    """Invalid input to, or failure of, a performance model."""


class InfeasibleTarget(QueueingError):
    """A latency target cannot be met at any request rate."""
