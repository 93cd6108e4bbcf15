"""Exact money: coins are stored and added as integer micro-coins.

Floats never touch a balance (see DESIGN.md, principle 6).  Prices are given
in coins per million tokens; a cost in micro-coins is then
``tokens * price_micro / 1_000_000``, which we round *up* so that a charge is
never smaller than the exact cost.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

MICRO = 1_000_000
"""Micro-coins per coin."""


def coins_to_micro(value: float | int | str | Decimal) -> int:
    """Convert a coin amount written by a person (YAML, CLI) to micro-coins.

    Accepts at most six decimals; anything finer is rounded half-up.  Raises
    ``ValueError`` for values that are not numbers.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a coin amount: {value!r}")
    try:
        amount = Decimal(str(value))
    except InvalidOperation as exc:
        raise ValueError(f"not a coin amount: {value!r}") from exc
    if not amount.is_finite():
        raise ValueError(f"not a coin amount: {value!r}")
    try:
        return int((amount * MICRO).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    except InvalidOperation as exc:  # more digits than the context holds: absurdly large
        raise ValueError(f"not a usable coin amount (too large): {value!r}") from exc


def micro_to_coins(micro: int) -> Decimal:
    """The exact coin value of ``micro`` micro-coins, for display and JSON."""
    return Decimal(micro) / MICRO


def format_coins(micro: int) -> str:
    """Render micro-coins for people: up to six decimals, trailing zeros trimmed."""
    text = f"{micro_to_coins(micro):.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def token_cost(tokens: int, price_per_million_micro: int) -> int:
    """Cost in micro-coins of ``tokens`` at a price in micro-coins per million tokens.

    Rounded up: ``ceil(tokens * price / 1e6)``.
    """
    if tokens <= 0 or price_per_million_micro <= 0:
        return 0
    return -((-tokens * price_per_million_micro) // MICRO)


def call_cost(
    input_tokens: int,
    output_tokens: int,
    input_price_micro: int,
    output_price_micro: int,
) -> int:
    """Cost in micro-coins of one call, input and output priced separately."""
    return token_cost(input_tokens, input_price_micro) + token_cost(
        output_tokens, output_price_micro
    )
