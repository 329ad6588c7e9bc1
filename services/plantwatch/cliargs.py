"""argparse `type=` converters for numeric flags: a value out of range is a usage error at start-up
(`argument --window-seconds: must be > 0, got 0`, exit status 2), not a crash or a silently
disabled feature later.

argparse puts the flag's name before an ArgumentTypeError's message, so the messages here only
state the accepted range and the value given.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from plantwatch.contracts.times import parse_timestamp


def number(kind: type, low: float | None = None, high: float | None = None, *, above: bool = False) -> Callable[[str], float]:
    """A converter to `kind` (int or float) accepting low <= value <= high (low < value with `above`).

    Floats must be finite: float() parses `nan` and `inf`, but no flag means them.
    """
    if low is not None and high is not None:
        accepted = f" between {low:g} and {high:g}"
    elif low is not None:
        accepted = f" {'>' if above else '>='} {low:g}"
    else:
        accepted = ""
    noun = "an integer" if kind is int else "a finite number"

    def convert(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {noun}{accepted}, got {text!r}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be {noun}{accepted}, got {text!r}")
        if low is not None and (value <= low if above else value < low) or high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be{accepted}, got {text}")
        return value

    return convert


#: Durations, widths and intervals where 0 would divide by zero or spin.
positive_float = number(float, 0, above=True)
#: Durations where 0 has a documented meaning (never, no wait).
non_negative_float = number(float, 0)
#: Any finite number (a threshold).
finite_float = number(float)
#: Counts that must be at least 1.
positive_int = number(int, 1)
#: Counts, indexes and seeds that may be 0.
non_negative_int = number(int, 0)
#: A TCP port to listen on; 0 asks the system for any free one.
port = number(int, 0, 65535)


def timestamp(text: str) -> float:
    """A point in time: RFC 3339 (`2026-01-05T08:00:00Z`; no offset means UTC) or epoch seconds."""
    try:
        return float(text) if text.replace(".", "", 1).isdigit() else parse_timestamp(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be RFC 3339 (2026-01-05T08:00:00Z) or epoch seconds, got {text!r}") from None


def secret_key(text: str) -> tuple[str, str]:
    """A key of a Secret, `NAME/KEY` (e.g. plantwatch-api/token) → (name, key)."""
    name, sep, key = text.partition("/")
    if not sep or not name or not key or "/" in key:
        raise argparse.ArgumentTypeError(f"must be a Secret and its key as NAME/KEY (e.g. plantwatch-api/token), got {text!r}")
    return name, key
