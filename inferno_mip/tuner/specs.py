"""inferno's ServerSpec JSON (optimizer-light) -> replica observations, with a reason for every rejection.

Keys match case-insensitively (Go encoding/json). ``arrivalRate`` is the offered load in requests/minute.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import InvalidObservation
from .observation import Observation
from .store import pair_key

__all__ = ["NO_TRAFFIC", "Replica", "parse_specs"]

NO_TRAFFIC = "no active traffic"


@dataclass(frozen=True)
class Replica:
    """One ServerSpec entry: its pair, its observation (None if unusable) and why not."""

    index: int
    name: str
    model: str
    accelerator: str
    arrival_rate: float  # RPM
    max_batch: int
    observation: Observation | None
    reason: str = ""

    @property
    def key(self) -> str:
        return pair_key(self.model, self.accelerator)


def _low(d: Any) -> dict:
    return {str(k).lower(): v for k, v in d.items()} if isinstance(d, Mapping) else {}


def _num(where: str, v: Any, default: float = 0.0) -> float:
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InvalidObservation(f"{where}: expected a number, got {v!r}")
    if not math.isfinite(v):
        raise InvalidObservation(f"{where}: must be finite, got {v!r}")
    return float(v)


def _one(i: int, raw: Any) -> Replica:
    where = f"specs[{i}]"
    s = _low(raw)
    name = str(s.get("name", "") or "")
    model = s.get("model")
    alloc = _low(s.get("currentalloc"))
    acc = alloc.get("accelerator")
    if not isinstance(raw, Mapping):
        return Replica(i, "", "", "", 0.0, 0, None, f"{where}: expected an object, got {raw!r}")
    if not isinstance(model, str) or not model:
        return Replica(i, name, "", "", 0.0, 0, None, f"{where}.model: missing or empty")
    if not isinstance(acc, str) or not acc:
        return Replica(i, name, model, "", 0.0, 0, None, f"{where}.currentAlloc.accelerator: missing or empty")
    load = _low(alloc.get("load"))
    try:
        rate = _num(f"{where}.currentAlloc.load.arrivalRate", load.get("arrivalrate"))
    except InvalidObservation as exc:
        return Replica(i, name, model, acc, 0.0, 0, None, str(exc))
    try:
        n_in = _num(f"{where}.currentAlloc.load.avgInTokens", load.get("avgintokens"))
        n_out = _num(f"{where}.currentAlloc.load.avgOutTokens", load.get("avgouttokens"))
        ttft = _num(f"{where}.currentAlloc.ttftAverage", alloc.get("ttftaverage"))
        itl = _num(f"{where}.currentAlloc.itlAverage", alloc.get("itlaverage"))
        mb = _num(f"{where}.maxBatchSize", s.get("maxbatchsize"))
        if mb <= 0:
            mb = _num(f"{where}.currentAlloc.maxBatch", alloc.get("maxbatch"))
        mq = _num(f"{where}.maxQueueSize", s.get("maxqueuesize"))
    except InvalidObservation as exc:
        return Replica(i, name, model, acc, rate, 0, None, str(exc))
    base = Replica(i, name, model, acc, rate, int(mb) if mb > 0 else 0, None)
    for field, v, path in (("avgInTokens", n_in, "load."), ("avgOutTokens", n_out, "load."),
                           ("ttftAverage", ttft, ""), ("itlAverage", itl, "")):
        if v <= 0:
            return _with(base, f"{where}.currentAlloc.{path}{field}: must be > 0, got {v!r}")
    if mb <= 0:
        return _with(base, f"{where}.maxBatchSize (or currentAlloc.maxBatch): must be > 0, got {mb!r}")
    if mq < 0 or mq != int(mq):
        return _with(base, f"{where}.maxQueueSize: must be an integer >= 0, got {mq!r}")
    if rate <= 0:
        return _with(base, f"{where}.currentAlloc.load.arrivalRate: {NO_TRAFFIC} ({rate!r})")
    try:
        obs = Observation(rpm=rate, in_tokens=n_in, out_tokens=n_out, max_batch=int(mb), max_queue=int(mq),
                          ttft=ttft, itl=itl).validate()
    except InvalidObservation as exc:
        return _with(base, f"{where}: {exc}")
    return Replica(i, name, model, acc, rate, int(mb), obs)


def _with(r: Replica, reason: str) -> Replica:
    return Replica(r.index, r.name, r.model, r.accelerator, r.arrival_rate, r.max_batch, None, reason)


def parse_specs(specs: Any) -> list[Replica]:
    """Parse a list of ServerSpec; never raises for bad entries (each gets a reason)."""
    if not isinstance(specs, list):
        raise InvalidObservation(f"request body: expected a JSON array of ServerSpec, got {type(specs).__name__}")
    return [_one(i, raw) for i, raw in enumerate(specs)]
