"""Feed tuned parameters into solves: merge (model, accelerator) -> {alpha, beta, gamma} into perf data.

Works on a :class:`~inferno_mip.spec.System` (returns a new System whose matching perf entries become "G3"
with the tuned alpha/beta/gamma) or on inferno's model-data JSON (``{"models": [...]}``; replaces only
``perfParms`` and appends unmatched pairs as ``{accCount: 1, maxBatchSize: 256}``, as inferno's Merge).
"""

from __future__ import annotations

import copy
import math
from typing import Any, Mapping

from ..errors import InputIssue
from ..spec import PerfData, System
from .errors import TunerError

__all__ = ["merge", "normalize_params", "DEFAULT_MAX_BATCH"]

DEFAULT_MAX_BATCH = 256
_KEYS = ("alpha", "beta", "gamma")


def _split(key) -> tuple[str, str]:
    if isinstance(key, tuple) and len(key) == 2:
        return str(key[0]), str(key[1])
    if isinstance(key, str) and "/" in key:
        model, _, acc = key.rpartition("/")  # split on the last "/", as inferno
        return model, acc
    raise TunerError(f"params key: expected (model, accelerator) or 'model/accelerator', got {key!r}")


def normalize_params(params: Mapping) -> dict[tuple[str, str], dict[str, float]]:
    """Validate {(model, acc) or "model/acc": {alpha, beta, gamma}}; values finite and >= 0, not all 0."""
    if not isinstance(params, Mapping):
        raise TunerError(f"params: expected a mapping (model, accelerator) -> {{alpha, beta, gamma}}, "
                         f"got {type(params).__name__}")
    out = {}
    for key, val in params.items():
        model, acc = _split(key)
        if hasattr(val, "params") and callable(val.params):
            val = val.params()
        if not isinstance(val, Mapping):
            raise TunerError(f"params[{model}/{acc}]: expected {{alpha, beta, gamma}}, got {val!r}")
        low = {str(k).lower(): v for k, v in val.items()}
        p = {}
        for k in _KEYS:
            v = low.get(k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise TunerError(f"params[{model}/{acc}].{k}: expected a finite number >= 0, got {v!r}")
            p[k] = float(v)
        if not any(p.values()):
            raise TunerError(f"params[{model}/{acc}]: alpha, beta and gamma are all 0")
        out[(model, acc)] = p
    return out


def merge(target: System | Mapping[str, Any] | None, params: Mapping) -> System | dict:
    """Tuned parameters into a System or model-data dict (a new object; the input is not modified)."""
    tuned = normalize_params(params)
    if isinstance(target, System):
        return _merge_system(target, tuned)
    if target is None or isinstance(target, Mapping):
        return _merge_model_data(target or {}, tuned)
    raise TunerError(f"merge: expected a System or model-data dict, got {type(target).__name__}")


def _merge_system(system: System, tuned: dict) -> System:
    perf, seen = [], set()
    for p in system.perf:
        key = (p.model, p.accelerator)
        if key in tuned:
            seen.add(key)
            p = PerfData.model_validate({**p.model_dump(), "generation": "G3", "delta": 0.0, **tuned[key]})
        perf.append(p)
    known = system.accelerator_by_name
    issues = list(system.issues)
    for (model, acc), vals in sorted(tuned.items()):
        if (model, acc) in seen:
            continue
        if acc not in known:  # cannot be allocated: said, not silently dropped
            issues.append(InputIssue("tuned parameters", f"{model}/{acc}",
                                     f"accelerator {acc!r} is not in the scenario, ignored"))
            continue
        perf.append(PerfData(model=model, accelerator=acc, acc_count=1, max_batch_size=DEFAULT_MAX_BATCH,
                             generation="G3", **vals))
    return system.replace(perf=tuple(sorted(perf, key=lambda p: (p.model, p.accelerator))), issues=tuple(issues))


def _merge_model_data(data: Mapping, tuned: dict) -> dict:
    out = copy.deepcopy(dict(data))
    low = {str(k).lower(): k for k in out}
    mkey = low.get("models", "models")
    models = out.get(mkey) or []
    if not isinstance(models, list):
        raise TunerError(f"model data.models: expected a list, got {models!r}")
    out[mkey] = models
    seen = set()
    for i, entry in enumerate(models):
        if not isinstance(entry, dict):
            raise TunerError(f"model data.models[{i}]: expected an object, got {entry!r}")
        el = {str(k).lower(): k for k in entry}
        key = (str(entry.get(el.get("name", "name"), "")), str(entry.get(el.get("acc", "acc"), "")))
        if key in tuned:
            seen.add(key)
            entry[el.get("perfparms", "perfParms")] = dict(tuned[key])
    for (model, acc), vals in sorted(tuned.items()):
        if (model, acc) not in seen:
            models.append({"name": model, "acc": acc, "accCount": 1, "maxBatchSize": DEFAULT_MAX_BATCH,
                           "perfParms": dict(vals)})
    return out
