"""Click parameter types for numeric options: finite and in range, or a one-line usage error.

``click.FloatRange`` lets ``nan``, ``inf`` and ``1e400`` through (NaN compares false with every
bound, and an overflowing literal parses as infinity); such values then end up in job.json as
``NaN``/``Infinity`` or make a wait never end. Every numeric option uses these types instead.
"""

from __future__ import annotations

import math
from typing import Any

import click

# Longer than any job or wait anyone means (about 11.5 days); bigger values are typos.
MAX_SECONDS = 1_000_000.0


class Number(click.ParamType[float]):
    """A finite float in ``[lo, hi]`` (``lo`` excluded with ``lo_open``)."""

    name = "number"

    def __init__(
        self, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False
    ) -> None:
        self.lo, self.hi, self.lo_open = lo, hi, lo_open

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, float | int) and not isinstance(value, bool):
            number = float(value)
        else:
            try:
                number = float(str(value).strip())
            except ValueError:
                self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if self.lo is not None and (number < self.lo or (self.lo_open and number == self.lo)):
            self.fail(f"{value} must be {'>' if self.lo_open else '>='} {self.lo:g}", param, ctx)
        if self.hi is not None and number > self.hi:
            self.fail(f"{value} must be <= {self.hi:g}", param, ctx)
        return number

    def __repr__(self) -> str:
        return f"Number({self.lo}, {self.hi})"


def seconds(lo: float = 0.0, *, lo_open: bool = False, hi: float = MAX_SECONDS) -> Number:
    """A duration in seconds: finite, at least ``lo``, at most ``hi`` (default ~11.5 days)."""
    return Number(lo, hi, lo_open=lo_open)


def usd(hi: float = 1_000_000.0) -> Number:
    """A positive amount of money (budgets, bids)."""
    return Number(0.0, hi, lo_open=True)
