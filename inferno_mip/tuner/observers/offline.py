"""Offline observers: replay CSV traces.

``OfflineObserver`` reads inferno's offline trace (``RPM,tokens,avgConcurrency,maxConcurrency,avgWait,avgITL``,
e.g. tuner-exp13.csv) as decode observations (z = [wait, ITL]); ``TraceObserver`` reads the data-observer
traces (``rpmTotal,numReplicas,inputTokens,outputTokens,avgBatchSize,maxBatchSize,ttft_ms,itl_ms``) as
prefill-decode observations. Columns are matched by header name; a bad cell becomes NaN so that the tuner
rejects that row with a reason (inferno silently reads 0).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Iterator

from ..errors import TunerError
from ..observation import DECODE, PREFILL_DECODE, Observation

__all__ = ["OfflineObserver", "TraceObserver", "read_rows"]


def read_rows(path: str | Path, required: tuple[str, ...]) -> list[dict[str, float]]:
    """CSV rows as {header: float} (NaN for unparsable cells); checks the required headers exist."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [h for h in required if h not in header]
            if missing:
                raise TunerError(f"{path}: missing CSV columns {missing} (have {header})")
            rows = []
            for raw in reader:
                row = {}
                for k, v in raw.items():
                    try:
                        row[k.strip()] = float(v) if v not in (None, "") else math.nan
                    except (TypeError, ValueError, AttributeError):
                        row[k.strip()] = math.nan
                rows.append(row)
    except FileNotFoundError:
        raise TunerError(f"{path}: no such trace file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TunerError(f"{path}: cannot read CSV: {exc}") from None
    if not rows:
        raise TunerError(f"{path}: no data rows")
    return rows


def _int(v: float) -> int | float:
    return int(v) if math.isfinite(v) else v


class _CsvObserver:
    """Observations from the rows of a CSV trace with the columns `COLUMNS`."""

    COLUMNS: tuple[str, ...] = ()

    def __init__(self, path: str | Path, *, max_queue: int = 0):
        self.path, self.max_queue = Path(path), max_queue
        self.rows = read_rows(self.path, self.COLUMNS)

    def __len__(self) -> int:
        return len(self.rows)


class OfflineObserver(_CsvObserver):
    """inferno's offline observer: one decode Observation per row (wait and ITL in ms, max_queue 0)."""

    kind = DECODE
    COLUMNS = ("RPM", "tokens", "avgConcurrency", "maxConcurrency", "avgWait", "avgITL")

    def __iter__(self) -> Iterator[Observation]:
        for r in self.rows:
            yield Observation(rpm=r["RPM"], in_tokens=0.0, out_tokens=r["tokens"], batch_size=r["avgConcurrency"],
                              max_batch=_int(r["maxConcurrency"]), wait=r["avgWait"], itl=r["avgITL"],
                              max_queue=self.max_queue)


class TraceObserver(_CsvObserver):
    """inferno's DataObserver traces: per-replica rate = rpmTotal / numReplicas; prefill-decode observations."""

    kind = PREFILL_DECODE
    COLUMNS = ("rpmTotal", "numReplicas", "inputTokens", "outputTokens", "maxBatchSize", "ttft_ms", "itl_ms")

    def __iter__(self) -> Iterator[Observation]:
        for r in self.rows:
            n = r["numReplicas"]
            rpm = r["rpmTotal"] / n if n and math.isfinite(n) and n > 0 else math.nan
            yield Observation(rpm=rpm, in_tokens=r["inputTokens"], out_tokens=r["outputTokens"],
                              max_batch=_int(r["maxBatchSize"]), ttft=r["ttft_ms"], itl=r["itl_ms"],
                              batch_size=r.get("avgBatchSize", 0.0), max_queue=self.max_queue)
