"""Money: USD amounts as exact integer nano-USD."""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Decimal

NANOS_PER_USD = 1_000_000_000
MAX_STEP_COST_USD = Decimal(1000)
_NANO = Decimal("1e-9")
# Plain decimal notation only (Decimal() alone would also take "1_000", "NaN", "Infinity").
_DECIMAL_RE = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d{1,4})?")


class MoneyError(ValueError):
    """A value that is not an acceptable USD amount."""


def usd_to_nanos(value: object, *, maximum: Decimal = MAX_STEP_COST_USD) -> int:
    """Convert a JSON number or decimal string in USD to integer nano-USD.

    Accepts int, Decimal (how the strict JSON parser reads numbers), float and
    decimal strings. Rounds half-even to the nearest nano-USD (9 decimals).
    """
    if isinstance(value, bool):
        raise MoneyError("must be a number or a decimal string")
    if isinstance(value, int | Decimal):
        amount = Decimal(value)
    elif isinstance(value, float):
        amount = Decimal(repr(value))
    elif isinstance(value, str):
        text = value
        if len(text) > 64 or not _DECIMAL_RE.fullmatch(text):
            raise MoneyError('must be a decimal string like "0.017"')
        amount = Decimal(text)
    else:
        raise MoneyError("must be a number or a decimal string")
    if not amount.is_finite():
        raise MoneyError("must be finite")
    if amount < 0:
        raise MoneyError("must be >= 0")
    if amount > maximum:
        raise MoneyError(f"must be <= {maximum}")
    return int(amount.quantize(_NANO, rounding=ROUND_HALF_EVEN) * NANOS_PER_USD)


def nanos_to_usd(nanos: int) -> float:
    """Return nano-USD as a USD number rounded to 9 decimals (for responses only)."""
    return round(nanos / NANOS_PER_USD, 9)
