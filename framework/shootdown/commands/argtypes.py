"""argparse value types for numbers a user types: bounded, finite, named in the error.

argparse turns the ArgumentTypeError into its usual usage line and exit 2;
without these, ``--timeout nan`` reached the code as a float and ended in a
traceback, ``--timeout 1e300`` overflowed a timer, and ``--pages 10**17``
ran until killed.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

#: The longest wait any --timeout takes: a day.
MAX_SECONDS = 86400.0


def seconds(text: str) -> float:
    """A timeout in seconds: finite, > 0, at most :data:`MAX_SECONDS`."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or not 0 < value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(
            f"{text} is not a number of seconds in (0, {MAX_SECONDS:g}]")
    return value


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An integer in [low, high]."""
    def parse(text: str) -> int:
        try:
            value = int(text, 0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is not in {low}..{high}")
        return value
    parse.__name__ = f"integer {low}..{high}"
    return parse
