"""Names of the optimizer's saturation policies and batch rules; a module of its own so the CLI can offer them
cheaply."""

SATURATION_POLICIES: tuple[str, ...] = ("None", "PriorityExhaustive", "PriorityRoundRobin", "RoundRobin")
BATCH_RULES: tuple[str, ...] = ("inferno", "optimal", "all")  # candidate max batch sizes (tables.Settings)
