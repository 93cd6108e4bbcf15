"""Keys with a budget and an expiry, through the real gateway, on SQLite and PostgreSQL.

A key with a 1-coin budget, used by many concurrent calls (half of them streamed),
stops at 1 coin: exactly as many calls as its budget covers at their worst case go
through, the others get a 429 ``key_budget_exhausted`` with ``x-should-retry: false``
before reaching the upstream, and the pool keeps everything else.  An expired key
gets a 401 ``key_expired``.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone
from typing import Any

import openai
import pytest
import tornado.httpclient
from sqlalchemy import update

from lumen_jupyter.core.money import MICRO, call_cost, coins_to_micro
from lumen_jupyter.core.tokens import count_message_tokens
from lumen_jupyter.demo.backend import DemoBackend
from lumen_jupyter.store.schema import api_keys

PRICE = 10_000  # coins per million tokens, in and out: 10,000 micro-coins a token
MESSAGES = [{"role": "user", "content": "Spend my key"}]
TOKENS_IN = count_message_tokens(MESSAGES)
MAX_TOKENS = 1  # the demo then answers exactly one token: real cost == worst case
WORST = call_cost(TOKENS_IN, MAX_TOKENS, coins_to_micro(PRICE), coins_to_micro(PRICE))
BUDGET = 1 * MICRO
AFFORDABLE = BUDGET // WORST
CALLS = 40
POOL_COINS = 100


def priced(data: dict[str, Any], url: str) -> None:
    data["models"] = [
        {
            "name": "priced",
            "input_cost_per_million": PRICE,
            "output_cost_per_million": PRICE,
            "endpoints": [{"url": url, "model": "demo-pro"}],
        }
    ]
    data["defaults"]["tokens"] = {"max": POOL_COINS, "refresh": 0, "starting": POOL_COINS}


@pytest.fixture
def lumen_config(yaml_lumen_config: dict[str, Any], store_url: str) -> dict[str, Any]:
    return {**yaml_lumen_config, "database_url": store_url, "db_threads": 8}


async def post_key(jp_fetch: Any, **body: Any) -> dict[str, Any]:
    response = await jp_fetch("lumen", "api", "keys", method="POST", body=json.dumps(body))
    assert response.code == 201
    return dict(json.loads(response.body))


def test_the_premise() -> None:
    assert 2 <= AFFORDABLE < CALLS // 2
    assert BUDGET % WORST != 0  # the last worst case does not fit exactly: no rounding luck


@pytest.mark.gateway(patch=priced)
async def test_a_one_coin_key_stops_at_one_coin_under_concurrent_calls(
    aclient: Any, jp_fetch: Any, books: Any, demo: DemoBackend
) -> None:
    created = await post_key(jp_fetch, name="workshop", budget=1)
    assert created["budget"] == "1" and created["budget_micro"] == BUDGET
    key_id, key = int(created["id"]), str(created["key"])
    demo.state.latency_ms = 30  # keep admitted calls in flight while others arrive
    client = aclient(key, timeout=60)
    gate = asyncio.Event()

    async def call(index: int) -> str:
        await gate.wait()
        try:
            if index % 2:
                stream = await client.chat.completions.create(
                    model="priced", messages=MESSAGES, max_tokens=MAX_TOKENS, stream=True
                )
                assert [c async for c in stream]
            else:
                await client.chat.completions.create(
                    model="priced", messages=MESSAGES, max_tokens=MAX_TOKENS
                )
        except openai.RateLimitError as error:
            assert isinstance(error.body, dict)
            assert error.body["code"] == "key_budget_exhausted", error.body
            assert error.body["type"] == "insufficient_quota"
            assert error.response.headers["x-should-retry"] == "false"
            return "429"
        return "ok"

    tasks = [asyncio.ensure_future(call(i)) for i in range(CALLS)]
    await asyncio.sleep(0)
    gate.set()
    outcomes = await asyncio.gather(*tasks)
    await books.settled()

    assert outcomes.count("ok") == AFFORDABLE, outcomes
    assert outcomes.count("429") == CALLS - AFFORDABLE
    assert demo.state.requests["chat_completions"] == AFFORDABLE  # refused calls never left
    row = books.key(key_id)
    assert int(row.coins_micro) == AFFORDABLE * WORST <= BUDGET
    assert int(row.reserved_micro) == 0
    assert books.spent() == AFFORDABLE * WORST
    assert books.balance() == POOL_COINS * MICRO - AFFORDABLE * WORST  # the pool kept the rest

    listed = await jp_fetch("lumen", "api", "keys")
    (shown,) = json.loads(listed.body)["keys"]
    assert shown["budget"] == "1" and shown["coins_micro"] == AFFORDABLE * WORST

    # another key of the same user still works: the budget is the key's, not the pool's
    other = await post_key(jp_fetch, name="unlimited")
    reply = await aclient(str(other["key"])).chat.completions.create(
        model="priced", messages=MESSAGES, max_tokens=MAX_TOKENS
    )
    assert reply.usage is not None
    await books.settled()


@pytest.mark.gateway(patch=priced)
async def test_an_expired_key_is_refused_with_401(
    aclient: Any, jp_fetch: Any, books: Any, demo: DemoBackend
) -> None:
    created = await post_key(jp_fetch, name="day-pass", expires_in="1d")
    expires = datetime.fromisoformat(str(created["expires_at"]).replace("Z", "+00:00"))
    assert timedelta(hours=23) < expires - datetime.now(timezone.utc) <= timedelta(days=1)
    client = aclient(str(created["key"]))
    await client.chat.completions.create(model="priced", messages=MESSAGES, max_tokens=1)
    # the day passes
    with books.store.write() as conn:
        conn.execute(
            update(api_keys)
            .where(api_keys.c.id == int(created["id"]))
            .values(expires_at=datetime.now(timezone.utc) - timedelta(seconds=1))
        )
    with pytest.raises(openai.AuthenticationError) as caught:
        await client.chat.completions.create(model="priced", messages=MESSAGES, max_tokens=1)
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["code"] == "key_expired"
    assert "expired at" in caught.value.body["message"]
    assert demo.state.requests["chat_completions"] == 1
    with pytest.raises(openai.AuthenticationError) as listing:
        await client.models.list()
    assert isinstance(listing.value.body, dict)
    assert listing.value.body["code"] == "key_expired"
    listed = json.loads((await jp_fetch("lumen", "api", "keys")).body)["keys"]
    assert listed[0]["expired"] is True
    await books.settled()


@pytest.mark.gateway(patch=priced)
@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"name": "k", "budget": 0}, "budget"),
        ({"name": "k", "budget": "five"}, "budget"),
        ({"name": "k", "expires_in": "soon"}, "expires_in"),
        ({"name": "k", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"name": "k", "expires_at": "2099-01-01T00:00:00Z", "expires_in": "1d"}, "expires_in"),
    ],
)
async def test_bad_limits_are_a_400_and_make_no_key(
    jp_fetch: Any, books: Any, body: dict[str, Any], param: str
) -> None:
    with pytest.raises(tornado.httpclient.HTTPClientError) as caught:
        await jp_fetch("lumen", "api", "keys", method="POST", body=json.dumps(body))
    assert caught.value.code == 400
    assert caught.value.response is not None
    error = json.loads(caught.value.response.body)["error"]
    assert error["param"] == param
    assert books.keys() == []
