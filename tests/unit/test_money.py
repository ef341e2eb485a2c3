from decimal import Decimal

import pytest

from tally.money import MoneyError, nanos_to_usd, usd_to_nanos


@pytest.mark.parametrize(
    ("value", "nanos"),
    [
        (Decimal("0.00283"), 2_830_000),
        ("0.017", 17_000_000),
        (0, 0),
        (1000, 1_000_000_000_000),
        ("1e-3", 1_000_000),
        (Decimal("0.0000000015"), 2),  # half-even to the nano
        (Decimal("0.0000000025"), 2),
        (0.1, 100_000_000),
    ],
)
def test_usd_to_nanos_is_exact(value: object, nanos: int) -> None:
    assert usd_to_nanos(value) == nanos


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (Decimal("-0.01"), "must be >= 0"),
        ("1000.000000001", "must be <= 1000"),
        ("NaN", "must be a decimal string"),
        ("Infinity", "must be a decimal string"),
        ("1_000", "must be a decimal string"),
        ("0x10", "must be a decimal string"),
        (Decimal("NaN"), "must be finite"),
        (True, "must be a number or a decimal string"),
        (None, "must be a number or a decimal string"),
        ("12abc", "must be a decimal string"),
        ("", "must be a decimal string"),
        ([1], "must be a number or a decimal string"),
    ],
)
def test_usd_to_nanos_rejects(value: object, problem: str) -> None:
    with pytest.raises(MoneyError, match=problem):
        usd_to_nanos(value)


def test_ten_thousand_tenths_sum_to_exactly_one_thousand() -> None:
    total = sum(usd_to_nanos(Decimal("0.1")) for _ in range(10_000))

    assert total == 1_000 * 10**9
    assert nanos_to_usd(total) == 1000.0


def test_nanos_to_usd_rounds_to_nine_decimals() -> None:
    assert nanos_to_usd(4_997_170_000) == 4.99717
    assert nanos_to_usd(1) == 0.000000001
