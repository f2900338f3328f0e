"""Prefill chunk count nc(B) under a per-iteration token budget (queue-analysis v0.7+, spec §1.2)."""

from __future__ import annotations

import numpy as np

from .errors import QueueingError

DEFAULT_MAX_NUM_TOKENS = 8192.0
_MAX_CHUNKS = 1 << 22


def chunk_boundaries(n: float, m: float, max_num_tokens: float, upto: int, *, float32: bool = False) -> np.ndarray:
    """b_j = floor(max(0, (j+m)(M_tok - n/j)/(n+m))) for j = 1..J, with J the first j where b_j >= upto.

    float32=True evaluates in float32 as Go does (compat); otherwise float64.
    """
    dt = np.float32 if float32 else np.float64
    nn, mm, mt = dt(n), dt(m), dt(max_num_tokens)
    size = 64
    while True:
        j = np.arange(1, size + 1, dtype=dt)
        b = np.floor(np.maximum(dt(0), (j + mm) * (mt - nn / j) / (nn + mm))).astype(np.float64)
        hit = np.flatnonzero(b >= upto)
        if hit.size:
            return b[: hit[0] + 1]
        if size >= _MAX_CHUNKS:
            raise QueueingError(
                f"max_num_tokens={max_num_tokens} is too small for in_tokens={n}, out_tokens={m}: "
                f"more than {_MAX_CHUNKS} prefill chunks needed"
            )
        size *= 8


def chunk_counts(n: float, m: float, max_num_tokens: float, upto: int, *, float32: bool = False) -> np.ndarray:
    """nc(B) for B = 0..upto as an int array (nc(0) := nc(1)); nc(B) = smallest j with b_j >= B."""
    b = np.maximum.accumulate(chunk_boundaries(n, m, max_num_tokens, upto, float32=float32))
    bs = np.arange(upto + 1, dtype=np.float64)
    nc = np.searchsorted(b, np.maximum(bs, 1.0), side="left") + 1
    return nc.astype(np.int64)
