"""A hostile or broken upstream behind the real gateway: every case a careful operator
would try before putting paid providers behind it.

The upstream is a raw loopback server of our own that sends exactly the bytes of
each case.  After every case the Jupyter server must still answer ``/api/status``
within a second (nothing an upstream sends may block the event loop) and the
books must balance: a failed call releases its reservation, a stream cut short
bills what was delivered.
"""

from __future__ import annotations

import asyncio
import faulthandler
import gzip
import json
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from lumen_jupyter.core.money import call_cost, coins_to_micro
from lumen_jupyter.core.tokens import count_message_tokens
from lumen_jupyter.demo.backend import DemoBackend

from .conftest import DEFAULT_POOL, default_models, model_entry
from .scripted import (
    Scripted,
    answer,
    chunked,
    completion,
    sse_chunk,
    sse_usage,
)

Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter

PRICE_IN, PRICE_OUT = coins_to_micro(50), coins_to_micro(150)
START = coins_to_micro(DEFAULT_POOL["starting"])
MESSAGES = [{"role": "user", "content": "Say hello"}]
TOKENS_IN = count_message_tokens(MESSAGES)
HEAD_OK = b"HTTP/1.1 200 OK\r\n"
SSE_HEAD = HEAD_OK + b"Content-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.fixture(autouse=True)
def watchdog() -> Iterator[None]:
    """A frozen event loop would hang the test: end the run with a traceback instead."""
    faulthandler.dump_traceback_later(120, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def hostile(jp_asyncio_loop: asyncio.AbstractEventLoop) -> Iterator[Scripted]:
    """The misbehaving upstream; each test gives it a script."""
    server = Scripted()
    jp_asyncio_loop.run_until_complete(server.start())
    yield server
    jp_asyncio_loop.run_until_complete(server.stop())


@pytest.fixture
def lumen_yaml(demo: DemoBackend, hostile: Scripted) -> dict[str, Any]:
    models = [model_entry("hostile", hostile.base_url, "up"), *default_models(demo.base_url)]
    return {"models": models, "defaults": {"models": "allowed", "tokens": dict(DEFAULT_POOL)}}


@pytest.fixture
def lumen_config(yaml_lumen_config: dict[str, Any]) -> dict[str, Any]:
    return yaml_lumen_config


@pytest.fixture
def call(
    gateway_url: str, make_key: Any, jp_asyncio_loop: asyncio.AbstractEventLoop
) -> Iterator[Any]:
    """``await call(stream=False)``: one chat completion of the hostile model, raw."""
    client = httpx.AsyncClient(base_url=gateway_url, timeout=60)
    headers: dict[str, str] = {}

    async def send(stream: bool = False, model: str = "hostile") -> httpx.Response:
        if not headers:
            _, key = await make_key()
            headers["Authorization"] = f"Bearer {key}"
        body = {"model": model, "messages": MESSAGES, "stream": stream, "max_tokens": 50}
        return await client.post("/chat/completions", json=body, headers=headers)

    yield send
    jp_asyncio_loop.run_until_complete(client.aclose())


async def server_alive(jp_fetch: Any) -> None:
    started = time.monotonic()
    response = await asyncio.wait_for(jp_fetch("api", "status"), 1.0)
    assert response.code == 200 and time.monotonic() - started < 1.0


def nothing_charged(books: Any) -> None:
    assert books.balance() == START
    for row in books.requests():
        assert row.status != "ok" and row.coins_micro == 0, row


def billed(row: Any, tokens_in: int, tokens_out: int, status: str = "ok") -> None:
    assert row.status == status, row
    assert (row.input_tokens, row.output_tokens) == (tokens_in, tokens_out), row
    assert row.coins_micro == call_cost(tokens_in, tokens_out, PRICE_IN, PRICE_OUT)


def events(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


def error_event(text: str) -> dict[str, Any]:
    found = [json.loads(e) for e in events(text) if e != "[DONE]" and "error" in json.loads(e)]
    assert len(found) == 1, text
    assert events(text)[-1] == "[DONE]"
    return dict(found[0]["error"])


def bad_gateway(response: httpx.Response) -> None:
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["code"] == "upstream_error" and "nothing was charged" in error["message"]
    assert "127.0.0.1" not in response.text


async def finish(jp_fetch: Any, books: Any) -> None:
    await server_alive(jp_fetch)
    await books.settled()


# -- framing the parser must refuse --------------------------------------------------------


def replies(wire: bytes, *, then: bytes = b"", pause: float = 0.05) -> Any:
    """A script that reads each request and answers ``wire`` (then ``then`` after a pause)."""

    async def script(server: Scripted, reader: Reader, writer: Writer) -> None:
        while True:
            await server.read_request(reader)
            writer.write(wire)
            await writer.drain()
            if then:
                await asyncio.sleep(pause)
                writer.write(then)
                await writer.drain()
                await reader.read()  # the client gives up on this connection
                return

    return script


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_a_negative_chunk_size_is_refused(
    stream: bool, hostile: Scripted, call: Any, books: Any, jp_fetch: Any
) -> None:
    head = SSE_HEAD if stream else HEAD_OK + b"Transfer-Encoding: chunked\r\n\r\n"
    hostile.script = replies(head, then=b"1\r\nA\r\n-6\r\n")
    response = await call(stream)
    if stream:
        assert response.status_code == 200
        assert error_event(response.text)["code"] == "upstream_dropped"
        billed(books.request(), TOKENS_IN, 0, "partial")  # the input, estimated; no output
    else:
        bad_gateway(response)
        nothing_charged(books)
    await finish(jp_fetch, books)


async def test_a_health_probe_of_a_negative_chunk_size_marks_the_endpoint_down(
    hostile: Scripted, lumen_app: Any, jp_fetch: Any, caplog: pytest.LogCaptureFixture
) -> None:
    hostile.script = replies(
        HEAD_OK + b"Transfer-Encoding: chunked\r\n\r\n", then=b"1\r\nA\r\n-6\r\n"
    )
    upstreams = lumen_app.gateway.upstreams
    model = lumen_app.service.catalog.models["hostile"]
    with caplog.at_level(logging.WARNING, logger="lumen_jupyter.gateway"):
        assert await upstreams.probe(model.endpoints[0]) is False
    assert "chunk size" in caplog.text and upstreams.status(model)[0] == "down"
    await server_alive(jp_fetch)


@pytest.mark.parametrize("length", [b"abc", b"-5", b"\xb2", b"5\r\nContent-Length: 6"])
async def test_bad_content_lengths_are_refused_without_leaking_connections(
    length: bytes, hostile: Scripted, call: Any, books: Any, jp_fetch: Any
) -> None:
    hostile.script = replies(HEAD_OK + b"Content-Length: " + length + b"\r\n\r\n" + completion())
    for _ in range(5):  # the database threads open their pooled connections (files) first
        bad_gateway(await call())
    descriptors = len(os.listdir("/proc/self/fd"))
    for _ in range(30):
        bad_gateway(await call())
    await asyncio.sleep(0.2)
    assert hostile.open_connections == 0
    assert len(os.listdir("/proc/self/fd")) <= descriptors + 3
    nothing_charged(books)
    await finish(jp_fetch, books)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_length_and_chunked_together_are_refused(
    stream: bool, hostile: Scripted, call: Any, books: Any, jp_fetch: Any
) -> None:
    body = sse_chunk("hi") + b"data: [DONE]\n\n" if stream else completion()
    hostile.script = replies(
        HEAD_OK + b"Content-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(body)
    )
    bad_gateway(await call(stream))
    nothing_charged(books)
    await finish(jp_fetch, books)


async def test_a_head_over_64_kib_in_one_piece_is_refused(
    hostile: Scripted, call: Any, books: Any, jp_fetch: Any
) -> None:
    body = completion()
    head = HEAD_OK + b"X-Pad: " + b"p" * 70_000 + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
    hostile.script = replies(head + body)
    bad_gateway(await call())
    nothing_charged(books)
    await finish(jp_fetch, books)


# -- connections that end, or carry more than they should -----------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_a_connection_closed_mid_body(
    stream: bool, hostile: Scripted, call: Any, books: Any, jp_fetch: Any
) -> None:
    async def script(server: Scripted, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        if stream:
            writer.write(SSE_HEAD + chunked(sse_chunk("Hello"), sse_chunk(" there"))[:-5])
        else:
            writer.write(HEAD_OK + b"Content-Length: 5000\r\n\r\n" + completion()[:40])
        await writer.drain()
        await asyncio.sleep(0.05)

    hostile.script = script
    response = await call(stream)
    if stream:
        assert response.status_code == 200
        assert error_event(response.text)["code"] == "upstream_dropped"
        assert "Hello" in response.text
        row = books.request()
        assert row.status == "partial" and row.output_tokens > 0 and row.coins_micro > 0
    else:
        bad_gateway(response)
        nothing_charged(books)
    await finish(jp_fetch, books)


async def test_bytes_on_an_idle_connection_never_answer_the_next_call(
    hostile: Scripted, call: Any, books: Any, jp_fetch: Any
) -> None:
    injected = json.loads(completion("INJECTED"))
    injected["usage"] = {"prompt_tokens": 90000, "completion_tokens": 90000}
    late = answer(json.dumps(injected).encode())

    async def script(server: Scripted, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        writer.write(answer(completion()))
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(late)  # an answer to no request
        await writer.drain()
        while True:
            await server.read_request(reader)
            writer.write(answer(completion("wrong connection")))
            await writer.drain()

    hostile.script = script
    for _ in range(3):
        response = await call()
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"].startswith("Hello")
        await asyncio.sleep(0.15)
    assert hostile.connections == 3
    for row in books.requests():
        billed(row, 7, 5)
    await finish(jp_fetch, books)


async def test_a_reused_connection_closed_before_answering_is_retried_once(
    hostile: Scripted, call: Any, books: Any, jp_fetch: Any
) -> None:
    async def script(server: Scripted, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        writer.write(answer(completion()))
        await writer.drain()
        await reader.read(1)  # closes as the next request arrives, as keep-alive races do

    hostile.script = script
    for _ in range(4):
        response = await call()
        assert response.status_code == 200, response.text
    assert len(hostile.requests) == 4  # the upstream saw each completed call once
    assert hostile.connections == 4
    for row in books.requests():
        billed(row, 7, 5)
    await finish(jp_fetch, books)


@pytest.mark.parametrize(
    "within",
    [
        pytest.param(5.0, id="default"),
        pytest.param(
            1.5,
            id="upstream_keepalive",
            marks=pytest.mark.gateway(traits={"upstream_keepalive": 0.5}),
        ),
    ],
)
async def test_idle_connections_are_dropped_before_5_seconds(
    within: float, hostile: Scripted, call: Any, books: Any, jp_fetch: Any
) -> None:
    idle_for: list[float] = []

    async def script(server: Scripted, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        writer.write(answer(completion()))
        await writer.drain()
        answered = time.monotonic()
        await reader.read()
        idle_for.append(time.monotonic() - answered)

    hostile.script = script
    assert (await call()).status_code == 200
    deadline = time.monotonic() + 6
    while not idle_for and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert idle_for and idle_for[0] < within
    billed(books.request(), 7, 5)
    await finish(jp_fetch, books)


# -- sizes ----------------------------------------------------------------------------------


@pytest.mark.gateway(traits={"max_upstream_answer_bytes": 1024 * 1024})
async def test_a_huge_whole_answer_is_cut_at_the_limit(
    hostile: Scripted, call: Any, books: Any, jp_fetch: Any
) -> None:
    sent = [0]

    async def script(server: Scripted, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        writer.write(HEAD_OK + b"Content-Length: 300000000\r\n\r\n")
        block = b" " * 65536
        while sent[0] < 300_000_000:
            writer.write(block)
            await writer.drain()
            sent[0] += len(block)

    hostile.script = script
    bad_gateway(await call())
    assert sent[0] < 16 * 1024 * 1024  # read no further than the limit (and buffers)
    nothing_charged(books)
    await finish(jp_fetch, books)


async def test_a_40_mb_event_line_is_refused_in_linear_time(
    hostile: Scripted, call: Any, books: Any, jp_fetch: Any
) -> None:
    sent = [0]

    async def script(server: Scripted, reader: Reader, writer: Writer) -> None:
        await server.read_request(reader)
        writer.write(SSE_HEAD)
        writer.write(chunked(sse_chunk("Hello"))[:-5])
        block = b"x" * 65536
        writer.write(chunked(b'data: {"x": "')[:-5])
        while sent[0] < 40 * 1024 * 1024:
            writer.write(b"%x\r\n%s\r\n" % (len(block), block))
            await writer.drain()
            sent[0] += len(block)

    hostile.script = script
    cpu = time.process_time()
    response = await call(stream=True)
    cpu = time.process_time() - cpu
    assert response.status_code == 200
    assert error_event(response.text)["code"] == "upstream_malformed"
    assert sent[0] < 24 * 1024 * 1024  # refused at the line limit, not read to its end
    assert cpu < 5.0
    row = books.request()
    assert row.status == "partial" and row.output_tokens > 0
    await finish(jp_fetch, books)


# -- answers that are fine, if unusual --------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_a_gzip_answer_is_decoded_and_billed(
    stream: bool, hostile: Scripted, call: Any, books: Any, jp_fetch: Any
) -> None:
    if stream:
        body = sse_chunk("Hello") + sse_chunk(" there") + sse_usage(7, 5) + b"data: [DONE]\n\n"
        kind = b"Content-Type: text/event-stream\r\n"
    else:
        body = completion()
        kind = b"Content-Type: application/json\r\n"
    hostile.script = replies(answer(gzip.compress(body), kind + b"Content-Encoding: gzip\r\n"))
    response = await call(stream)
    assert response.status_code == 200, response.text
    if stream:
        assert "Hello" in response.text and events(response.text)[-1] == "[DONE]"
    else:
        assert response.json()["choices"][0]["message"]["content"].startswith("Hello")
    billed(books.request(), 7, 5)
    await finish(jp_fetch, books)


async def test_an_empty_data_line_does_not_end_a_stream(
    hostile: Scripted, call: Any, books: Any, jp_fetch: Any
) -> None:
    body = sse_chunk("Hello") + b"data:\n\ndata: \r\n\r\n" + sse_chunk(" there")
    body += sse_usage(7, 5) + b"data: [DONE]\n\n"
    hostile.script = replies(SSE_HEAD + chunked(body))
    response = await call(stream=True)
    assert response.status_code == 200
    text = "".join(
        json.loads(e)["choices"][0]["delta"]["content"]
        for e in events(response.text)
        if e != "[DONE]"
    )
    assert text == "Hello there" and events(response.text)[-1] == "[DONE]"
    billed(books.request(), 7, 5)
    await finish(jp_fetch, books)


# -- what the upstream says about itself --------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("status", [429, 503])
async def test_429_and_503_keep_their_status_and_retry_after(
    status: int, stream: bool, hostile: Scripted, call: Any, books: Any, jp_fetch: Any
) -> None:
    reason = b"429 Too Many Requests" if status == 429 else b"503 Service Unavailable"
    error = json.dumps({"error": {"message": "slow down", "type": "x"}}).encode()
    hostile.script = replies(answer(error, b"Retry-After: 17\r\n", status=reason))
    response = await call(stream)
    assert response.status_code == status, response.text
    assert response.headers["Retry-After"] == "17"
    assert response.headers.get("x-should-retry") == ("true" if status == 429 else None)
    assert "error" in response.json()
    nothing_charged(books)
    await finish(jp_fetch, books)


async def test_other_5xx_are_a_generic_502(
    hostile: Scripted, call: Any, books: Any, jp_fetch: Any
) -> None:
    hostile.script = replies(answer(b"<html>boom at 10.0.0.7</html>", status=b"500 Oops"))
    response = await call()
    bad_gateway(response)
    assert "10.0.0.7" not in response.text
    nothing_charged(books)
    await finish(jp_fetch, books)
