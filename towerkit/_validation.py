"""Shared checks for user input: argparse types and plain-Python validators.

Each raises (or, as an argparse `type`, makes argparse report) a one-line message naming the
input and the accepted range, before any work starts.
"""

from __future__ import annotations

import argparse
import math
from typing import Optional

import numpy as np


def check_int(name: str, value, minimum: Optional[int] = 1) -> int:
    """Returns `value` as an int; raises ValueError/TypeError naming `name` and the range."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}.")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    return value


def check_float(name: str, value, low: Optional[float] = None, high: Optional[float] = None,
                low_open: bool = True, high_open: bool = False) -> float:
    """Returns `value` as a finite float inside the given range, else raises naming `name`.

    `low_open`/`high_open` make the bounds exclusive (default: `(low, high]`).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {value!r}.")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}.")
    if low is not None and (value <= low if low_open else value < low) or (
            high is not None and (value >= high if high_open else value > high)):
        lo = "" if low is None else f"{'(' if low_open else '['}{low:g}"
        hi = "" if high is None else f"{high:g}{')' if high_open else ']'}"
        rng = (f"in {lo}, {hi}" if low is not None and high is not None
               else (f"> {low:g}" if low_open else f">= {low:g}") if low is not None
               else (f"< {high:g}" if high_open else f"<= {high:g}"))
        raise ValueError(f"{name} must be {rng}, got {value:g}.")
    return value


def _argparse_type(convert, accept, expected: str, must: str, doc: str):
    """An argparse `type`: `convert(text)`, kept when `accept(value)`; errors say `expected ...`
    (not a number at all) or `must be ...` (out of range)."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"must be {must}, got {text}")
        return value

    parse.__doc__ = doc
    return parse


positive_int = _argparse_type(int, lambda v: v >= 1, "an integer >= 1", "an integer >= 1",
                              "argparse type: an integer >= 1.")
non_negative_int = _argparse_type(int, lambda v: v >= 0, "an integer >= 0", "an integer >= 0",
                                  "argparse type: an integer >= 0.")
positive_float = _argparse_type(float, lambda v: math.isfinite(v) and v > 0, "a number > 0",
                                "a finite number > 0", "argparse type: a finite number > 0.")
unit_fraction = _argparse_type(float, lambda v: 0 < v <= 1, "a number in (0, 1]", "in (0, 1]",
                               "argparse type: a number in (0, 1] (a recall target).")
open_fraction = _argparse_type(float, lambda v: 0 < v < 1, "a number in (0, 1)", "in (0, 1)",
                               "argparse type: a number in (0, 1) (a split share).")
dropout_rate = _argparse_type(float, lambda v: 0 <= v < 1, "a number in [0, 1)", "in [0, 1)",
                              "argparse type: a number in [0, 1) (a dropout rate).")


def parse_task_weights(spec, flag: str, example: str) -> dict:
    """`'click=1,like=0.5'` -> `{'click': 1.0, 'like': 0.5}`; a dict passes through.

    Raises:
      ValueError: a part that is not `NAME=NUMBER`, naming `flag` and showing `example`.
    """
    if isinstance(spec, dict):
        return {str(k): float(v) for k, v in spec.items()}
    weights = {}
    for part in filter(None, (p.strip() for p in str(spec or "").split(","))):
        name, sep, value = part.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise ValueError(f"{flag} takes {example}, got {spec!r}.")
    return weights
