"""The kernel's worst-case estimate is exactly the server's reservation."""

from __future__ import annotations

import pytest

from lumen_jupyter.core import billing
from lumen_jupyter.core.defaults import embedded_default
from lumen_jupyter.core.tokens import count_message_tokens
from lumen_jupyter.kernel.client import pricing

CATALOG = embedded_default("http://127.0.0.1:1/v1")


def test_the_default_cap_matches_the_server() -> None:
    assert pricing.DEFAULT_OUTPUT_CAP == billing.DEFAULT_OUTPUT_CAP


@pytest.mark.parametrize("name", sorted(CATALOG.models))
@pytest.mark.parametrize("max_tokens", [None, 1, 200, 5000])
@pytest.mark.parametrize(
    "prompt",
    [
        "Hello",
        "Explain coin budgets to a new student, with examples." * 7,
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}],
    ],
)
def test_estimate_equals_the_reservation(name: str, max_tokens: int | None, prompt: object) -> None:
    spec = CATALOG.models[name]
    row = {
        "name": name,
        "input_cost_per_million": {"micro": spec.input_price_micro, "text": "?"},
        "output_cost_per_million": {"micro": spec.output_price_micro, "text": "?"},
        "max_output_tokens": spec.max_output_tokens,
    }
    estimate = pricing.estimate(pricing.ModelPrice.from_json(row), prompt, max_tokens)  # type: ignore[arg-type]
    messages = pricing.as_messages(prompt)  # type: ignore[arg-type]
    tokens = count_message_tokens(messages)
    output = billing.output_budget(spec, max_tokens)
    assert estimate["input_tokens"] == tokens
    assert estimate["max_output_tokens"] == output
    assert estimate["worst_case"]["micro"] == billing.worst_case_cost(spec, tokens, output)


def test_v1_prices_are_read_exactly() -> None:
    price = pricing.ModelPrice.from_json(
        {"id": "m", "input_cost_per_million": 0.1, "output_cost_per_million": 150.0}
    )
    assert (price.input_micro, price.output_micro) == (100_000, 150_000_000)
    # 1,000 in + 300 out at 0.5 and 1.0 coins per million = 0.0008 coins (Lumen's example)
    example = pricing.ModelPrice("x", 500_000, 1_000_000)
    assert pricing.call_cost_micro(example, 1000, 300) == 800


def test_a_model_without_an_output_limit_takes_the_callers_max_tokens() -> None:
    free = pricing.ModelPrice("free", 0, 1_000_000, None)
    assert pricing.output_budget(free, None) == (4096, "default")
    assert pricing.output_budget(free, 10_000) == (10_000, "max_tokens")
    capped = pricing.ModelPrice("capped", 0, 1_000_000, 1024)
    assert pricing.output_budget(capped, 10_000) == (1024, "model")
