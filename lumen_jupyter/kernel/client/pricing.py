"""Prices, costs and the worst-case estimate, computed in the kernel.

The rule is the server's reservation rule (:mod:`lumen_jupyter.core.billing`):
input tokens estimated by :mod:`lumen_jupyter.core.tokens`, output tokens capped
at the caller's ``max_tokens`` (never above the model's own limit), else the
model's limit, else 4096; each part priced in exact micro-coins and rounded up.
So an estimate shown before a call is what the gateway will reserve for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ...core.money import coins_to_micro, format_coins, token_cost
from ...core.tokens import count_message_tokens

DEFAULT_OUTPUT_CAP = 4096
"""Output tokens the server reserves when neither caller nor model sets a limit."""


@dataclass(frozen=True)
class ModelPrice:
    """What a model costs per million tokens, in micro-coins, and its output limit."""

    name: str
    input_micro: int
    output_micro: int
    max_output_tokens: int | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelPrice:
        """From a profile-API model row or an OpenAI ``/v1/models`` object."""
        name = str(data.get("name") or data.get("id") or "")
        limit = data.get("max_output_tokens")
        return cls(
            name=name,
            input_micro=_price_micro(data.get("input_cost_per_million")),
            output_micro=_price_micro(data.get("output_cost_per_million")),
            max_output_tokens=int(limit) if isinstance(limit, int) and limit > 0 else None,
        )


def _price_micro(value: Any) -> int:
    """A price as the REST API sends it (``{"micro", "text"}``) or as /v1 does (a number)."""
    if isinstance(value, Mapping):
        if isinstance(value.get("micro"), int):
            return int(value["micro"])
        value = value.get("text", 0)
    if value is None or isinstance(value, bool):
        return 0
    try:
        return coins_to_micro(str(value))
    except ValueError:
        return 0


def coins_json(micro: int) -> dict[str, Any]:
    """An exact amount as the REST API writes it."""
    return {"micro": micro, "text": format_coins(micro)}


def as_messages(prompt_or_messages: str | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A prompt string becomes one user message; a message list is taken as is."""
    if isinstance(prompt_or_messages, str):
        return [{"role": "user", "content": prompt_or_messages}]
    return [dict(message) for message in prompt_or_messages]


def output_budget(price: ModelPrice, requested: int | None) -> tuple[int, str]:
    """Output tokens the server reserves, and why: ``max_tokens``, ``model`` or ``default``."""
    cap = price.max_output_tokens or DEFAULT_OUTPUT_CAP
    if requested is None or requested <= 0:
        return cap, "model" if price.max_output_tokens else "default"
    if price.max_output_tokens and requested > price.max_output_tokens:
        return price.max_output_tokens, "model"
    return requested, "max_tokens"


def call_cost_micro(price: ModelPrice, input_tokens: int, output_tokens: int) -> int:
    """The cost of a call in micro-coins, exactly as the gateway settles it."""
    return token_cost(input_tokens, price.input_micro) + token_cost(
        output_tokens, price.output_micro
    )


def estimate(
    price: ModelPrice,
    prompt_or_messages: str | Sequence[Mapping[str, Any]],
    max_tokens: int | None = None,
) -> dict[str, Any]:
    """The worst-case cost of one chat call, before sending it."""
    messages = as_messages(prompt_or_messages)
    input_tokens = count_message_tokens(messages)
    output_tokens, cap_source = output_budget(price, max_tokens)
    input_micro = token_cost(input_tokens, price.input_micro)
    output_micro = token_cost(output_tokens, price.output_micro)
    return {
        "model": price.name,
        "input_tokens": input_tokens,
        "max_output_tokens": output_tokens,
        "output_cap": cap_source,
        "input_cost_per_million": coins_json(price.input_micro),
        "output_cost_per_million": coins_json(price.output_micro),
        "input_coins": coins_json(input_micro),
        "output_coins": coins_json(output_micro),
        "worst_case": coins_json(input_micro + output_micro),
    }
