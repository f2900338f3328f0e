"""Exceptions of the model tuner."""

from __future__ import annotations


class TunerError(ValueError):
    """Bad tuner input (config, observation, state) or a failed tuner step; the message names the field."""


class ConfigError(TunerError):
    """A filter config file or value is invalid."""


class InvalidObservation(TunerError):
    """An observation cannot be used (NaN, negative, missing field, or the perf model cannot evaluate it)."""
