"""An upstream that misbehaves, a client that leaves: what the caller sees, what is charged.

The demo backend is told to fail (``demo.state.set_fault`` or ``POST /_demo/faults``).
Failures before an answer charge nothing; a stream cut short bills the input plus the
output actually delivered, marked estimated.  The ledger invariant holds after each.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from lumen_jupyter.core.money import call_cost, coins_to_micro
from lumen_jupyter.core.tokens import TokenCounter, count_message_tokens, count_text_tokens
from lumen_jupyter.demo.backend import DemoBackend, DemoReply

PRO_IN = coins_to_micro(50)
PRO_OUT = coins_to_micro(150)
START = coins_to_micro(20)
PROMPT = "Tell me a long story about gateways and coins"
MESSAGES = [{"role": "user", "content": PROMPT}]
TOKENS_IN = count_message_tokens(MESSAGES)


@pytest.fixture
def lumen_config(yaml_lumen_config: dict[str, Any]) -> dict[str, Any]:
    return yaml_lumen_config


@pytest.fixture
def http(gateway_url: str, jp_asyncio_loop: asyncio.AbstractEventLoop) -> Iterator[Any]:
    client = httpx.AsyncClient(base_url=gateway_url, timeout=30)
    yield client
    jp_asyncio_loop.run_until_complete(client.aclose())


def words(max_tokens: int | None = None) -> list[str]:
    return [w.text for w in DemoReply(PROMPT, max_tokens).words()]


def tokens_of(texts: list[str]) -> int:
    counter = TokenCounter()
    for text in texts:
        counter.add(text)
    return counter.tokens


def pro_cost(tokens_in: int, tokens_out: int) -> int:
    return call_cost(tokens_in, tokens_out, PRO_IN, PRO_OUT)


def sse_events(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


def assert_no_upstream_detail(text: str, demo: DemoBackend) -> None:
    assert str(demo.port) not in text
    assert "127.0.0.1" not in text and "localhost" not in text
    assert "Demo fault" not in text and "/v1" not in text


def assert_nothing_charged(books: Any) -> None:
    assert books.balance() in (None, START)
    for row in books.requests():
        assert row.status != "ok" and row.coins_micro == 0
        assert (row.input_tokens, row.output_tokens) == (0, 0)
    assert all(r.kind in ("grant", "reserve", "release") for r in books.ledger())


@pytest.fixture
def bearer(make_key: Any) -> Callable[[], Any]:
    """``await bearer()``: headers with a fresh personal key."""

    async def make() -> dict[str, str]:
        _, key = await make_key()
        return {"Authorization": f"Bearer {key}"}

    return make


# -- the client goes away --------------------------------------------------------------------


async def test_client_abort_bills_input_and_delivered_output(
    http: Any, bearer: Any, books: Any, demo: DemoBackend, eventually: Any
) -> None:
    headers = await bearer()
    demo.state.set_fault("slow_chunks", latency_ms=150)
    body = {"model": "demo-pro", "messages": MESSAGES, "stream": True}
    read: list[dict[str, Any]] = []
    async with http.stream("POST", "/chat/completions", json=body, headers=headers) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                read.append(json.loads(line[6:]))
                if len(read) == 3:
                    break
    # Leaving the block closed the connection with the stream unfinished.
    await eventually(lambda: demo.state.streams_aborted == 1)
    await books.settled()
    assert demo.state.streams_completed == 0  # the upstream stream was cancelled

    delivered = [e["choices"][0]["delta"].get("content") or "" for e in read]
    reply = words()
    assert "".join(delivered) == "".join(reply[:2])
    row = books.request()
    assert (row.status, row.estimated) == ("aborted", True)
    assert row.input_tokens == TOKENS_IN
    # At least what the client read, at most one more word (in flight when it left),
    # far less than the whole reply.
    assert tokens_of(reply[:2]) <= row.output_tokens <= tokens_of(reply[:3])
    assert row.output_tokens < count_text_tokens("".join(reply))
    assert row.coins_micro == pro_cost(row.input_tokens, row.output_tokens)
    assert books.balance() == START - row.coins_micro


async def test_client_abort_with_the_openai_client(
    aclient: Any, make_key: Any, books: Any, demo: DemoBackend, eventually: Any
) -> None:
    _, key = await make_key()
    demo.state.set_fault("slow_chunks", latency_ms=100)
    stream = await aclient(key).chat.completions.create(
        model="demo-pro", messages=MESSAGES, stream=True
    )
    got = 0
    async for _chunk in stream:
        got += 1
        if got == 4:
            break
    await stream.close()
    await eventually(lambda: demo.state.streams_aborted == 1)
    await books.settled()
    row = books.request()
    assert (row.status, row.estimated) == ("aborted", True)
    reply = words()
    assert tokens_of(reply[:3]) <= row.output_tokens <= tokens_of(reply[:4])
    assert books.balance() == START - pro_cost(TOKENS_IN, row.output_tokens)


# -- usage missing ------------------------------------------------------------------------------


@pytest.fixture
def slow_settle(lumen_app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make settling take 0.3 s, so billing after [DONE] would show as a pending row."""
    service = lumen_app.service
    real = service.calls.settle_in

    def settle_in(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.3)
        return real(*args, **kwargs)

    monkeypatch.setattr(service.calls, "settle_in", settle_in)


async def test_stream_without_usage_bills_an_estimate_before_done(
    http: Any, bearer: Any, books: Any, demo: DemoBackend, slow_settle: None
) -> None:
    headers = await bearer()
    demo.state.set_fault("no_usage")
    body = {
        "model": "demo-pro",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    events: list[str] = []
    seen_at_done = None
    async with http.stream("POST", "/chat/completions", json=body, headers=headers) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
                if line == "data: [DONE]":
                    seen_at_done = books.request()  # read at once, before anything else runs
    assert events[-1] == "[DONE]"
    assert all('"usage"' not in e for e in events)  # the upstream sent none
    assert seen_at_done is not None and seen_at_done.status == "ok"
    row = books.request()
    text = "".join(words())
    assert row.estimated is True
    assert (row.input_tokens, row.output_tokens) == (TOKENS_IN, count_text_tokens(text))
    assert row.coins_micro == pro_cost(TOKENS_IN, count_text_tokens(text)) > 0
    assert seen_at_done.coins_micro == row.coins_micro
    assert books.balance() == START - row.coins_micro
    await books.settled()


async def test_stream_with_usage_is_billed_before_done(
    http: Any, bearer: Any, books: Any, slow_settle: None
) -> None:
    headers = await bearer()
    body = {"model": "demo-pro", "messages": MESSAGES, "stream": True}
    seen_at_done = None
    async with http.stream("POST", "/chat/completions", json=body, headers=headers) as response:
        async for line in response.aiter_lines():
            if line == "data: [DONE]":
                seen_at_done = books.request()
    assert seen_at_done is not None
    assert (seen_at_done.status, seen_at_done.estimated) == ("ok", False)
    assert seen_at_done.coins_micro == pro_cost(TOKENS_IN, count_text_tokens("".join(words())))
    await books.settled()


async def test_whole_answer_without_usage_bills_an_estimate(
    aclient: Any, make_key: Any, books: Any, demo: DemoBackend
) -> None:
    _, key = await make_key()
    demo.state.set_fault("no_usage")
    reply = await aclient(key).chat.completions.create(model="demo-pro", messages=MESSAGES)
    assert reply.usage is None
    row = books.request()
    text = "".join(words())
    assert reply.choices[0].message.content == text
    assert (row.status, row.estimated) == ("ok", True)
    assert (row.input_tokens, row.output_tokens) == (TOKENS_IN, count_text_tokens(text))
    assert books.balance() == START - pro_cost(TOKENS_IN, count_text_tokens(text))
    await books.settled()


# -- the upstream fails before answering ----------------------------------------------------------


async def test_upstream_5xx_is_a_generic_502_or_503_and_free(
    http: Any, bearer: Any, books: Any, demo: DemoBackend
) -> None:
    headers = await bearer()
    expected = {"http_500": 502, "http_503": 503, "drop": 502}
    for fault in ("http_500", "http_503", "drop"):
        for stream in (False, True):
            # A reused connection dropped before any answer byte is retried once on a
            # new one: dropping twice makes the call fail.
            demo.state.set_fault(fault, count=2 if fault == "drop" else 1)
            body = {"model": "demo-pro", "messages": MESSAGES, "stream": stream}
            response = await http.post("/chat/completions", json=body, headers=headers)
            assert response.status_code == expected[fault], (fault, stream, response.text)
            error = response.json()["error"]
            code = "upstream_unavailable" if fault == "http_503" else "upstream_error"
            assert error["code"] == code
            assert "nothing was charged" in error["message"]
            assert_no_upstream_detail(response.text, demo)
            demo.state.clear_faults()
    applied = demo.state.faults_applied
    assert applied["http_500"] == 2 and applied["http_503"] == 2 and 2 <= applied["drop"] <= 4
    rows = books.requests()
    assert len(rows) == 6 and {r.status for r in rows} == {"error"}
    assert_nothing_charged(books)
    await books.settled()


async def test_upstream_4xx_passes_through_with_its_message(
    aclient: Any, make_key: Any, books: Any, demo: DemoBackend
) -> None:
    _, key = await make_key()
    client = aclient(key)
    demo.state.set_fault("http_400")
    with pytest.raises(openai.BadRequestError) as bad:
        await client.chat.completions.create(model="demo-pro", messages=MESSAGES)
    assert bad.value.status_code == 400
    assert isinstance(bad.value.body, dict)
    assert bad.value.body["message"] == "Demo fault: bad request."
    demo.state.set_fault("http_429")
    with pytest.raises(openai.RateLimitError) as limited:
        await client.chat.completions.create(model="demo-pro", messages=MESSAGES, stream=True)
    assert limited.value.status_code == 429
    assert isinstance(limited.value.body, dict)
    assert limited.value.body["message"] == "Demo fault: rate limit reached."
    assert demo.state.requests["chat_completions"] == 2
    assert_nothing_charged(books)
    await books.settled()


@pytest.mark.gateway(traits={"upstream_timeout": 0.5})
async def test_upstream_timeout_is_504_and_free(
    http: Any, bearer: Any, books: Any, demo: DemoBackend, eventually: Any
) -> None:
    headers = await bearer()
    for stream in (False, True):
        demo.state.set_fault("hang")
        started = time.monotonic()
        body = {"model": "demo-pro", "messages": MESSAGES, "stream": stream}
        response = await http.post("/chat/completions", json=body, headers=headers)
        assert 0.4 < time.monotonic() - started < 10
        assert response.status_code == 504, (stream, response.text)
        assert response.json()["error"]["code"] == "upstream_timeout"
        assert_no_upstream_detail(response.text, demo)
    # The hung upstream requests were abandoned, not left open.
    await eventually(lambda: demo.state.active_requests == 0)
    assert_nothing_charged(books)
    await books.settled()


@pytest.mark.gateway(traits={"upstream_timeout": 0.5})
async def test_stream_stalling_mid_way_is_cut_and_billed_for_what_was_delivered(
    http: Any, bearer: Any, books: Any, demo: DemoBackend
) -> None:
    headers = await bearer()
    demo.state.set_fault("slow_chunks", latency_ms=2000)
    body = {"model": "demo-pro", "messages": MESSAGES, "stream": True}
    response = await http.post("/chat/completions", json=body, headers=headers)
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["code"] == "upstream_timeout"
    assert_no_upstream_detail(events[-2], demo)
    row = books.request()
    assert (row.status, row.estimated) == ("partial", True)
    assert row.output_tokens == 0  # only the empty opening chunk came before the stall
    assert row.coins_micro == pro_cost(TOKENS_IN, 0)
    await books.settled()


def closed_port_url() -> str:
    """A base URL on a loopback port nothing listens on: connections are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def refused_models(url: str) -> list[dict[str, Any]]:
    dead = closed_port_url()
    prices = {"input_cost_per_million": 50, "output_cost_per_million": 150}
    return [
        {"name": "demo-down", **prices, "endpoints": [{"url": dead, "model": "demo-pro"}]},
        {
            "name": "demo-pro",
            **prices,
            "endpoints": [{"url": dead, "model": "demo-pro"}, {"url": url, "model": "demo-pro"}],
        },
    ]


@pytest.mark.gateway(patch=lambda data, url: data.update(models=refused_models(url)))
async def test_refused_connection_is_503_and_a_healthy_endpoint_takes_over(
    aclient: Any, make_key: Any, books: Any, demo: DemoBackend
) -> None:
    _, key = await make_key()
    client = aclient(key)
    for _ in range(2):  # refused, then known down
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model="demo-down", messages=MESSAGES)
        assert caught.value.status_code == 503
        assert "nothing was charged" in caught.value.message
        assert_no_upstream_detail(str(caught.value.body), demo)
    assert_nothing_charged(books)
    # demo-pro: the first endpoint refuses, the second answers - every call succeeds.
    for _ in range(4):
        reply = await client.chat.completions.create(
            model="demo-pro", messages=MESSAGES, max_tokens=5
        )
        assert reply.choices[0].message.content
    assert demo.state.requests["chat_completions"] == 4
    listed = {m.id: m for m in (await client.models.list()).data}
    extra = listed["demo-pro"].model_extra or {}
    assert extra["status"] == "degraded"
    assert extra["instances"] == {"configured": 2, "healthy": 1}
    assert (listed["demo-down"].model_extra or {})["status"] == "down"
    ok = [r for r in books.requests() if r.status == "ok"]
    assert len(ok) == 4
    assert books.balance() == START - sum(r.coins_micro for r in ok)
    await books.settled()


# -- the upstream fails in mid-stream --------------------------------------------------------------


@pytest.mark.parametrize("fault", ["error_mid_stream", "malformed_sse", "drop_mid_stream"])
async def test_mid_stream_failure_sends_error_then_done_and_bills_delivered(
    http: Any, bearer: Any, books: Any, demo: DemoBackend, fault: str
) -> None:
    headers = await bearer()
    # Through the control endpoint, as a separate process would arm it.
    armed = await http.post(
        demo.base_url.replace("/v1", "/_demo/faults"),
        json={"fault": fault, "count": 1, "after_chunks": 4},
    )
    assert armed.status_code == 200
    body = {"model": "demo-pro", "messages": MESSAGES, "stream": True}
    response = await http.post("/chat/completions", json=body, headers=headers)
    assert response.status_code == 200
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["code"].startswith("upstream_")
    assert "billed for what was delivered" in error["message"]
    assert_no_upstream_detail(events[-2], demo)
    chunks = [json.loads(e) for e in events[:-2]]
    assert len(chunks) == 4  # the opening chunk and three words, relayed unchanged
    delivered = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert delivered == "".join(words()[:3])
    row = books.request()
    assert (row.status, row.estimated) == ("partial", True)
    assert (row.input_tokens, row.output_tokens) == (TOKENS_IN, tokens_of(words()[:3]))
    assert row.coins_micro == pro_cost(TOKENS_IN, tokens_of(words()[:3]))
    assert books.balance() == START - row.coins_micro
    await books.settled()


async def test_mid_stream_error_with_the_openai_client(
    aclient: Any, make_key: Any, books: Any, demo: DemoBackend
) -> None:
    _, key = await make_key()
    demo.state.set_fault("error_mid_stream", after_chunks=3)
    stream = await aclient(key).chat.completions.create(
        model="demo-pro", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    received = []
    with pytest.raises(openai.APIError) as caught:
        async for chunk in stream:
            received.append(chunk)
    assert len(received) == 3
    assert "billed for what was delivered" in caught.value.message
    assert_no_upstream_detail(caught.value.message, demo)
    row = books.request()
    assert row.output_tokens == tokens_of(words()[:2])
    await books.settled()
