"""Seeded synthetic fleets in inferno's format: realistic accelerators, models, classes and heavy-tailed loads.

Perf parameters follow the shape of inferno's sample data (perfParms alpha/beta/gamma, G3): a 13B model on one
A100 has alpha 20.58 ms, beta 0.041 ms/token, gamma 0.00128 ms/token²; they scale with model size, accelerator
speed and tensor parallelism (with a 15 % loss per doubling). Capacity is a fraction of the demand (the cards
the unlimited optimum uses), spread over the types.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .spec import (
    Accelerator,
    Load,
    ModelTarget,
    OptimizerOptions,
    PerfData,
    Server,
    ServiceClass,
    System,
)


@dataclass(frozen=True)
class Family:
    type: str
    cost: float  # per card per hour
    memory: float  # GB per card
    speed: float  # relative to A100


FAMILIES = (
    Family("A100", 40.0, 80, 1.0), Family("H100", 75.0, 80, 2.0), Family("L4", 6.0, 24, 0.25),
    Family("MI300X", 65.0, 192, 1.8), Family("L40S", 32.0, 48, 0.5), Family("H200", 95.0, 141, 2.4),
    Family("MI250", 46.0, 128, 0.9), Family("Gaudi3", 45.0, 128, 1.4), Family("A10G", 10.0, 24, 0.3),
    Family("Gaudi2", 25.0, 96, 0.8),
)
MULTIPLICITIES = (1, 2, 4, 8)
MODELS = (("llama_1b", 1), ("llama_3b", 3), ("llama_8b", 8), ("granite_13b", 13), ("granite_34b", 34),
          ("mixtral_8x7b", 47), ("llama_70b", 70), ("llama_405b", 405))
CLASSES = (("Premium", 1, 2.0), ("Gold", 2, 3.0), ("Silver", 3, 4.0), ("Bronze", 4, 6.0), ("Free", 5, 8.0))
IN_TOKENS = (128, 256, 512, 1024, 2048)
OUT_TOKENS = (128, 256, 512, 1024)
TP_EFFICIENCY = 0.85  # per doubling of the cards a replica spans
MAX_CARDS_PER_REPLICA = 16


def generate(servers: int = 100, accelerators: int = 20, classes: int = 3, seed: int = 0,
             tightness: float | None = None, models: int | None = None) -> System:
    """A synthetic fleet. `tightness` None: unlimited capacity; else capacity = tightness × estimated demand."""
    if not 1 <= servers or not 1 <= accelerators <= len(FAMILIES) * len(MULTIPLICITIES):
        raise ValueError(f"servers >= 1 and 1 <= accelerators <= {len(FAMILIES) * len(MULTIPLICITIES)}")
    if not 1 <= classes <= len(CLASSES):
        raise ValueError(f"classes must be in 1..{len(CLASSES)}")
    if tightness is not None and not tightness > 0:
        raise ValueError(f"tightness must be > 0, got {tightness}")
    rng = np.random.default_rng(seed)
    accs = _accelerators(accelerators)
    chosen_models = MODELS[: models or len(MODELS)]
    perf = [p for name, size in chosen_models for a in accs if (p := _perf(name, size, a, _family(a))) is not None]
    covered = sorted({p.model for p in perf})
    service_classes = _classes(classes, covered, perf)
    fleet = _servers(servers, rng, service_classes, covered)
    system = System(accelerators=tuple(sorted(accs, key=lambda a: a.name)),
                    perf=tuple(sorted(perf, key=lambda p: (p.model, p.accelerator))),
                    classes=tuple(sorted(service_classes, key=lambda c: c.name)), servers=tuple(sorted(fleet, key=lambda s: s.name)),
                    optimizer=OptimizerOptions(unlimited=tightness is None, saturation_policy="PriorityRoundRobin"),
                    source=f"generated(servers={servers}, accelerators={accelerators}, classes={classes}, "
                           f"seed={seed}, tightness={tightness})")
    capacity = _capacity(system, tightness)
    return system.replace(capacity=capacity)


def _family(acc: Accelerator) -> Family:
    return next(f for f in FAMILIES if f.type == acc.type)


def _accelerators(count: int) -> list[Accelerator]:
    """The first `count` of (multiplicity, family) in a fixed order: singles of every family first."""
    out = []
    for mult in MULTIPLICITIES:
        for f in FAMILIES:
            if len(out) == count:
                return out
            name = f.type if mult == 1 else f"{mult}x{f.type}"
            out.append(Accelerator(name=name, type=f.type, multiplicity=mult, cost=f.cost * mult,
                                   mem_size=f.memory * mult))
    return out


def _perf(model: str, size: float, acc: Accelerator, family: Family) -> PerfData | None:
    weights = 2.0 * size * 1.2  # fp16 weights plus runtime overhead, GB
    acc_count = max(1, math.ceil(weights / (0.8 * acc.mem_size)))
    cards = acc_count * acc.multiplicity
    if cards > MAX_CARDS_PER_REPLICA:
        return None
    parallel = cards * TP_EFFICIENCY ** math.log2(cards)
    speed = family.speed * parallel
    scale = size / 13.0
    kv_per_token = 0.0008 * size ** 0.7  # GB of KV cache per token
    free = acc_count * acc.mem_size * 0.9 - weights
    max_batch = int(min(512, max(1, free / (kv_per_token * 512))))
    return PerfData(model=model, accelerator=acc.name, acc_count=acc_count, max_batch_size=max_batch, at_tokens=512,
                    generation="G3", alpha=round(20.58 * scale ** 0.5 / speed ** 0.5, 4),
                    beta=round(0.041 * scale / speed, 6), gamma=round(0.00128 * scale / speed, 8))


def _classes(count: int, models: list[str], perf: list[PerfData]) -> list[ServiceClass]:
    """SLOs relative to the fastest accelerator: a class with factor f allows f × its single-request ITL."""
    fastest = {m: min((p.alpha + p.beta * 512 for p in perf if p.model == m)) for m in models}
    out = []
    for name, priority, factor in CLASSES[:count]:
        targets = {m: ModelTarget(model=m, itl=round(factor * 1.5 * fastest[m], 1),
                                  ttft=round(factor * 20 * fastest[m], 1)) for m in models}
        out.append(ServiceClass(name=name, priority=priority, targets=targets))
    return out


def _servers(count: int, rng: np.random.Generator, classes: list[ServiceClass], models: list[str]) -> list[Server]:
    out = []
    width = len(str(count - 1))
    for i in range(count):
        cls = classes[int(rng.integers(len(classes)))]
        model = models[int(rng.integers(len(models)))]
        rpm = float(np.round(np.exp(rng.normal(math.log(30.0), 1.2)), 2))  # heavy-tailed, median 30 req/min
        load = Load(arrival_rate=max(rpm, 0.01) / 60.0, avg_in_tokens=float(rng.choice(IN_TOKENS)),
                    avg_out_tokens=float(rng.choice(OUT_TOKENS)))
        out.append(Server(name=f"{cls.name}-{model}-{i:0{width}d}", class_name=cls.name, model=model, load=load))
    return out


def _capacity(system: System, tightness: float | None) -> dict[str, int]:
    """Cards per type: tightness × (half this type's demand + half the mean demand per type).

    The demand of a type is the cards the unlimited optimum (every server on its cheapest candidate) puts on it.
    Unlimited (tightness None): twice each type's demand, recorded for reference.
    """
    from .tables import Settings, build_table  # sizing needs the perf models; only capacity needs it

    table = build_table(system.replace(optimizer=system.optimizer.model_copy(update={"unlimited": True})),
                        Settings())
    types = table.types
    _, first = np.unique(table.server, return_index=True)
    demand = np.bincount(table.type[first], weights=table.units[first], minlength=len(types))
    if tightness is None:
        return {t: int(math.ceil(2 * d)) for t, d in zip(types, demand)}
    mean = float(demand.mean())
    return {t: int(math.ceil(tightness * (0.5 * d + 0.5 * mean))) for t, d in zip(types, demand)}
