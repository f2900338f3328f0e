"""Closed-loop control: collect -> tune -> forecast -> solve -> stabilise -> actuate -> record."""
