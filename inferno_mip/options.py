"""Up-front checks of ``solve()`` options: a bad value is one clear ValueError before any sizing starts."""

from __future__ import annotations

import math
from collections.abc import Mapping

DEFAULT_TIME_LIMIT = 60.0  # seconds for the whole call, sizing included, when the caller gives none

_POSITIVE_INTS = ("threads", "max_num_tokens")
_NON_NEGATIVE_INTS = ("seed", "max_replica_change", "queue_ratio")


def check_options(options: Mapping) -> None:
    """Raise ValueError naming the option and value when a numeric ``solve()`` option is out of range."""
    if "time_limit" in options:
        _number("time_limit", options["time_limit"], low=0.0, finite=False)  # inf: no limit
    if "mip_gap" in options:
        _number("mip_gap", options["mip_gap"], low=0.0, high=1.0)
    for name in _POSITIVE_INTS:
        if options.get(name) is not None:
            _integer(name, options[name], low=1)
    for name in _NON_NEGATIVE_INTS:
        if options.get(name) is not None:
            _integer(name, options[name], low=0)


def _number(name: str, value, *, low: float, high: float = math.inf, finite: bool = True) -> None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a number, got {value!r}") from None
    if isinstance(value, bool) or math.isnan(x) or (finite and math.isinf(x)) or not low <= x <= high:
        bounds = f"in [{low:g}, {high:g}]" if math.isfinite(high) else f">= {low:g}"
        raise ValueError(f"{name}: must be a {'finite ' if finite else ''}number {bounds}, got {value!r}")


def _integer(name: str, value, *, low: int) -> None:
    whole = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value) and value.is_integer())
    if isinstance(value, bool) or not whole or value < low:
        raise ValueError(f"{name}: must be an integer >= {low}, got {value!r}")
