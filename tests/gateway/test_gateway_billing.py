"""Billing modes through the gateway: the strict reservation, soft mode's debt, unlimited pools."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import pytest

from lumen_jupyter.core.money import call_cost, coins_to_micro
from lumen_jupyter.core.tokens import count_message_tokens, count_text_tokens
from lumen_jupyter.demo.backend import DemoBackend, DemoReply

PRO_IN = coins_to_micro(50)
PRO_OUT = coins_to_micro(150)
PROMPT = "What does this call cost?"
MESSAGES = [{"role": "user", "content": PROMPT}]
TOKENS_IN = count_message_tokens(MESSAGES)


@pytest.fixture
def lumen_config(yaml_lumen_config: dict[str, Any]) -> dict[str, Any]:
    return yaml_lumen_config


def pro_cost(tokens_in: int, tokens_out: int) -> int:
    return call_cost(tokens_in, tokens_out, PRO_IN, PRO_OUT)


def full_reply_cost() -> int:
    return pro_cost(TOKENS_IN, count_text_tokens(DemoReply(PROMPT).text()))


# -- soft mode: Lumen's admission, our debt ------------------------------------------------------


@pytest.mark.gateway(
    traits={"billing_mode": "soft"}, pool={"max": 1, "refresh": 1, "starting": 0.002}
)
async def test_soft_mode_admits_a_positive_balance_and_carries_the_debt(
    aclient: Any,
    make_key: Any,
    books: Any,
    demo: DemoBackend,
    lumen_app: Any,
    jp_fetch: Any,
) -> None:
    _, key = await make_key()
    client = aclient(key)
    cost = full_reply_cost()
    assert cost > 2000  # more than the whole balance: strict mode would refuse it

    # Admitted: the balance is positive.  Charged in full: the balance goes negative.
    reply = await client.chat.completions.create(model="demo-pro", messages=MESSAGES)
    assert reply.usage is not None
    row = books.request()
    assert (row.status, row.reserved_micro, row.coins_micro) == ("ok", 0, cost)
    assert books.balance() == 2000 - cost < 0
    assert [(e.kind, e.amount_micro) for e in books.ledger()] == [
        ("grant", 2000),
        ("settle", -cost),
    ]

    # Now blocked: 429, the debt is shown, not forgiven.
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="demo-pro", messages=MESSAGES, max_tokens=1)
    assert "exhausted" in caught.value.message.lower()
    assert f"-{(cost - 2000) / 1e6:.6f}".rstrip("0") in caught.value.message
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert demo.state.requests["chat_completions"] == 1
    profile = json.loads((await jp_fetch("lumen", "api", "profile")).body)
    assert profile["pool"]["balance"]["micro"] == 2000 - cost
    assert profile["pool"]["exhausted"] is True

    # A grant smaller than the debt leaves it blocked; one that clears it re-admits.
    identity = lumen_app.identity
    await asyncio.to_thread(lumen_app.service.grant, identity, cost - 2000)
    assert books.balance() == 0
    with pytest.raises(openai.RateLimitError):
        await client.chat.completions.create(model="demo-pro", messages=MESSAGES, max_tokens=1)
    await asyncio.to_thread(lumen_app.service.grant, identity, 1)
    await client.chat.completions.create(model="demo-pro", messages=MESSAGES, max_tokens=10)
    cut = count_text_tokens(DemoReply(PROMPT, 10).text())
    assert books.balance() == 1 - pro_cost(TOKENS_IN, cut) < 0
    assert demo.state.requests["chat_completions"] == 2
    await books.settled()


@pytest.mark.gateway(traits={"billing_mode": "soft"}, pool={"max": 1, "starting": 0.05})
async def test_soft_mode_streams_and_failures(
    aclient: Any, make_key: Any, books: Any, demo: DemoBackend
) -> None:
    _, key = await make_key()
    client = aclient(key)
    demo.state.set_fault("http_500")
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(model="demo-pro", messages=MESSAGES)
    assert books.balance() == 50_000  # a failure costs nothing in soft mode either
    stream = await client.chat.completions.create(model="demo-pro", messages=MESSAGES, stream=True)
    assert [c async for c in stream]
    assert books.balance() == 50_000 - full_reply_cost()
    await books.settled()


# -- strict mode: what exactly is reserved ---------------------------------------------------------


@pytest.mark.gateway(traits={"default_max_output_tokens": 100})
async def test_strict_mode_reserves_the_worst_case_and_settles_to_the_real_cost(
    aclient: Any, make_key: Any, books: Any
) -> None:
    _, key = await make_key()
    client = aclient(key)
    start = coins_to_micro(20)
    # max_tokens given: in x price + max_tokens x price.
    await client.chat.completions.create(model="demo-pro", messages=MESSAGES, max_tokens=30)
    # No max_tokens: the model's own max_output_tokens (2048 for demo-pro).
    await client.chat.completions.create(model="demo-pro", messages=MESSAGES)
    # max_tokens above the model's limit: capped at the limit.
    await client.chat.completions.create(model="demo-pro", messages=MESSAGES, max_tokens=9000)
    # A model without a limit and no max_tokens: the server's default_max_output_tokens.
    await client.chat.completions.create(model="pro-alias", messages=MESSAGES)
    alias = (coins_to_micro(2), coins_to_micro(3))
    expected_reserved = [
        pro_cost(TOKENS_IN, 30),
        pro_cost(TOKENS_IN, 2048),
        pro_cost(TOKENS_IN, 2048),
        call_cost(TOKENS_IN, 100, *alias),
    ]
    rows = books.requests()
    assert [r.reserved_micro for r in rows] == expected_reserved
    ledger = books.ledger()
    reserves = [-e.amount_micro for e in ledger if e.kind == "reserve"]
    assert reserves == expected_reserved
    for row in rows:
        refund = sum(
            e.amount_micro for e in ledger if e.request_id == row.id and e.kind == "settle"
        )
        assert refund == row.reserved_micro - row.coins_micro
    assert books.balance() == start - books.spent()
    await books.settled()


@pytest.mark.gateway(pool={"max": -2})
async def test_unlimited_pool_is_not_metered(
    aclient: Any, make_key: Any, books: Any, jp_fetch: Any
) -> None:
    key_id, key = await make_key()
    await aclient(key).chat.completions.create(model="demo-pro", messages=MESSAGES)
    row = books.request()
    assert row.metered is False and row.coins_micro == full_reply_cost()
    assert books.balance() is None and books.ledger() == []
    assert books.key(key_id).coins_micro == row.coins_micro  # usage is still counted
    profile = json.loads((await jp_fetch("lumen", "api", "profile")).body)
    assert profile["pool"]["state"] == "unlimited"
    assert profile["tiles"]["coins_used"]["micro"] == row.coins_micro
    await books.settled()


@pytest.mark.gateway(patch=lambda data, url: data.update(users={"ada": {"tokens": {"max": 0}}}))
async def test_a_per_user_pool_of_zero_blocks_the_user(
    aclient: Any, make_key: Any, books: Any
) -> None:
    _, key = await make_key()
    with pytest.raises(openai.PermissionDeniedError) as caught:
        await aclient(key).chat.completions.create(model="demo-free", messages=MESSAGES)
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "pool_blocked"
    assert books.requests() == []
    await books.settled()
