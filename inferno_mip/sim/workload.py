"""Workloads: per-server request rate over time and token lengths, read from YAML, seeded and reproducible.

```yaml
seed: 1
resolution: 1          # seconds: grid of the rate (optional)
servers:
  "Premium-granite_8b":
    rate:
      phases: [{for: 300, rpm: 60}, {for: 600, rpm: 300, ramp: true}, {for: 600, rpm: 300}]
      noise: {theta: 0.1, sigma: 0.1, interval: 30}   # optional, interval in seconds (default 30)
      # or diurnal: {mean_rpm: 120, amplitude: 0.5, period: 3600, shift: 0}
      # or replay: {csv: rates.csv}   (columns time,rpm; or one arrival timestamp in seconds per line)
    in_tokens: {dist: fixed, mean: 256}
    out_tokens: {dist: geometric, mean: 512}  # lognormal takes cv; trace: {csv: file} or {dist: trace, values: [...]}
  "*":                                         # every server not named
    rate: {phases: [{for: 3600, rpm: 30}]}
```
Rates are requests/minute in the file, requests/second inside. Paths are relative to the YAML file.
"""

from __future__ import annotations

import csv
import math
import numbers
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import SimulationError, read_text
from .lengths import LengthDist
from .rates import Diurnal, OUNoise, Phases, RateProfile, StepRates, Timestamps

DEFAULT_TOKENS = {"in": 256.0, "out": 256.0}
DEFAULT_NOISE_INTERVAL = 30.0
CHUNK = 60.0  # seconds of arrivals drawn at a time, on a fixed grid, so results do not depend on advance() steps


@dataclass(frozen=True)
class NoiseSpec:
    theta: float
    sigma: float
    interval: float = DEFAULT_NOISE_INTERVAL


@dataclass(frozen=True)
class ServerWorkload:
    """The load of one server: rate profile (req/s), optional noise, token-length distributions."""

    rate: RateProfile
    in_tokens: LengthDist
    out_tokens: LengthDist
    noise: NoiseSpec | None = None


@dataclass(frozen=True)
class Workload:
    """Per-server workloads; the entry ``"*"`` applies to every server not named."""

    servers: dict[str, ServerWorkload]
    seed: int = 0
    resolution: float = 1.0
    source: str = field(default="", compare=False)

    @staticmethod
    def from_yaml(path) -> Workload:
        import yaml

        path = Path(path)
        text = read_text(path)
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SimulationError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
        return Workload.from_dict(data, source=str(path), base=path.parent)

    @staticmethod
    def from_dict(data, source: str = "workload", base: Path | None = None) -> Workload:
        return _Parser(source, base or Path(".")).workload(data)

    @staticmethod
    def constant(rate: float, in_tokens: LengthDist, out_tokens: LengthDist, seed: int = 0) -> Workload:
        """Every server at ``rate`` req/s for ever."""
        return Workload({"*": ServerWorkload(Phases((1.0,), (rate,), (False,)), in_tokens, out_tokens)}, seed)

    def for_server(self, name: str) -> ServerWorkload | None:
        return self.servers.get(name, self.servers.get("*"))

    def stream(self, name: str) -> ArrivalStream | None:
        """A reproducible stream of (time, in tokens, out tokens) for server ``name``; None if it has no load."""
        spec = self.for_server(name)
        return None if spec is None else ArrivalStream(spec, self.seed, name, self.resolution)


class ArrivalStream:
    """Arrivals of one server, drawn lazily in fixed chunks: ``until(t)`` returns those before t not yet given."""

    def __init__(self, spec: ServerWorkload, seed: int | tuple[int, ...], name: str, resolution: float):
        seeds = seed if isinstance(seed, tuple) else (seed,)
        seq = np.random.SeedSequence([*seeds, zlib.crc32(name.encode("utf-8"))])
        arrivals, noise, n_in, n_out = (np.random.default_rng(s) for s in seq.spawn(4))
        self.spec = spec
        self._rng, self._in_rng, self._out_rng = arrivals, n_in, n_out
        self._noise = None if spec.noise is None else OUNoise(spec.noise.theta, spec.noise.sigma,
                                                               spec.noise.interval, noise)
        self._resolution = resolution
        self._drawn_to = 0.0
        self._times = np.empty(0)
        self._in = np.empty(0, dtype=np.int64)
        self._out = np.empty(0, dtype=np.int64)
        self._pos = 0

    def until(self, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        while self._drawn_to < t:
            start = self._drawn_to
            times = self.spec.rate.arrivals(self._rng, start, start + CHUNK, self._resolution, self._noise)
            self._times = np.concatenate([self._times[self._pos:], times])
            self._in = np.concatenate([self._in[self._pos:], self.spec.in_tokens.sample(self._in_rng, len(times))])
            self._out = np.concatenate([self._out[self._pos:],
                                        self.spec.out_tokens.sample(self._out_rng, len(times))])
            self._pos = 0
            self._drawn_to = start + CHUNK
        end = int(np.searchsorted(self._times, t, side="left"))
        sl = slice(self._pos, end)
        self._pos = end
        return self._times[sl], self._in[sl], self._out[sl]


class _Parser:
    """YAML dict -> Workload; every error names the file and the field path."""

    def __init__(self, source: str, base: Path):
        self.source = source
        self.base = base

    def fail(self, where: str, message: str):
        raise SimulationError(f"{self.source}: {where}: {message}")

    def mapping(self, value, where: str, allowed: tuple[str, ...]) -> dict:
        if not isinstance(value, dict):
            self.fail(where, f"expected a mapping, got {value!r}")
        unknown = [k for k in value if k not in allowed]
        if unknown:
            self.fail(f"{where}.{unknown[0]}", f"unknown field (allowed: {', '.join(allowed)})")
        return value

    def number(self, value, where: str, *, minimum: float = 0.0, strict: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            self.fail(where, f"expected a finite number, got {value!r}")
        if value < minimum or (strict and value == minimum):
            self.fail(where, f"must be {'>' if strict else '>='} {minimum:g}, got {value!r}")
        return float(value)

    def workload(self, data) -> Workload:
        data = self.mapping(data if data is not None else {}, "top level", ("seed", "resolution", "servers"))
        seed = data.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            self.fail("seed", f"expected an integer >= 0, got {seed!r}")
        resolution = self.number(data.get("resolution", 1.0), "resolution", strict=True)
        servers = data.get("servers")
        if not isinstance(servers, dict) or not servers:
            self.fail("servers", f"expected a non-empty mapping of server name to its load, got {servers!r}")
        parsed = {str(name): self.server(spec, f"servers.{name}") for name, spec in servers.items()}
        return Workload(parsed, seed, resolution, self.source)

    def server(self, spec, where: str) -> ServerWorkload:
        spec = self.mapping(spec, where, ("rate", "in_tokens", "out_tokens"))
        if "rate" not in spec:
            self.fail(f"{where}.rate", "missing")
        rate, noise = self.rate(spec["rate"], f"{where}.rate")
        return ServerWorkload(rate, self.tokens(spec.get("in_tokens"), f"{where}.in_tokens", DEFAULT_TOKENS["in"]),
                              self.tokens(spec.get("out_tokens"), f"{where}.out_tokens", DEFAULT_TOKENS["out"]),
                              noise)

    def rate(self, spec, where: str) -> tuple[RateProfile, NoiseSpec | None]:
        spec = self.mapping(spec, where, ("phases", "diurnal", "replay", "noise"))
        kinds = [k for k in ("phases", "diurnal", "replay") if k in spec]
        if len(kinds) != 1:
            self.fail(where, "give exactly one of phases, diurnal, replay")
        kind = kinds[0]
        profile = getattr(self, kind)(spec[kind], f"{where}.{kind}")
        noise = None
        if "noise" in spec:
            n = self.mapping(spec["noise"], f"{where}.noise", ("theta", "sigma", "interval"))
            theta = self.number(n.get("theta", 0.1), f"{where}.noise.theta")
            if theta > 1:
                self.fail(f"{where}.noise.theta", f"must be <= 1, got {theta!r}")
            noise = NoiseSpec(theta, self.number(n.get("sigma", 0.1), f"{where}.noise.sigma"),
                              self.number(n.get("interval", DEFAULT_NOISE_INTERVAL), f"{where}.noise.interval",
                                          strict=True))
        return profile, noise

    def phases(self, spec, where: str) -> Phases:
        if not isinstance(spec, list) or not spec:
            self.fail(where, f"expected a non-empty list of {{for, rpm, ramp}}, got {spec!r}")
        durations, rates, ramps = [], [], []
        for i, phase in enumerate(spec):
            w = f"{where}[{i}]"
            phase = self.mapping(phase, w, ("for", "rpm", "ramp"))
            for key in ("for", "rpm"):
                if key not in phase:
                    self.fail(f"{w}.{key}", "missing")
            durations.append(self.number(phase["for"], f"{w}.for", strict=True))
            rates.append(self.number(phase["rpm"], f"{w}.rpm") / 60.0)
            ramp = phase.get("ramp", False)
            if not isinstance(ramp, bool):
                self.fail(f"{w}.ramp", f"expected true or false, got {ramp!r}")
            ramps.append(ramp)
        return Phases(tuple(durations), tuple(rates), tuple(ramps))

    def diurnal(self, spec, where: str) -> Diurnal:
        spec = self.mapping(spec, where, ("mean_rpm", "amplitude", "period", "shift"))
        if "mean_rpm" not in spec:
            self.fail(f"{where}.mean_rpm", "missing")
        amplitude = self.number(spec.get("amplitude", 0.5), f"{where}.amplitude")
        if amplitude > 1:
            self.fail(f"{where}.amplitude", f"must be <= 1 (a relative swing), got {amplitude!r}")
        shift = spec.get("shift", 0.0)
        if isinstance(shift, bool) or not isinstance(shift, numbers.Real) or not math.isfinite(shift):
            self.fail(f"{where}.shift", f"expected a finite number, got {shift!r}")
        return Diurnal(self.number(spec["mean_rpm"], f"{where}.mean_rpm") / 60.0, amplitude,
                       self.number(spec.get("period", 86400.0), f"{where}.period", strict=True), float(shift))

    def replay(self, spec, where: str) -> RateProfile:
        spec = self.mapping(spec, where, ("csv",))
        rows = self.csv_rows(spec.get("csv"), f"{where}.csv")
        path = spec["csv"]
        header = [c.strip().lower() for c in rows[0]]
        if "time" in header and "rpm" in header:
            ti, ri = header.index("time"), header.index("rpm")
            times, rates = [], []
            for k, row in enumerate(rows[1:], start=2):
                t = self.cell(row, ti, f"{path} line {k} time")
                r = self.cell(row, ri, f"{path} line {k} rpm")
                if times and t <= times[-1]:
                    self.fail(f"{where}.csv", f"{path} line {k}: times must increase, got {t!r}")
                times.append(t)
                rates.append(r / 60.0)
            if not times:
                self.fail(f"{where}.csv", f"{path} has no rows")
            return StepRates(tuple(times), tuple(rates))
        start = 1 if header and header[0] in ("time", "timestamp", "t") else 0
        times = [self.cell(row, 0, f"{path} line {k + 1}") for k, row in enumerate(rows) if k >= start and row]
        if not times:
            self.fail(f"{where}.csv", f"{path} has no timestamps")
        return Timestamps(tuple(sorted(times)))

    def csv_rows(self, name, where: str) -> list[list[str]]:
        if not isinstance(name, str) or not name:
            self.fail(where, f"expected a file name, got {name!r}")
        path = self.base / name
        try:
            with path.open(newline="", encoding="utf-8") as f:
                rows = [row for row in csv.reader(f) if row and any(c.strip() for c in row)]
        except OSError as exc:
            self.fail(where, f"cannot read {path}: {exc.strerror or exc}")
        if not rows:
            self.fail(where, f"{path} is empty")
        return rows

    def cell(self, row: list[str], i: int, where: str) -> float:
        try:
            v = float(row[i])
        except (IndexError, ValueError):
            self.fail(where, f"expected a number, got {row[i] if i < len(row) else ''!r}")
        if not math.isfinite(v) or v < 0:
            self.fail(where, f"expected a finite number >= 0, got {v!r}")
        return v

    def tokens(self, spec, where: str, default: float) -> LengthDist:
        if spec is None:
            return LengthDist.fixed(default)
        spec = self.mapping(spec, where, ("dist", "mean", "cv", "values", "csv", "column", "trace"))
        if "trace" in spec:
            inner = self.mapping(spec["trace"], f"{where}.trace", ("csv", "column", "values"))
            return self.trace({**inner}, f"{where}.trace")
        dist = spec.get("dist", "fixed")
        if dist == "trace":
            return self.trace(spec, where)
        if dist not in ("fixed", "geometric", "lognormal"):
            self.fail(f"{where}.dist", f"unknown distribution {dist!r} (fixed, geometric, lognormal, trace)")
        if "mean" not in spec:
            self.fail(f"{where}.mean", "missing")
        mean = self.number(spec["mean"], f"{where}.mean", minimum=1.0)
        cv = self.number(spec.get("cv", 0.0), f"{where}.cv")
        if dist == "lognormal" and "cv" not in spec:
            self.fail(f"{where}.cv", "missing (lognormal needs a coefficient of variation)")
        try:
            return LengthDist.from_mean_cv(mean, cv, dist)
        except SimulationError as exc:
            self.fail(where, str(exc))

    def trace(self, spec, where: str) -> LengthDist:
        if "values" in spec:
            values = spec["values"]
            if not isinstance(values, list):
                self.fail(f"{where}.values", f"expected a list of token counts, got {values!r}")
            for i, v in enumerate(values):
                self.number(v, f"{where}.values[{i}]", minimum=1.0)
        else:
            rows = self.csv_rows(spec.get("csv"), f"{where}.csv")
            column = spec.get("column")
            header = [c.strip() for c in rows[0]]
            numeric = _is_number(header[0])
            i = 0
            if column is not None:
                if column not in header:
                    self.fail(f"{where}.column", f"{column!r} is not a column of {spec['csv']} ({', '.join(header)})")
                i = header.index(column)
            values = [self.cell(row, i, f"{spec['csv']} line {k + 1}")
                      for k, row in enumerate(rows) if numeric or k > 0]
        try:
            return LengthDist.trace(values)
        except SimulationError as exc:
            self.fail(where, str(exc))


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False
