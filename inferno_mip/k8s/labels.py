"""Deployment labels as inferno names them, and reading one managed Deployment from them.

A managed inference server is a Deployment labelled ``inferno.server.managed: "true"`` with its server name,
model and class (a missing class is ``Free``, as in inferno), its allocation (accelerator, max batch size) and,
optionally, its load (``rpm``, ``intokens``, ``outtokens``; inferno's older single ``numtokens`` label is read as
output tokens per request with no input tokens).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..spec import DEFAULT_CLASS

PREFIX = "inferno.server."
MANAGED = PREFIX + "managed"
NAME = PREFIX + "name"
MODEL = PREFIX + "model"
CLASS = PREFIX + "class"
ACCELERATOR = PREFIX + "allocation.accelerator"
MAX_BATCH = PREFIX + "allocation.maxbatchsize"
LOAD_RPM = PREFIX + "load.rpm"
LOAD_IN_TOKENS = PREFIX + "load.intokens"
LOAD_OUT_TOKENS = PREFIX + "load.outtokens"
LOAD_NUM_TOKENS = PREFIX + "load.numtokens"

MANAGED_SELECTOR = f"{MANAGED}=true"


@dataclass(frozen=True)
class LabelLoad:
    """Load as the labels state it: requests/second and tokens per request; None where a label is absent."""

    arrival_rate: float | None = None
    in_tokens: float | None = None
    out_tokens: float | None = None


@dataclass(frozen=True)
class ManagedDeployment:
    """One managed Deployment: where it is, which server it runs, its allocation and replica counts."""

    server: str
    namespace: str
    name: str
    model: str
    service_class: str
    accelerator: str
    max_batch: int
    desired: int
    ready: int
    match_labels: Mapping[str, str] = field(default_factory=dict)
    load: LabelLoad = LabelLoad()
    problems: tuple[str, ...] = ()
    source: object = field(default=None, compare=False, repr=False)  # the V1Deployment as listed

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


def read_deployment(dep) -> ManagedDeployment | str:
    """The ManagedDeployment of a ``V1Deployment``, or one line saying why it cannot be managed."""
    meta = dep.metadata
    ref = f"{meta.namespace}/{meta.name}"
    labels = dict(meta.labels or {})
    server = labels.get(NAME, "")
    if not server:
        return f"deployment {ref}: label {NAME} missing, not managed"
    model = labels.get(MODEL, "")
    if not model:
        return f"deployment {ref} (server {server}): label {MODEL} missing, not managed"
    problems: list[str] = []
    max_batch = _number(labels, MAX_BATCH, ref, problems, integer=True)
    rpm = _number(labels, LOAD_RPM, ref, problems)
    in_tokens = _number(labels, LOAD_IN_TOKENS, ref, problems)
    out_tokens = _number(labels, LOAD_OUT_TOKENS, ref, problems)
    if out_tokens is None and in_tokens is None:
        num_tokens = _number(labels, LOAD_NUM_TOKENS, ref, problems)
        if num_tokens is not None:  # inferno's older labels: one length, of the output
            in_tokens, out_tokens = 0.0, num_tokens
    spec, status = dep.spec, dep.status
    selector = (spec.selector.match_labels if spec and spec.selector else None) or {}
    return ManagedDeployment(
        server=server, namespace=meta.namespace, name=meta.name, model=model,
        service_class=labels.get(CLASS) or DEFAULT_CLASS, accelerator=labels.get(ACCELERATOR, ""),
        max_batch=int(max_batch or 0), desired=int(spec.replicas if spec and spec.replicas is not None else 1),
        ready=int((status.ready_replicas if status else None) or 0), match_labels=dict(selector),
        load=LabelLoad(None if rpm is None else rpm / 60.0, in_tokens, out_tokens), problems=tuple(problems),
        source=dep)


def _number(labels: Mapping[str, str], key: str, ref: str, problems: list[str], integer: bool = False) -> float | None:
    raw = labels.get(key)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        problems.append(f"deployment {ref}: label {key}={raw!r} is not a{'n integer' if integer else ' number'}, ignored")
        return None
    if not math.isfinite(value) or value < 0:
        problems.append(f"deployment {ref}: label {key}={raw!r} must be a finite number >= 0, ignored")
        return None
    return float(value)
