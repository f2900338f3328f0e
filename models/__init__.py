"""Mixed-integer formulations of the allocation problem."""
