"""Queueing (performance) models of one inference replica: throughput, TTFT, ITL and sizing.

Re-implements llm-inferno/queue-analysis on a float64 log-space birth-death chain
(reference/specs/queue-model.md). Versions: "v01" (v0.1.0 REST, decode only; its wait target is the
TTFT target), "v02" (v0.2.0 / inferno optimizer), "old3" (v0.3.0), "old" (v0.4-v0.6), "new" (v0.7+,
chunked prefill). Modules: chain (birth-death chain, one model or padded rows), models (service
times per version), perf (PerfModel: analyze/size one replica), rows + sizing (many replicas sized in
lock-step numpy passes), concurrency (v0.8 optimal max batch: exact all-M curve, Go's onset search),
cli (`analyze`, `size`).

compat=True reproduces Go: Size's end-point direction inference (B3), "below region" ->
InfeasibleTarget, TPS -> 0.9 lambda_max (B7), Go's bisection (float32 x, 1e-6 tolerance; v02 with
v0.1.0's broken tolerance, B10), nc at round(B_bar) (B4), rate > max_rate an error for v02/old3,
K = N + Q = 1 rejected (B2), int token counts for v02.

Default (compat=False) fixes:
- B1: W = sum_{k>N}(k-N) p_k / X in float64 (both modes; Go's float32 R - S noise is not emulated).
- B2: K = 1 is an ordinary Erlang loss system.
- B3: no direction guessing: metric(lambda_min) > target -> InfeasibleTarget; otherwise the first
  crossing of the target on a log-rate grid, refined by regula falsi (Illinois) on (log rate, log
  metric) to 1e-10; the returned rate meets every target and its metrics are the verified ones.
- B4: "new" prefill = sum_B P(B) prefill(B, nc(B)) over the in-service distribution (continuous;
  equal to Go's value when nc is constant and the bg >= 0 clamp is inactive).
- B5: invalid/all-zero params and non-finite or non-positive mu raise QueueingError up front.
- B7: TPS is fleet-wide (the allocator divides it over replicas); per replica it does not limit
  the rate beyond stability: target_rates["tps"] = lambda_max.
- B10: v02 effective concurrency inverts tau exactly (no gamma_p subtraction when n = 0); both
  modes keep v0.2.0's one-decode fix for n = 0, m = 1 (optimizer HEAD would loop forever).
- B11: models are immutable; results are cached per model instance and models by inputs.

Optimal concurrency (v0.8): compat runs Go's onset search (probe sequences of G2/G3/G9); default
sizes every M = 1..M_max in one vectorised pass and returns the smallest M with
f(M) >= (1 - eps/2) max f plus the exact argmax (Go's 6-probe bisection can stop above the
smallest such M: G3 gives 49, the exact rule 48; the peak is at 49).
"""

from ..lazy import lazy_exports

_EXPORTS = {
    "BirthDeathChain": ".chain",
    "ChainStats": ".chain",
    "Concurrency": ".concurrency",
    "Curve": ".concurrency",
    "InfeasibleTarget": ".errors",
    "Metrics": ".results",
    "PERF_MODELS": ".versions",
    "PerfModel": ".perf",
    "QueueingError": ".errors",
    "Sizing": ".results",
    "analyze_models": ".sizing",
    "chunk_counts": ".chunks",
    "make_perf_model": ".perf",
    "new_primitives": ".models",
    "optimal_concurrency": ".concurrency",
    "size_models": ".sizing",
    "solve_chain": ".chain",
    "solve_rows": ".chain",
    "throughput_curve": ".concurrency",
    "throughput_curves": ".concurrency",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "PERF_MODELS",
    "BirthDeathChain",
    "ChainStats",
    "Concurrency",
    "Curve",
    "InfeasibleTarget",
    "Metrics",
    "PerfModel",
    "QueueingError",
    "Sizing",
    "analyze_models",
    "chunk_counts",
    "make_perf_model",
    "new_primitives",
    "optimal_concurrency",
    "size_models",
    "solve_chain",
    "solve_rows",
    "throughput_curve",
    "throughput_curves",
]
