"""Names of the optimizer's saturation policies; a module of its own so the CLI can offer them cheaply."""

SATURATION_POLICIES: tuple[str, ...] = ("None", "PriorityExhaustive", "PriorityRoundRobin", "RoundRobin")
