"""A call never costs more than its reservation, whatever the caller asks or the upstream says.

Each test is an attack that once broke the books: greedy ``max_tokens``, concurrent
greedy calls on a tiny pool, ``n`` choices, an upstream that reports absurd or broken
usage, a key revoked mid-stream, refused calls eating the rate limit.  The upstream
is a small server of the test's own on loopback that answers with whatever usage it
is told to and remembers what it was asked.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
import tornado.httpserver
import tornado.netutil
import tornado.web

from lumen_jupyter.core.money import coins_to_micro, token_cost
from lumen_jupyter.core.tokens import TokenCounter, count_message_tokens
from tests.gateway.conftest import model_entry

MESSAGES = [{"role": "user", "content": "How many coins does this cost?"}]
TOKENS_IN = count_message_tokens(MESSAGES)
REPLY = ["Not ", "more ", "than ", "reserved."]
PRICE_IN, PRICE_OUT = 50, 150  # coins per million tokens


class Upstream:
    """What the hostile upstream does, and what it was sent."""

    def __init__(self) -> None:
        self.usage: Any = {"prompt_tokens": TOKENS_IN, "completion_tokens": 4}
        self.delay = 0.0  # seconds between stream events
        self.events = len(REPLY)
        self.bodies: list[dict[str, Any]] = []


class ChatHandler(tornado.web.RequestHandler):
    def initialize(self, upstream: Upstream) -> None:
        self.upstream = upstream

    async def post(self) -> None:
        body = json.loads(self.request.body)
        self.upstream.bodies.append(body)
        usage = self.upstream.usage
        if not body.get("stream"):
            answer: dict[str, Any] = {
                "id": "x",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "".join(REPLY)}}
                ],
            }
            if usage is not None:
                answer["usage"] = usage
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps(answer))
            return
        self.set_header("Content-Type", "text/event-stream")
        for i in range(self.upstream.events):
            delta = {"content": REPLY[i % len(REPLY)]}
            event = {"id": "x", "model": body["model"], "choices": [{"index": 0, "delta": delta}]}
            self.write(f"data: {json.dumps(event)}\n\n")
            await self.flush()
            if self.upstream.delay:
                await asyncio.sleep(self.upstream.delay)
        if usage is not None:
            self.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n")
        self.write("data: [DONE]\n\n")
        self.finish()


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


@pytest.fixture
def upstream_url(upstream: Upstream, jp_asyncio_loop: asyncio.AbstractEventLoop) -> Iterator[str]:
    app = tornado.web.Application([(r"/v1/chat/completions", ChatHandler, {"upstream": upstream})])
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server = tornado.httpserver.HTTPServer(app)
    server.add_sockets(sockets)
    yield f"http://127.0.0.1:{sockets[0].getsockname()[1]}/v1"
    server.stop()
    jp_asyncio_loop.run_until_complete(server.close_all_connections())


def models(url: str) -> list[dict[str, Any]]:
    return [
        # declares an output limit
        model_entry("limited", url, "up", PRICE_IN, PRICE_OUT, max_output_tokens=100),
        # declares only a context length
        model_entry("open", url, "up", PRICE_IN, PRICE_OUT, max_model_len=1000),
    ]


@pytest.fixture
def lumen_yaml(upstream_url: str, gateway_marker: dict[str, Any]) -> dict[str, Any]:
    pool = gateway_marker.get("pool", {"max": 1, "refresh": 0, "starting": 1})
    return {
        "models": models(upstream_url),
        "defaults": {"models": "allowed", "tokens": pool},
    }


@pytest.fixture
def lumen_config(yaml_lumen_config: dict[str, Any]) -> dict[str, Any]:
    return yaml_lumen_config


@pytest.fixture
def http(
    gateway_url: str, session_token: str, jp_asyncio_loop: asyncio.AbstractEventLoop
) -> Iterator[httpx.AsyncClient]:
    client = httpx.AsyncClient(
        base_url=gateway_url, timeout=30, headers={"Authorization": f"Bearer {session_token}"}
    )
    yield client
    jp_asyncio_loop.run_until_complete(client.aclose())


def tokens_of(texts: list[str]) -> int:
    counter = TokenCounter()
    for text in texts:
        counter.add(text)
    return counter.tokens


def worst(output_tokens: int, choices: int = 1) -> int:
    return token_cost(TOKENS_IN, coins_to_micro(PRICE_IN)) + token_cost(
        output_tokens * choices, coins_to_micro(PRICE_OUT)
    )


def chat(model: str = "limited", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": MESSAGES, **extra}


def sse(text: str) -> list[dict[str, Any]]:
    return [
        json.loads(line[6:])
        for line in text.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("model", "asked", "sent"),
    [
        ("limited", {"max_tokens": 2**62}, {"max_tokens": 100}),
        ("limited", {"max_completion_tokens": 2**63 + 5}, {"max_completion_tokens": 100}),
        ("limited", {}, {"max_tokens": 100}),
        ("limited", {"max_tokens": 7}, {"max_tokens": 7}),
        ("open", {"max_tokens": 10**12}, {"max_tokens": 1000}),
        ("open", {}, {"max_tokens": 1000}),
    ],
)
async def test_the_upstream_is_asked_for_at_most_the_reserved_output(
    http: httpx.AsyncClient,
    upstream: Upstream,
    books: Any,
    model: str,
    asked: dict[str, int],
    sent: dict[str, int],
    stream: bool,
) -> None:
    response = await http.post("/chat/completions", json=chat(model, stream=stream, **asked))
    assert response.status_code == 200, response.text
    (forwarded,) = upstream.bodies
    assert {k: forwarded.get(k) for k in sent} == sent
    row = books.request()
    budget = next(iter(sent.values()))
    assert row.cap_micro == worst(budget)
    assert row.coins_micro <= row.cap_micro
    assert books.balance() == coins_to_micro(1) - row.coins_micro
    await books.settled()


async def test_twenty_concurrent_greedy_calls_cannot_overspend_one_coin(
    http: httpx.AsyncClient, upstream: Upstream, books: Any
) -> None:
    upstream.usage = {"prompt_tokens": TOKENS_IN, "completion_tokens": 10**6}  # overruns
    body = chat("limited", max_tokens=200_000)
    answers = await asyncio.gather(*(http.post("/chat/completions", json=body) for _ in range(20)))
    statuses = sorted(a.status_code for a in answers)
    admitted = statuses.count(200)
    # each may cost up to worst(100) ~ 0.0155 coins: the pool covers 64 of them, all admitted
    assert admitted == 20, statuses
    rows = books.requests()
    assert all(r.coins_micro == r.cap_micro == worst(100) for r in rows)
    assert all(r.overrun_micro > 0 for r in rows)  # recorded for the admin, not billed
    assert books.balance() == coins_to_micro(1) - 20 * worst(100) >= 0
    await books.settled()


@pytest.mark.gateway(pool={"max": 0.05, "refresh": 0, "starting": 0.05})
async def test_a_pool_for_three_calls_admits_three_of_twenty(
    http: httpx.AsyncClient, upstream: Upstream, books: Any
) -> None:
    upstream.usage = {"prompt_tokens": 10**9, "completion_tokens": 10**9}
    upstream.delay = 0.05
    body = chat("limited", max_tokens=200_000, stream=True)
    answers = await asyncio.gather(*(http.post("/chat/completions", json=body) for _ in range(20)))
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == coins_to_micro(0.05) // worst(100) == 3
    assert statuses.count(429) == 17
    assert books.balance() == coins_to_micro(0.05) - 3 * worst(100) >= 0
    await books.settled()


@pytest.mark.parametrize("stream", [False, True])
async def test_absurd_reported_usage_is_charged_the_cap_and_logged(
    http: httpx.AsyncClient,
    upstream: Upstream,
    books: Any,
    stream: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    upstream.usage = {"prompt_tokens": TOKENS_IN, "completion_tokens": 10**9}
    with caplog.at_level(logging.WARNING, logger="lumen_jupyter.gateway"):
        response = await http.post("/chat/completions", json=chat(stream=stream))
    assert response.status_code == 200
    row = books.request()
    assert row.coins_micro == row.cap_micro == worst(100)
    assert row.output_tokens == 100  # counted up to what was reserved
    assert row.overrun_micro == token_cost(10**9, coins_to_micro(PRICE_OUT)) + token_cost(
        TOKENS_IN, coins_to_micro(PRICE_IN)
    ) - worst(100)
    assert any("above the cap" in r.getMessage() for r in caplog.records)
    await books.settled()


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": TOKENS_IN, "completion_tokens": "ten"},
        {"prompt_tokens": TOKENS_IN, "completion_tokens": 1e20},
        {"prompt_tokens": TOKENS_IN, "completion_tokens": -5},
        {"prompt_tokens": -1, "completion_tokens": 3},
        {"prompt_tokens": TOKENS_IN, "completion_tokens": True},
        {"prompt_tokens": TOKENS_IN, "completion_tokens": 10**13},
        {"prompt_tokens": TOKENS_IN},
        "lots",
    ],
    ids=["string", "float", "negative", "negative-in", "bool", "huge", "missing", "not-a-dict"],
)
async def test_broken_reported_usage_is_billed_from_what_was_delivered(
    http: httpx.AsyncClient, upstream: Upstream, books: Any, usage: Any, stream: bool
) -> None:
    upstream.usage = usage
    response = await http.post("/chat/completions", json=chat(stream=stream))
    assert response.status_code == 200, response.text
    row = books.request()
    assert row.status == "ok" and row.estimated
    assert row.output_tokens == tokens_of(REPLY)  # what was delivered
    assert row.input_tokens == TOKENS_IN
    assert 0 < row.coins_micro < row.cap_micro
    await books.settled()


@pytest.mark.gateway(pool={"max": 1, "refresh": 0, "starting": 1})
async def test_choices_are_reserved_and_checked(
    http: httpx.AsyncClient, upstream: Upstream, books: Any
) -> None:
    ok = await http.post("/chat/completions", json=chat(n=3, max_tokens=50))
    assert ok.status_code == 200
    assert books.request().cap_micro == worst(50, choices=3)
    assert upstream.bodies[-1]["n"] == 3 and upstream.bodies[-1]["max_tokens"] == 50
    # 100 choices of 100 tokens: 1.5 coins, more than the pool holds
    too_many = await http.post("/chat/completions", json=chat(n=100))
    assert too_many.status_code == 429
    for bad in (0, 129, "2", 2.0, True, -1):
        response = await http.post("/chat/completions", json=chat(n=bad))
        assert response.status_code == 400, (bad, response.text)
        assert response.json()["error"]["param"] == "n"
    response = await http.post("/chat/completions", json=chat(best_of=21))
    assert response.status_code == 400
    assert len(upstream.bodies) == 1
    await books.settled()


async def stream_and_revoke(
    gateway_url: str, key: str, revoke: Callable[[], Awaitable[Any]]
) -> tuple[list[dict[str, Any]], float]:
    """Stream a long answer with ``key``, call ``revoke`` after 20 events, and return the
    events received and the seconds from the revocation to the end of the stream."""
    events: list[dict[str, Any]] = []
    revoked_at = 0.0
    async with (
        httpx.AsyncClient(timeout=30) as client,
        client.stream(
            "POST",
            f"{gateway_url}/chat/completions",
            json=chat("open", stream=True, max_tokens=1000),
            headers={"Authorization": f"Bearer {key}"},
        ) as response,
    ):
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                events.append(json.loads(line[6:]))
            if len(events) == 20 and not revoked_at:
                revoked_at = time.monotonic()
                await revoke()
    return events, time.monotonic() - revoked_at


@pytest.mark.gateway(pool={"max": 100, "refresh": 0, "starting": 100})
async def test_revoking_a_key_stops_its_running_stream_within_a_second(
    gateway_url: str, upstream: Upstream, books: Any, make_key: Any, jp_fetch: Any
) -> None:
    upstream.events, upstream.delay = 2000, 0.02  # 40 s of stream
    key_id, key = await make_key("script")
    events, stopped_after = await stream_and_revoke(
        gateway_url, key, lambda: jp_fetch("lumen", "api", "keys", str(key_id), method="DELETE")
    )
    assert stopped_after < 1.0
    assert events[-1]["error"]["code"] == "revoked"
    delivered = sum(1 for e in events if e.get("choices"))
    assert 20 <= delivered < 100
    row = books.request()
    assert row.status == "partial" and row.estimated
    assert row.output_tokens > 0 and row.coins_micro < row.cap_micro
    await books.settled()


@pytest.mark.gateway(pool={"max": 100, "refresh": 0, "starting": 100})
async def test_a_key_revoked_by_another_process_stops_the_stream_at_its_next_checkpoint(
    gateway_url: str, upstream: Upstream, books: Any, make_key: Any, lumen_app: Any
) -> None:
    from lumen_jupyter.core.accounts import Identity
    from lumen_jupyter.core.service import LumenService

    upstream.events, upstream.delay = 2000, 0.02
    key_id, key = await make_key("script")
    # the administrator's command: its own service object on the same store
    admin = LumenService(lumen_app.store, lumen_app.service.catalog, lumen_app.service.secret)
    events, stopped_after = await stream_and_revoke(
        gateway_url,
        key,
        lambda: asyncio.to_thread(admin.revoke_key, Identity("ada", "ada"), key_id),
    )
    assert stopped_after < 2.5  # the next checkpoint is at most 1 s away
    assert events[-1]["error"]["code"] == "revoked"
    await books.settled()


@pytest.mark.gateway(traits={"rate_limit_per_minute": 3})
async def test_refused_calls_do_not_count_toward_the_rate_limit(
    gateway_url: str, make_key: Any, books: Any, upstream: Upstream
) -> None:
    _, key = await make_key("script")
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30, headers=headers) as client:
        for _ in range(5):  # refused: 100 choices may cost 1.5 coins, the pool holds 1
            refused = await client.post("/chat/completions", json=chat(n=100))
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "coins_exhausted"
        for _ in range(3):
            ok = await client.post("/chat/completions", json=chat("limited"))
            assert ok.status_code == 200, ok.text
        limited = await client.post("/chat/completions", json=chat("limited"))
        assert limited.status_code == 429
        assert limited.json()["error"]["code"] == "rate_limited"
    await books.settled()
