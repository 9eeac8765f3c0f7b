"""Parsing one target-value cell: a float, or a reject reason saying why not."""

from __future__ import annotations

import math
from dataclasses import dataclass

from pairfactory.pairs import schema

# Spellings of "no value" in the raw files (Chromophore writes NaN); anything else that is not a
# number is a data error worth its own reason.
_MISSING_SPELLINGS = frozenset({"", "nan", "na", "n/a", "none", "null"})


@dataclass(frozen=True)
class ParsedValue:
    value: float | None
    reason: str | None
    detail: str


def parse_value(raw: object) -> ParsedValue:
    """Parse a raw cell to a finite float; reasons: missing_value, non_numeric_value,
    non_finite_value."""
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):
        return ParsedValue(None, schema.MISSING_VALUE, "empty cell")
    text = str(raw).strip()
    if text.lower() in _MISSING_SPELLINGS:
        return ParsedValue(
            None, schema.MISSING_VALUE, f"cell reads {text!r}" if text else "empty cell"
        )
    try:
        value = float(text)
    except ValueError:
        return ParsedValue(None, schema.NON_NUMERIC_VALUE, f"{text!r} is not a number")
    if not math.isfinite(value):
        return ParsedValue(None, schema.NON_FINITE_VALUE, f"{text!r} is not finite")
    return ParsedValue(value, None, "")
