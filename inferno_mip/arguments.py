"""Command-line argument types and parser: bad values are one ``error:`` line and exit code 2, before any work."""

from __future__ import annotations

import argparse
import math


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are a single ``error: ...`` line (exit 2), not a usage block."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {one_line(message)} (see {self.prog} --help)\n")


def one_line(text: object) -> str:
    """`text` with every run of whitespace (newlines included) made one space."""
    return " ".join(str(text).split())


def _number(text: str, what: str, ok) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0, or inf (e.g. a time limit)."""
    return _number(text, "a number >= 0", lambda v: v >= 0)


def positive_float(text: str) -> float:
    """A finite number > 0."""
    return _number(text, "a finite number > 0", lambda v: 0 < v < math.inf)


def fraction(text: str) -> float:
    """A number in [0, 1] (a relative gap)."""
    return _number(text, "a number in [0, 1]", lambda v: 0 <= v <= 1)


def _integer(text: str, low: int, high: int | None = None) -> int:
    what = f"an integer >= {low}" + (f" and <= {high:,}" if high is not None else "")
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _integer(text, 1)


def non_negative_int(text: str) -> int:
    return _integer(text, 0)


def bounded_int(low: int, high: int):
    """An argument type for integers in [low, high] (resource guards: fleet sizes, batch sizes)."""
    def parse(text: str) -> int:
        return _integer(text, low, high)
    parse.__name__ = f"integer in [{low}, {high}]"
    return parse


def int_list(low: int, high: int):
    """A comma-separated list of integers in [low, high], e.g. ``--sizes 10,100,1000``."""
    def parse(text: str) -> list[int]:
        items = [x.strip() for x in text.split(",") if x.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
        return [_integer(x, low, high) for x in items]
    parse.__name__ = "comma-separated integers"
    return parse


def one_of(known, what: str):
    """One name out of `known`, e.g. ``--solver highs``."""
    def parse(text: str) -> str:
        if text not in known:
            raise argparse.ArgumentTypeError(f"unknown {what} {text!r}; known: {', '.join(sorted(known))}")
        return text
    parse.__name__ = what
    return parse


def name_list(known, what: str):
    """A comma-separated list of names, each one of `known` (a container, e.g. the solver registry)."""
    def parse(text: str) -> list[str]:
        names = [x.strip() for x in text.split(",") if x.strip()]
        unknown = [n for n in names if n not in known]
        if not names or unknown:
            raise argparse.ArgumentTypeError(f"unknown {what} {', '.join(map(repr, unknown)) or repr(text)}; "
                                             f"known: {', '.join(sorted(known))}")
        return names
    parse.__name__ = f"{what} list"
    return parse
