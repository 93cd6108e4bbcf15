"""Money is integer micro-coins: exact sums, costs rounded up, never a float."""

from __future__ import annotations

from decimal import Decimal

import pytest

from lumen_jupyter.core.money import (
    MICRO,
    call_cost,
    coins_to_micro,
    format_coins,
    micro_to_coins,
    token_cost,
)


def test_worked_example_from_lumen() -> None:
    # 1,000 in + 300 out at 0.5 and 1.0 coins per million = 0.0008 coins.
    cost = call_cost(1_000, 300, coins_to_micro("0.5"), coins_to_micro(1.0))
    assert cost == 800
    assert isinstance(cost, int)
    assert micro_to_coins(cost) == Decimal("0.0008")
    assert format_coins(cost) == "0.0008"


@pytest.mark.parametrize(
    ("tokens", "price_micro", "expected"),
    [
        (1, 1, 1),  # a millionth of a micro-coin still costs one micro-coin
        (1, 999_999, 1),
        (1, 1_000_000, 1),
        (1, 1_000_001, 2),
        (3, 333_334, 2),  # 1.000002 -> 2
        (3, 333_333, 1),  # 0.999999 -> 1
        (1_000_000, 1, 1),
        (1_000_001, 1, 2),
        (0, 5 * MICRO, 0),
        (10, 0, 0),
        (-5, MICRO, 0),
    ],
)
def test_token_cost_rounds_up(tokens: int, price_micro: int, expected: int) -> None:
    assert token_cost(tokens, price_micro) == expected


def test_call_cost_prices_input_and_output_separately() -> None:
    # 1 in + 1 out at 0.5 micro-coins a token: each part rounds up, 1 + 1 (not ceil(1.0) = 1).
    assert call_cost(1, 1, 500_000, 500_000) == 2
    assert call_cost(7, 7, 100_000, 200_000) == 3


def test_large_counts_stay_exact() -> None:
    tokens = 10**12
    price = coins_to_micro("123.456789")
    assert token_cost(tokens, price) == tokens * price // MICRO
    assert call_cost(10**9, 10**9, MICRO, 3 * MICRO) == 4_000 * MICRO


@pytest.mark.parametrize(
    ("value", "micro"),
    [
        (1, 1_000_000),
        ("0.5", 500_000),
        (0.1, 100_000),  # a float as written, not its binary approximation
        (0.3, 300_000),
        (Decimal("2.000001"), 2_000_001),
        ("0.0000005", 1),  # beyond six decimals: half-up
        ("0.0000004", 0),
        (-2, -2_000_000),
        ("1e3", 1_000_000_000),
    ],
)
def test_coins_to_micro(value: object, micro: int) -> None:
    assert coins_to_micro(value) == micro  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [True, False, "cheap", "nan", "inf", None, [1]])
def test_coins_to_micro_rejects_non_numbers(value: object) -> None:
    with pytest.raises(ValueError):
        coins_to_micro(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("micro", "text"),
    [
        (0, "0"),
        (1, "0.000001"),
        (800, "0.0008"),
        (20 * MICRO, "20"),
        (1_500_000, "1.5"),
        (-1_100_000, "-1.1"),
        (-1, "-0.000001"),
    ],
)
def test_format_coins(micro: int, text: str) -> None:
    assert format_coins(micro) == text


def test_absurdly_large_amounts_are_a_value_error() -> None:
    with pytest.raises(ValueError, match="too large"):
        coins_to_micro(1e22)
    with pytest.raises(ValueError, match="too large"):
        coins_to_micro("9" * 40)
