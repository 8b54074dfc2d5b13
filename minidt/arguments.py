"""What both command-line modules share (minidt/cli.py and minidt/coursework/cli.py): the error that means "bad
input" (one line on stderr, exit status 2), argparse with one-line errors and no abbreviations, and argument types
that name what they expected ("argument --steps: expected an integer >= 1, got '0'")."""

from __future__ import annotations

import argparse
import math
from typing import Callable


class UsageError(Exception):
    """Bad input from the command line: printed as one line, exit status 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with its errors in one line (it would print the usage first, a screenful for `minidt train`), and
    no abbreviated flags (a typo must not silently become another flag)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def integer_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}")
        return value

    return parse


positive_int, nonnegative_int = integer_at_least(1), integer_at_least(0)


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    """A finite number >= 0 (a temperature)."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def percentage(text: str) -> float:
    """A percentage in (0, 100]."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError(f"expected a percentage in (0, 100], got {text!r}")
    return value
