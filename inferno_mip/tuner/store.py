"""Learned parameters per (model, accelerator) and a JSON state file written atomically (restarts lose nothing)."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .errors import TunerError

__all__ = ["LearnedParameters", "StateFile", "now_rfc3339", "pair_key", "split_key"]


def pair_key(model: str, accelerator: str) -> str:
    return f"{model}/{accelerator}"


def split_key(key: str) -> tuple[str, str]:
    model, _, acc = key.rpartition("/")
    return model, acc


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass
class LearnedParameters:
    """inferno's LearnedParameters plus the filter space of the covariance and the lock-out buffer."""

    alpha: float
    beta: float
    gamma: float
    nis: float = 0.0
    update_count: int = 0
    covariance: list | None = None
    last_updated: str = ""
    log_space: bool = False  # covariance is over ln x
    rejected: list = field(default_factory=list)  # consecutive NIS-rejected observations (dicts)

    @property
    def x(self) -> list[float]:
        return [self.alpha, self.beta, self.gamma]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LearnedParameters:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


class StateFile:
    """A JSON document on disk; ``save`` writes a temp file and renames it (atomic on POSIX)."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None

    def load(self) -> dict:
        if self.path is None or not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise TunerError(f"{self.path}: cannot read tuner state: {exc}") from None
        if not isinstance(data, dict):
            raise TunerError(f"{self.path}: tuner state must be a JSON object")
        return data

    def save(self, data: dict) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tuner-state-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
