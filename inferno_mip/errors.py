"""Errors raised for bad scenario input."""

from __future__ import annotations

from dataclasses import dataclass


class ScenarioError(ValueError):
    """A scenario cannot be read: names the file, the field and the offending value."""

    def __init__(self, file: str, field: str, message: str):
        self.file = file
        self.field = field
        self.message = " ".join(str(message).split())  # always one line, whatever the parser said
        super().__init__(f"{file}: {field}: {self.message}" if field else f"{file}: {self.message}")


@dataclass(frozen=True)
class InputIssue:
    """A problem with one entry of the input that does not stop the solve (e.g. one bad server)."""

    file: str
    field: str
    message: str
    server: str = ""

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.message}"
