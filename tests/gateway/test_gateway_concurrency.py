"""100 calls at once against a pool that affords exactly 10: no overspending, on both stores.

Each call's worst case is known (``max_tokens=1``; the demo then answers exactly one
token, so the real cost equals the reservation and no refund frees room for an eleventh
call).  Strict billing reserves before dispatch, so exactly 10 calls go through and the
other 90 get a 429 without reaching the upstream.  Runs on SQLite and PostgreSQL
(``store_url`` from ``tests/conftest.py``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest

from lumen_jupyter.core.money import MICRO, call_cost, coins_to_micro
from lumen_jupyter.core.tokens import count_message_tokens, count_text_tokens
from lumen_jupyter.demo.backend import DemoBackend, DemoReply

PRICE = 1000  # coins per million tokens, in and out: 1000 micro-coins a token
MESSAGES = [{"role": "user", "content": "Race for the last coins"}]
TOKENS_IN = count_message_tokens(MESSAGES)
MAX_TOKENS = 1
WORST = call_cost(TOKENS_IN, MAX_TOKENS, coins_to_micro(PRICE), coins_to_micro(PRICE))
AFFORDABLE = 10
CALLS = 100
POOL_MICRO = AFFORDABLE * WORST


def race_config(data: dict[str, Any], url: str) -> None:
    data["models"] = [
        {
            "name": "race",
            "input_cost_per_million": PRICE,
            "output_cost_per_million": PRICE,
            "endpoints": [{"url": url, "model": "demo-pro"}],
        }
    ]
    coins = POOL_MICRO / MICRO
    data["defaults"]["tokens"] = {"max": coins, "refresh": 0, "starting": coins}


@pytest.fixture
def lumen_config(yaml_lumen_config: dict[str, Any], store_url: str) -> dict[str, Any]:
    return {**yaml_lumen_config, "database_url": store_url, "db_threads": 8}


def test_the_worst_case_is_the_real_cost() -> None:
    """The premise: with max_tokens=1 the demo answers exactly one token."""
    reply = DemoReply(MESSAGES[0]["content"], MAX_TOKENS)
    assert count_text_tokens(reply.text()) == MAX_TOKENS
    assert WORST == (TOKENS_IN + MAX_TOKENS) * 1000


@pytest.mark.gateway(patch=race_config)
async def test_hundred_concurrent_calls_on_a_pool_for_ten(
    aclient: Any, make_key: Any, books: Any, demo: DemoBackend, store_url: str
) -> None:
    _, key = await make_key()
    demo.state.latency_ms = 30  # keep the admitted calls in flight while others arrive
    client = aclient(key, timeout=60)
    gate = asyncio.Event()

    async def call(index: int) -> str:
        await gate.wait()
        try:
            if index % 2:
                stream = await client.chat.completions.create(
                    model="race", messages=MESSAGES, max_tokens=MAX_TOKENS, stream=True
                )
                chunks = [c async for c in stream]
                assert chunks
            else:
                reply = await client.chat.completions.create(
                    model="race", messages=MESSAGES, max_tokens=MAX_TOKENS
                )
                assert reply.usage is not None
                assert reply.usage.completion_tokens == MAX_TOKENS
        except openai.RateLimitError as error:
            assert error.status_code == 429
            assert isinstance(error.body, dict) and error.body["code"] == "coins_exhausted"
            assert error.response.headers["x-should-retry"] == "false"
            return "429"
        return "ok"

    tasks = [asyncio.ensure_future(call(i)) for i in range(CALLS)]
    await asyncio.sleep(0)
    gate.set()
    outcomes = await asyncio.gather(*tasks)
    await books.settled()

    assert outcomes.count("ok") == AFFORDABLE, outcomes.count("ok")
    assert outcomes.count("429") == CALLS - AFFORDABLE
    assert demo.state.requests["chat_completions"] == AFFORDABLE  # refused calls never left
    rows = books.requests()
    assert len(rows) == AFFORDABLE
    assert all(r.status == "ok" and r.coins_micro == WORST for r in rows)
    assert all(r.estimated is False for r in rows)
    assert books.balance() == 0
    assert books.spent() == POOL_MICRO

    if store_url.startswith("sqlite"):
        # Writes are serialized on SQLite: the ledger in id order is the balance's history,
        # and it never went below zero.
        running = 0
        for entry in books.ledger():
            running += int(entry.amount_micro)
            assert running >= 0, entry

    # The pool is spent: the next call is refused at once, the balance stays at 0.
    with pytest.raises(openai.RateLimitError):
        await client.chat.completions.create(model="race", messages=MESSAGES, max_tokens=1)
    assert books.balance() == 0
    await books.settled()


@pytest.mark.gateway(patch=race_config)
async def test_concurrent_failures_release_every_reservation(
    aclient: Any, make_key: Any, books: Any, demo: DemoBackend
) -> None:
    """Upstream errors under load give every reservation back: the pool is whole again."""
    _, key = await make_key()
    demo.state.set_fault("http_500", count=30)
    client = aclient(key)

    async def call() -> int:
        try:
            await client.chat.completions.create(model="race", messages=MESSAGES, max_tokens=1)
        except openai.APIStatusError as error:
            return error.status_code
        return 200

    statuses = await asyncio.gather(*(call() for _ in range(30)))
    await books.settled()
    # At most 10 were in flight at once; refused or failed, none was charged.
    assert set(statuses) <= {502, 429}
    assert 1 <= statuses.count(502) <= 30
    assert books.balance() == POOL_MICRO
    assert books.spent() == 0
    assert all(r.status == "error" for r in books.requests())
    await books.settled()
