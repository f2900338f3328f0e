"""Reading inferno scenarios (JSON or YAML; a folder of six files or one system file).

inferno decodes JSON with Go's ``encoding/json``: keys match case-insensitively, missing fields are zero values.
We do the same, but reject what Go would silently misread (NaN, negative rates, wrong types) with a
:class:`ScenarioError` naming the file, the field and the value. A bad server entry does not stop the others:
it becomes an :class:`InvalidServer` with the reason, and the solve goes on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from .errors import InputIssue, ScenarioError
from .spec import (
    SATURATION_POLICIES,
    Accelerator,
    CurrentAllocation,
    InvalidServer,
    Load,
    ModelTarget,
    OptimizerOptions,
    PerfData,
    Server,
    ServiceClass,
    System,
    reference_problem,
)

SECTIONS = {  # system-data key -> file stem of the six-file layout
    "acceleratordata": "accelerator-data",
    "capacitydata": "capacity-data",
    "modeldata": "model-data",
    "serviceclassdata": "serviceclass-data",
    "serverdata": "server-data",
    "optimizerdata": "optimizer-data",
}
REQUIRED_SECTIONS = ("acceleratordata", "modeldata", "serviceclassdata", "serverdata")
SUFFIXES = (".json", ".yaml", ".yml")
SYSTEM_STEM = "system-data"

# JSON key (as inferno spells it; matched case-insensitively) -> spec field, per entity. Keys listed in IGNORED are read by inferno but unused by it.
ACCELERATOR_KEYS = {"name": "name", "type": "type", "multiplicity": "multiplicity", "cost": "cost",
                    "memSize": "mem_size", "memBW": "mem_bw"}
PERF_KEYS = {"name": "model", "acc": "accelerator", "accCount": "acc_count", "maxBatchSize": "max_batch_size",
             "atTokens": "at_tokens"}
TARGET_KEYS = {"model": "model", "slo-itl": "itl", "slo-ttft": "ttft", "slo-tps": "tps"}
SERVER_KEYS = {"name": "name", "class": "class_name", "model": "model", "keepAccelerator": "keep_accelerator",
               "minNumReplicas": "min_num_replicas", "maxBatchSize": "max_batch_size",
               "maxQueueSize": "max_queue_size"}
ALLOC_KEYS = {"accelerator": "accelerator", "numReplicas": "num_replicas", "maxBatch": "max_batch", "cost": "cost"}
LOAD_KEYS = {"arrivalRate": "arrival_rate", "avgInTokens": "avg_in_tokens", "avgOutTokens": "avg_out_tokens",
             "inTokensCV": "in_tokens_cv", "outTokensCV": "out_tokens_cv"}  # the CVs are optional (not inferno's)
OPTIMIZER_KEYS = {"unlimited": "unlimited", "heterogeneous": "heterogeneous", "milpSolver": "milp_solver",
                  "useCplex": "use_cplex", "delayedBestEffort": "delayed_best_effort",
                  "saturationPolicy": "saturation_policy"}
IGNORED = {"power", "itlaverage", "ttftaverage", "rho", "throughput", "desiredalloc", "load", "currentalloc",
           "modeltargets", "decodeparms", "prefillparms", "perfparms", "alpha", "beta", "slo-ttw", "priority"}


def load_scenario(path: str | Path) -> System:
    """Load a scenario: a folder of inferno's six files, or one ``system-data`` file (JSON or YAML)."""
    path = Path(path)
    if not path.exists():
        raise ScenarioError(str(path), "", "no such file or folder")
    if path.is_dir():
        sections, files = _read_folder(path)
    else:
        sections, files = _read_system_file(path)
    return _build_system(sections, files, source=str(path))


def parse_system(data: dict[str, Any], source: str = "<system>") -> System:
    """Build a System from inferno's ``SystemData`` as a Python dict (``{"system": {...}}`` or its content)."""
    data = _lower_keys(data)
    if not isinstance(data, dict):
        raise ScenarioError(source, "", "expected a JSON object")
    sections = data.get("system", data)
    if not isinstance(sections, dict):
        raise ScenarioError(source, "system", "expected an object")
    return _build_system(sections, {key: source for key in SECTIONS}, source=source)


# ----------------------------------------------------------------------------------------------- files

def _read_folder(folder: Path) -> tuple[dict[str, Any], dict[str, str]]:
    found = {key: _find(folder, stem) for key, stem in SECTIONS.items()}
    if all(found[key] for key in REQUIRED_SECTIONS):
        sections, files = {}, {}
        for key, file in found.items():
            if file is None:
                continue
            content = _read_file(file)
            if not isinstance(content, dict):
                raise ScenarioError(str(file), "", "expected an object at the top level")
            # Each file holds one section: {"accelerators": [...]} etc.
            sections[key], files[key] = content, str(file)
        return sections, files
    system_file = _find(folder, SYSTEM_STEM)
    if system_file is not None:
        return _read_system_file(system_file)
    missing = [SECTIONS[k] + ".json" for k in REQUIRED_SECTIONS if not found[k]]
    raise ScenarioError(str(folder), "", f"neither {SYSTEM_STEM}.json nor the files {', '.join(missing)} found")


def _read_system_file(file: Path) -> tuple[dict[str, Any], dict[str, str]]:
    content = _read_file(file)
    if not isinstance(content, dict) or not isinstance(content.get("system", content), dict):
        raise ScenarioError(str(file), "system", "expected an object")
    return content.get("system", content), {key: f"{file}" for key in SECTIONS}


def _find(folder: Path, stem: str) -> Path | None:
    for suffix in SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _read_file(file: Path) -> Any:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(str(file), "", f"cannot read: {exc}") from None
    if file.suffix in (".yaml", ".yml"):
        import yaml  # only YAML scenarios pay for it

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ScenarioError(str(file), "", f"malformed YAML: {exc}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ScenarioError(str(file), f"line {exc.lineno} column {exc.colno}",
                                f"malformed JSON: {exc.msg}") from None
    return _lower_keys(data)


def _lower_keys(data: Any) -> Any:
    """Go's encoding/json matches keys case-insensitively; we normalise to lower case once."""
    if isinstance(data, dict):
        return {str(k).lower(): _lower_keys(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_lower_keys(v) for v in data]
    return data


# ----------------------------------------------------------------------------------------------- entities

class _Reader:
    """Builds entities from one file's lower-cased JSON, collecting warnings and naming fields in errors."""

    def __init__(self, file: str, issues: list[InputIssue]):
        self.file = file
        self.issues = issues

    def fields(self, raw: Any, keys: dict[str, str], where: str) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise ScenarioError(self.file, where, f"expected an object, got {_show(raw)}")
        known = {key.lower() for key in keys} | IGNORED
        for key in raw:
            if key not in known:
                self.issues.append(InputIssue(self.file, f"{where}.{key}", "unknown field, ignored"))
        return {field: raw[key.lower()] for key, field in keys.items() if raw.get(key.lower()) is not None}

    def build(self, cls: type[BaseModel], data: dict[str, Any], keys: dict[str, str], where: str):
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            json_name = {field: key for key, field in keys.items()}
            loc = [json_name.get(str(part), str(part)) for part in err["loc"]]
            field = ".".join([where, *loc]) if loc else where
            raise ScenarioError(self.file, field, f"{_message(err)}, got {_show(err.get('input'))}") from None

    def items(self, section: Any, key: str) -> list[Any]:
        if not isinstance(section, dict):
            raise ScenarioError(self.file, "", f"expected an object with {key!r}, got {_show(section)}")
        items = section.get(key) or []
        if not isinstance(items, list):
            raise ScenarioError(self.file, key, f"expected a list, got {_show(items)}")
        return items


def _message(err: dict[str, Any]) -> str:
    msg = str(err["msg"])
    if err.get("type") == "finite_number":
        return "must be a finite number"
    return msg[0].lower() + msg[1:] if msg else "invalid"


def _show(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _unique(items: list[BaseModel], reader: _Reader, key: str, label: str) -> list[BaseModel]:
    """Go maps keep the last entry of a duplicated name; we do too, but say so."""
    by_name: dict[Any, BaseModel] = {}
    for item in items:
        name = getattr(item, key) if isinstance(key, str) else key(item)
        if name in by_name:
            reader.issues.append(InputIssue(reader.file, label, f"duplicate {name!r}: the last entry wins"))
        by_name[name] = item
    return list(by_name.values())


def _accelerators(section: Any, reader: _Reader) -> list[Accelerator]:
    out = []
    for i, raw in enumerate(reader.items(section, "accelerators")):
        where = f"accelerators[{i}]"
        data = reader.fields(raw, ACCELERATOR_KEYS, where)
        out.append(reader.build(Accelerator, data, ACCELERATOR_KEYS, where))
    return _unique(out, reader, "name", "accelerators")


def _capacity(section: Any, reader: _Reader) -> dict[str, int]:
    capacity: dict[str, int] = {}
    for i, raw in enumerate(reader.items(section, "count")):
        where = f"count[{i}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("type"), str) or not raw["type"]:
            raise ScenarioError(reader.file, f"{where}.type", f"expected an accelerator type name, got {_show(raw)}")
        count = raw.get("count", 0)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ScenarioError(reader.file, f"{where}.count", f"expected a non-negative integer, got {_show(count)}")
        if raw["type"] in capacity:
            reader.issues.append(InputIssue(reader.file, where, f"duplicate type {raw['type']!r}: the last entry wins"))
        capacity[raw["type"]] = count
    return capacity


def _perf(section: Any, reader: _Reader) -> list[PerfData]:
    out = []
    for i, raw in enumerate(reader.items(section, "models")):
        where = f"models[{i}]"
        data = reader.fields(raw, PERF_KEYS, where)
        data.update(_perf_params(raw, reader, where))
        out.append(reader.build(PerfData, data, PERF_KEYS, where))
    return _unique(out, reader, lambda p: (p.model, p.accelerator), "models")


def _perf_params(raw: dict[str, Any], reader: _Reader, where: str) -> dict[str, Any]:
    """The three format generations of perf parameters (spec optimizer.md §1.5)."""
    def sub(key: str, names: tuple[str, ...]) -> dict[str, Any]:
        block = raw.get(key)
        if not isinstance(block, dict):
            raise ScenarioError(reader.file, f"{where}.{key}", f"expected an object, got {_show(block)}")
        return {name: block.get(name, 0.0) for name in names}

    if "perfparms" in raw:
        return {"generation": "G3", **sub("perfparms", ("alpha", "beta", "gamma"))}
    if "decodeparms" in raw or "prefillparms" in raw:
        params = sub("decodeparms", ("alpha", "beta"))
        prefill = sub("prefillparms", ("gamma", "delta")) if "prefillparms" in raw else {"gamma": 0.0, "delta": 0.0}
        return {"generation": "G2", **params, **prefill}
    if "alpha" in raw or "beta" in raw:
        return {"generation": "G1", "alpha": raw.get("alpha", 0.0), "beta": raw.get("beta", 0.0)}
    raise ScenarioError(reader.file, where, "no perf parameters (perfParms, decodeParms/prefillParms or alpha/beta)")


def _classes(section: Any, reader: _Reader) -> list[ServiceClass]:
    """Service classes; also the flat G1 form, one entry per (class, model) with slo-itl and slo-ttw."""
    merged: dict[str, dict[str, Any]] = {}
    for i, raw in enumerate(reader.items(section, "serviceclasses")):
        where = f"serviceClasses[{i}]"
        if not isinstance(raw, dict):
            raise ScenarioError(reader.file, where, f"expected an object, got {_show(raw)}")
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise ScenarioError(reader.file, f"{where}.name", f"expected a class name, got {_show(name)}")
        entry = merged.setdefault(name, {"name": name, "targets": {}})
        if "priority" in raw and raw["priority"] is not None:
            entry["priority"] = raw["priority"]
        flat = "model" in raw and "modeltargets" not in raw
        targets = [raw] if flat else raw.get("modeltargets") or []
        if not isinstance(targets, list):
            raise ScenarioError(reader.file, f"{where}.modelTargets", f"expected a list, got {_show(targets)}")
        for j, target in enumerate(targets):
            twhere = where if flat else f"{where}.modelTargets[{j}]"
            keys = {**TARGET_KEYS, "name": "_", "priority": "_"} if flat else TARGET_KEYS
            data = {k: v for k, v in reader.fields(target, keys, twhere).items() if k != "_"}
            if "slo-ttw" in target and "slo-ttft" not in target:
                # G1 "time to wait": with decode-only perf data TTFT = wait, so it is the TTFT target.
                data["ttft"] = target["slo-ttw"]
            model_target = reader.build(ModelTarget, data, TARGET_KEYS, twhere)
            if model_target.model in entry["targets"]:
                reader.issues.append(InputIssue(reader.file, twhere, f"duplicate target for {model_target.model!r}: the last wins"))
            entry["targets"][model_target.model] = model_target
    return [reader.build(ServiceClass, entry, {"priority": "priority"}, f"serviceClasses[{entry['name']}]")
            for entry in merged.values()]


def _server(raw: Any, reader: _Reader, where: str) -> Server:
    data = reader.fields(raw, SERVER_KEYS, where)
    alloc = raw.get("currentalloc") or {}
    awhere = f"{where}.currentAlloc"
    current = reader.fields(alloc, ALLOC_KEYS, awhere)
    load = reader.fields(alloc.get("load") or {}, LOAD_KEYS, f"{awhere}.load")
    load_model = reader.build(Load, load, LOAD_KEYS, f"{awhere}.load")
    # JSON arrival rates are requests/minute; inside everything is requests/second.
    data["load"] = load_model.model_copy(update={"arrival_rate": load_model.arrival_rate / 60.0})
    data["current"] = reader.build(CurrentAllocation, current, ALLOC_KEYS, awhere)
    return reader.build(Server, data, SERVER_KEYS, where)


def _optimizer(section: Any, reader: _Reader) -> OptimizerOptions:
    if not isinstance(section, dict):
        raise ScenarioError(reader.file, "", f"expected an object, got {_show(section)}")
    data = reader.fields(section.get("optimizer", section), OPTIMIZER_KEYS, "optimizer")
    policy = data.get("saturation_policy", "")
    if policy not in SATURATION_POLICIES:
        if policy != "":
            reader.issues.append(InputIssue(reader.file, "optimizer.saturationPolicy",
                                            f"unknown policy {policy!r}, using 'None' as inferno does "
                                            f"(known: {', '.join(SATURATION_POLICIES)})"))
        data["saturation_policy"] = "None"
    return reader.build(OptimizerOptions, data, OPTIMIZER_KEYS, "optimizer")


# ----------------------------------------------------------------------------------------------- system

def _build_system(sections: dict[str, Any], files: dict[str, str], source: str) -> System:
    for key in REQUIRED_SECTIONS:
        if key not in sections:
            raise ScenarioError(files.get(key, source), SECTIONS[key], "missing section")
    issues: list[InputIssue] = []
    reader = {key: _Reader(files.get(key, source), issues) for key in SECTIONS}

    accelerators = _accelerators(sections["acceleratordata"], reader["acceleratordata"])
    capacity = _capacity(sections["capacitydata"], reader["capacitydata"]) if "capacitydata" in sections else {}
    known = {a.name for a in accelerators}
    perf = []
    for p in _perf(sections["modeldata"], reader["modeldata"]):
        if p.accelerator in known:
            perf.append(p)
        else:
            issues.append(InputIssue(reader["modeldata"].file, "models",
                                     f"perf data of {p.model!r} on unknown accelerator {p.accelerator!r}, ignored"))
    classes = _classes(sections["serviceclassdata"], reader["serviceclassdata"])
    optimizer = (_optimizer(sections["optimizerdata"], reader["optimizerdata"])
                 if "optimizerdata" in sections else OptimizerOptions())

    servers, invalid = _servers(sections["serverdata"], reader["serverdata"])
    system = System(accelerators=tuple(sorted(accelerators, key=lambda a: a.name)), capacity=capacity,
                    perf=tuple(sorted(perf, key=lambda p: (p.model, p.accelerator))),
                    classes=tuple(sorted(classes, key=lambda c: c.name)), optimizer=optimizer, source=source)
    valid = []
    for index, server in servers:
        problem = reference_problem(server, system)
        if problem is None:
            valid.append(server)
        else:
            issue = InputIssue(reader["serverdata"].file, f"servers[{index}] ({server.name})", problem, server.name)
            issues.append(issue)
            invalid.append(InvalidServer(name=server.name, reason=str(issue)))
    if not optimizer.unlimited and "capacitydata" not in sections:
        issues.append(InputIssue(source, "capacityData", "missing: no accelerator is available (limited capacity)"))
    return system.replace(servers=tuple(sorted(valid, key=lambda s: s.name)),
                          invalid_servers=tuple(sorted(invalid, key=lambda s: s.name)), issues=tuple(issues))


def _servers(section: Any, reader: _Reader) -> tuple[list[tuple[int, Server]], list[InvalidServer]]:
    servers: dict[str, tuple[int, Server]] = {}
    invalid: list[InvalidServer] = []
    for i, raw in enumerate(reader.items(section, "servers")):
        name = raw.get("name") if isinstance(raw, dict) else None
        label = name if isinstance(name, str) and name else f"servers[{i}]"
        try:
            server = _server(raw, reader, f"servers[{i}]")
        except ScenarioError as exc:
            reader.issues.append(InputIssue(exc.file, exc.field, exc.message, label))
            invalid.append(InvalidServer(name=label, reason=str(exc)))
            continue
        if server.name in servers:
            reader.issues.append(InputIssue(reader.file, f"servers[{i}]", f"duplicate {server.name!r}: the last entry wins"))
        servers[server.name] = (i, server)
    return list(servers.values()), invalid


# ----------------------------------------------------------------------------------------------- writing

def go_int(value: float) -> int:
    """`value` as a JSON integer for a Go ``int`` field (the nearest one): Go's decoder rejects ``160.0``."""
    return int(round(value))


def to_system_data(system: System) -> dict[str, Any]:
    """inferno's SystemData for `system` (G3 perfParms, G2 decode/prefill or G1 flat perf data as read).

    Fields that are ``int`` in inferno's Go types are written as JSON integers (token counts rounded).
    """
    def perf(p: PerfData) -> dict[str, Any]:
        entry = {"name": p.model, "acc": p.accelerator, "accCount": p.acc_count, "maxBatchSize": p.max_batch_size,
                 "atTokens": p.at_tokens}
        if p.generation == "G3":
            entry["perfParms"] = {"alpha": p.alpha, "beta": p.beta, "gamma": p.gamma}
        elif p.generation == "G2":
            entry["decodeParms"] = {"alpha": p.alpha, "beta": p.beta}
            entry["prefillParms"] = {"gamma": p.gamma, "delta": p.delta}
        else:
            entry.update(alpha=p.alpha, beta=p.beta)
        return entry

    def load(s: Server) -> dict[str, Any]:
        out = {"arrivalRate": s.load.arrival_rate * 60.0, "avgInTokens": go_int(s.load.avg_in_tokens),
               "avgOutTokens": go_int(s.load.avg_out_tokens)}
        for key, value in (("inTokensCV", s.load.in_tokens_cv), ("outTokensCV", s.load.out_tokens_cv)):
            if value is not None:
                out[key] = value
        return out

    def server(s: Server) -> dict[str, Any]:
        cur = s.current
        return {"name": s.name, "class": s.class_name, "model": s.model, "keepAccelerator": s.keep_accelerator,
                "minNumReplicas": s.min_num_replicas, "maxBatchSize": s.max_batch_size,
                "maxQueueSize": s.max_queue_size,
                "currentAlloc": {"accelerator": cur.accelerator, "numReplicas": cur.num_replicas,
                                 "maxBatch": cur.max_batch, "cost": cur.cost, "load": load(s)}}

    o = system.optimizer
    return {"system": {
        "acceleratorData": {"accelerators": [
            {"name": a.name, "type": a.type, "multiplicity": a.multiplicity, "memSize": go_int(a.mem_size),
             "memBW": go_int(a.mem_bw), "cost": a.cost} for a in system.accelerators]},
        "capacityData": {"count": [{"type": t, "count": go_int(n)} for t, n in sorted(system.capacity.items())]},
        "modelData": {"models": [perf(p) for p in system.perf]},
        "serviceClassData": {"serviceClasses": [
            {"name": c.name, "priority": c.priority, "modelTargets": [
                {"model": t.model, "slo-itl": t.itl, "slo-ttft": t.ttft, "slo-tps": t.tps}
                for t in c.targets.values()]} for c in system.classes]},
        "serverData": {"servers": [server(s) for s in system.servers]},
        "optimizerData": {"optimizer": {
            "unlimited": o.unlimited, "heterogeneous": o.heterogeneous, "milpSolver": o.milp_solver,
            "useCplex": o.use_cplex, "delayedBestEffort": o.delayed_best_effort,
            "saturationPolicy": o.saturation_policy}},
    }}


def write_scenario(system: System, folder: str | Path, *, overwrite: bool = False) -> Path:
    """Write `system` as inferno's six files into `folder` (created if needed).

    An existing non-empty folder is refused with a ScenarioError unless `overwrite`.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ScenarioError(str(folder), "", "exists and is not a folder")
    if not overwrite and folder.is_dir() and any(folder.iterdir()):
        raise ScenarioError(str(folder), "", "folder exists and is not empty (use --force to overwrite)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ScenarioError(str(folder), "", f"cannot create the folder: {exc.strerror}") from None
    data = to_system_data(system)["system"]
    names = {"acceleratorData": "acceleratordata", "capacityData": "capacitydata", "modelData": "modeldata",
             "serviceClassData": "serviceclassdata", "serverData": "serverdata", "optimizerData": "optimizerdata"}
    for key, section in data.items():
        (folder / f"{SECTIONS[names[key]]}.json").write_text(json.dumps(section, indent=2) + "\n", encoding="utf-8")
    return folder
