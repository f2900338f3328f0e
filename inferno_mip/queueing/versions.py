"""Names of the queue-analysis versions; a module of its own so the CLI can offer them without numpy."""

PERF_MODELS: tuple[str, ...] = ("v01", "v02", "old3", "old", "new", "iteration")
