"""Tests of the demo backend over real sockets, with the real OpenAI client.

Most tests run the backend in the test's event loop (fixture ``backend``); the
ones using the synchronous OpenAI client, which would block that loop, talk to
one backend started through the command line (fixture ``cli_url``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import os
import re
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio

from lumen_jupyter.core.tokens import count_message_tokens, count_prompt_tokens, count_text_tokens
from lumen_jupyter.demo.backend import (
    DEMO_MODELS,
    LARGE_REPLY_MIN_TOKENS,
    DemoBackend,
    DemoReply,
    DemoState,
    make_app,
)
from lumen_jupyter.demo.faults import NO_FAULTS

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_LINE = re.compile(r"^demo backend listening on (http://127\.0\.0\.1:(\d+)/v1)$")
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Summarise the notebook, please!"},
]


# -- fixtures and helpers ------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_tornado_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A handler that raises (instead of misbehaving on purpose) fails the test."""
    caplog.set_level(logging.ERROR, logger="tornado")
    yield
    errors = [r for r in caplog.records if r.name.startswith("tornado") and r.levelno >= 40]
    assert not errors, [r.getMessage() for r in errors]


@pytest_asyncio.fixture
async def backend() -> AsyncIterator[DemoBackend]:
    async with DemoBackend() as running:
        yield running


@pytest_asyncio.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    # verify=False: only plain http is used, and skipping the CA bundle saves ~0.1 s a client.
    async with httpx.AsyncClient(timeout=5, verify=False) as client:
        yield client


@pytest_asyncio.fixture
async def client(backend: DemoBackend) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=backend.base_url,
        api_key="any",
        max_retries=0,
        timeout=5,
        http_client=openai.DefaultAsyncHttpxClient(verify=False),
    ) as api:
        yield api


def root_url(base_url: str) -> str:
    return base_url.removesuffix("/v1")


async def arm(http: httpx.AsyncClient, backend: DemoBackend, **fault: Any) -> None:
    response = await http.post(root_url(backend.base_url) + "/_demo/faults", json=fault)
    assert response.status_code == 200, response.text


async def stats(http: httpx.AsyncClient, backend: DemoBackend) -> dict[str, Any]:
    response = await http.get(root_url(backend.base_url) + "/_demo/stats")
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


async def wait_for_stats(
    http: httpx.AsyncClient, backend: DemoBackend, **expected: int
) -> dict[str, Any]:
    deadline = time.monotonic() + 3
    while True:
        current = await stats(http, backend)
        if all(current[key] == value for key, value in expected.items()):
            return current
        assert time.monotonic() < deadline, (expected, current)
        await asyncio.sleep(0.01)


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "demo-free", "messages": MESSAGES, **extra}


async def sse_data(response: httpx.Response) -> list[str]:
    return [line[6:] async for line in response.aiter_lines() if line.startswith("data: ")]


def assert_openai_error(body: Any, error_type: str | None = None) -> None:
    assert set(body) == {"error"}
    error = body["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert {"message", "type", "code"} <= set(error)
    if error_type is not None:
        assert error["type"] == error_type


# -- models --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_models_are_listed(client: openai.AsyncOpenAI) -> None:
    page = await client.models.list()
    assert [model.id for model in page.data] == ["demo-free", "demo-pro", "demo-restricted"]
    assert [model.id for model in page.data] == [model.id for model in DEMO_MODELS]
    assert {model.owned_by for model in page.data} == {"lumen-demo"}
    assert {model.object for model in page.data} == {"model"}


@pytest.mark.asyncio
async def test_one_model_and_an_unknown_one(
    client: openai.AsyncOpenAI, http: httpx.AsyncClient, backend: DemoBackend
) -> None:
    model = await client.models.retrieve("demo-pro")
    assert (model.id, model.owned_by) == ("demo-pro", "lumen-demo")
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("gpt-nothing")
    response = await http.get(backend.base_url + "/models/gpt-nothing")
    assert response.status_code == 404
    assert_openai_error(response.json(), "invalid_request_error")
    assert response.json()["error"]["code"] == "model_not_found"


def test_demo_models_are_frozen_and_described() -> None:
    for model in DEMO_MODELS:
        assert model.description and model.context_window > model.max_output_tokens > 0
    with pytest.raises(AttributeError):
        DEMO_MODELS[0].id = "other"


# -- chat completions ------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "messages",
    [
        MESSAGES,
        [{"role": "user", "content": "héllo wörld — ça va? 東京 😀 x=1+2;"}],
        [{"role": "user", "content": [{"type": "text", "text": "parts of"}, {"type": "text"}]}],
        [{"role": "user", "content": ""}],
        [{"role": "user", "content": "a" * 300 + " tail"}],
    ],
)
async def test_chat_usage_is_exactly_the_token_functions(
    client: openai.AsyncOpenAI, messages: list[dict[str, Any]]
) -> None:
    completion = await client.chat.completions.create(model="demo-free", messages=messages)
    text = completion.choices[0].message.content
    assert text is not None and text.startswith("Demo reply to:")
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == count_message_tokens(messages)
    assert completion.usage.completion_tokens == count_text_tokens(text)
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + count_text_tokens(text)
    assert 20 - 3 <= completion.usage.completion_tokens <= 60


@pytest.mark.asyncio
async def test_chat_reply_is_deterministic_and_echoes_the_last_user_message(
    client: openai.AsyncOpenAI,
) -> None:
    first = await client.chat.completions.create(model="demo-free", messages=MESSAGES)
    again = await client.chat.completions.create(model="demo-free", messages=MESSAGES)
    text = first.choices[0].message.content
    assert text == again.choices[0].message.content
    assert text is not None and text.startswith("Demo reply to: Summarise the notebook, please!")
    seeded = await client.chat.completions.create(model="demo-free", messages=MESSAGES, seed=7)
    assert seeded.choices[0].message.content != text


@pytest.mark.asyncio
@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
@pytest.mark.parametrize("limit", [1, 2, 7, 19])
async def test_max_tokens_cuts_the_reply(
    client: openai.AsyncOpenAI, field: str, limit: int
) -> None:
    completion = await client.chat.completions.create(
        model="demo-free",
        messages=MESSAGES,
        **{field: limit},
    )
    text = completion.choices[0].message.content
    assert text is not None and completion.usage is not None
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == count_text_tokens(text) <= limit
    assert completion.usage.completion_tokens >= limit - 2  # cut at a word boundary
    natural = await client.chat.completions.create(
        model="demo-free", messages=MESSAGES, max_tokens=1000
    )
    assert natural.choices[0].finish_reason == "stop"
    assert (natural.choices[0].message.content or "").startswith(text)


@pytest.mark.asyncio
async def test_streamed_chat_equals_the_whole_reply_with_usage(
    client: openai.AsyncOpenAI,
) -> None:
    whole = await client.chat.completions.create(model="demo-pro", messages=MESSAGES)
    stream = await client.chat.completions.create(
        model="demo-pro",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    words = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    text = "".join(words)
    assert text == whole.choices[0].message.content
    assert len(words) == len(text.split())  # one chunk per word
    assert all(word.startswith(" ") for word in words[1:])
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == count_text_tokens(text)
    assert chunks[-1].usage.prompt_tokens == count_message_tokens(MESSAGES)
    assert chunks[-1].usage == whole.usage
    assert all(c.usage is None for c in chunks[:-1])


@pytest.mark.asyncio
async def test_stream_without_include_usage_has_no_usage_chunk(
    http: httpx.AsyncClient, backend: DemoBackend
) -> None:
    url = backend.base_url + "/chat/completions"
    for options in ({}, {"stream_options": {"include_usage": False}}):
        async with http.stream("POST", url, json=chat_body(stream=True, **options)) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            data = await sse_data(response)
        assert data[-1] == "[DONE]"
        events = [json.loads(item) for item in data[:-1]]
        assert all("usage" not in event for event in events)
        assert all(event["choices"] for event in events)
        assert events[-1]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.asyncio
async def test_streamed_chat_cut_by_max_tokens(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="demo-free",
        messages=MESSAGES,
        max_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == count_text_tokens(text) <= 5


# -- completions and embeddings --------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("prompt", ["Once upon a time", ["first prompt", "second"]])
async def test_completions_whole_and_streamed(
    client: openai.AsyncOpenAI, prompt: str | list[str]
) -> None:
    whole = await client.completions.create(model="demo-free", prompt=prompt, max_tokens=30)
    text = whole.choices[0].text
    assert whole.object == "text_completion" and text.startswith("Demo reply to:")
    assert whole.usage is not None
    assert whole.usage.prompt_tokens == count_prompt_tokens(prompt)
    assert whole.usage.completion_tokens == count_text_tokens(text) <= 30
    stream = await client.completions.create(
        model="demo-free",
        prompt=prompt,
        max_tokens=30,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == text
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage


@pytest.mark.asyncio
async def test_embeddings_in_both_encodings(
    client: openai.AsyncOpenAI, http: httpx.AsyncClient, backend: DemoBackend
) -> None:
    inputs = ["alpha", "beta gamma", "alpha"]
    result = await client.embeddings.create(model="demo-free", input=inputs)  # base64 on the wire
    vectors = [item.embedding for item in result.data]
    assert [item.index for item in result.data] == [0, 1, 2]
    assert all(len(vector) == 16 for vector in vectors)
    assert vectors[0] == vectors[2] and vectors[0] != vectors[1]
    assert all(math.isclose(math.hypot(*vector), 1.0, rel_tol=1e-5) for vector in vectors)
    assert result.usage.prompt_tokens == result.usage.total_tokens == count_prompt_tokens(inputs)
    floats = await client.embeddings.create(
        model="demo-free", input="alpha", encoding_format="float", dimensions=8
    )
    assert len(floats.data[0].embedding) == 8
    raw = await http.post(
        backend.base_url + "/embeddings",
        json={"model": "demo-free", "input": "alpha", "encoding_format": "base64"},
    )
    packed = base64.b64decode(raw.json()["data"][0]["embedding"])
    assert list(struct.unpack("<16f", packed)) == pytest.approx(vectors[0], abs=1e-6)
    tokens = await client.embeddings.create(model="demo-free", input=[[1, 2, 3], [4]])
    assert tokens.usage.prompt_tokens == 4 and len(tokens.data) == 2


# -- bad requests ------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/chat/completions", b"{not json", 400),
        ("/chat/completions", b"[1, 2]", 400),
        ("/chat/completions", b"", 400),
        ("/chat/completions", {"messages": MESSAGES}, 400),
        ("/chat/completions", {"model": "demo-free"}, 400),
        ("/chat/completions", {"model": "demo-free", "messages": []}, 400),
        ("/chat/completions", {"model": "demo-free", "messages": ["hi"]}, 400),
        ("/chat/completions", chat_body(max_tokens=0), 400),
        ("/chat/completions", chat_body(max_tokens="10"), 400),
        ("/chat/completions", chat_body(model="gpt-unknown"), 404),
        ("/completions", {"model": "demo-free"}, 400),
        ("/embeddings", {"model": "demo-free", "input": []}, 400),
        ("/embeddings", {"model": "demo-free", "input": "x", "dimensions": 0}, 400),
        ("/nowhere", {}, 404),
    ],
)
async def test_bad_requests_get_openai_shaped_errors(
    http: httpx.AsyncClient,
    backend: DemoBackend,
    path: str,
    body: bytes | dict[str, Any],
    status: int,
) -> None:
    url = backend.base_url + path
    if isinstance(body, bytes):
        response = await http.post(url, content=body)
    else:
        response = await http.post(url, json=body)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert_openai_error(response.json(), "invalid_request_error")


@pytest.mark.asyncio
async def test_bad_request_through_the_client(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        await client.chat.completions.create(model="demo-free", messages=[])
    assert raised.value.status_code == 400
    assert raised.value.body is not None


# -- faults ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_latency_fault_delays_the_next_request_only(
    client: openai.AsyncOpenAI, http: httpx.AsyncClient, backend: DemoBackend
) -> None:
    await arm(http, backend, fault="latency", latency_ms=200)
    started = time.monotonic()
    await client.chat.completions.create(model="demo-free", messages=MESSAGES)
    assert time.monotonic() - started >= 0.19
    faults = await http.get(root_url(backend.base_url) + "/_demo/faults")
    assert faults.json() == {"faults": []}  # used up by that one request
    await client.chat.completions.create(model="demo-free", messages=MESSAGES)
    assert (await stats(http, backend))["faults_applied"] == {"latency": 1}


@pytest.mark.asyncio
async def test_slow_chunks_fault_spaces_out_the_chunks(
    client: openai.AsyncOpenAI, http: httpx.AsyncClient, backend: DemoBackend
) -> None:
    await arm(http, backend, fault="slow_chunks", latency_ms=30)
    started = time.monotonic()
    stream = await client.chat.completions.create(
        model="demo-free",
        messages=MESSAGES,
        max_tokens=4,
        stream=True,
    )
    chunks = [chunk async for chunk in stream]
    # Every chunk after the first waits 30 ms, whatever the jitter of each arrival.
    assert len(chunks) >= 4
    assert time.monotonic() - started >= 0.03 * (len(chunks) - 1)


@pytest.mark.asyncio
async def test_no_usage_fault_hides_usage(
    client: openai.AsyncOpenAI, http: httpx.AsyncClient, backend: DemoBackend
) -> None:
    await arm(http, backend, fault="no_usage", count=2)
    stream = await client.chat.completions.create(
        model="demo-free",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert all(chunk.usage is None for chunk in chunks) and chunks[-1].choices
    whole = await client.chat.completions.create(model="demo-free", messages=MESSAGES)
    assert whole.usage is None
    again = await client.chat.completions.create(model="demo-free", messages=MESSAGES)
    assert again.usage is not None


@pytest.mark.asyncio
async def test_error_mid_stream_fault(
    client: openai.AsyncOpenAI, http: httpx.AsyncClient, backend: DemoBackend
) -> None:
    await arm(http, backend, fault="error_mid_stream", after_chunks=3)
    stream = await client.chat.completions.create(
        model="demo-free",
        messages=MESSAGES,
        stream=True,
    )
    received = []
    with pytest.raises(openai.APIError) as raised:
        async for chunk in stream:
            received.append(chunk)
    assert len(received) == 3  # the role chunk and two words
    assert "stream failed" in raised.value.message
    await arm(http, backend, fault="error_mid_stream", after_chunks=1)
    url = backend.base_url + "/chat/completions"
    invalid = await http.post(url, content=b"{")  # invalid requests leave faults armed
    assert invalid.status_code == 400
    async with http.stream("POST", url, json=chat_body(stream=True)) as response:
        data = await sse_data(response)
    assert len(data) == 3 and data[-1] == "[DONE]"
    assert_openai_error(json.loads(data[1]), "server_error")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("fault", "status", "exception"),
    [
        ("http_500", 500, openai.InternalServerError),
        ("http_503", 503, openai.InternalServerError),
        ("http_429", 429, openai.RateLimitError),
        ("http_400", 400, openai.BadRequestError),
    ],
)
async def test_http_error_faults(
    client: openai.AsyncOpenAI,
    http: httpx.AsyncClient,
    backend: DemoBackend,
    fault: str,
    status: int,
    exception: type[openai.APIStatusError],
) -> None:
    await arm(http, backend, fault=fault, count=2)
    with pytest.raises(exception) as raised:
        await client.chat.completions.create(model="demo-free", messages=MESSAGES)
    assert raised.value.status_code == status
    assert raised.value.body is not None
    with pytest.raises(exception):
        await client.chat.completions.create(
            model="demo-free",
            messages=MESSAGES,
            stream=True,
        )
    completion = await client.chat.completions.create(model="demo-free", messages=MESSAGES)
    assert completion.choices[0].message.content
    await arm(http, backend, fault=fault)
    response = await http.post(
        backend.base_url + "/embeddings", json={"model": "demo-free", "input": "x"}
    )
    assert response.status_code == status
    assert_openai_error(response.json())
    assert response.json()["error"]["code"] == f"demo_{fault}"
    assert ("retry-after" in response.headers) == (status in (429, 503))


@pytest.mark.asyncio
async def test_hang_fault_lasts_until_the_client_gives_up(
    http: httpx.AsyncClient, backend: DemoBackend
) -> None:
    await arm(http, backend, fault="hang")
    with pytest.raises(httpx.ReadTimeout):
        await http.post(backend.base_url + "/chat/completions", json=chat_body(), timeout=0.3)
    after = await wait_for_stats(http, backend, active_requests=0, client_disconnects=1)
    assert after["faults_applied"] == {"hang": 1}
    response = await http.post(backend.base_url + "/chat/completions", json=chat_body())
    assert response.status_code == 200


@pytest.mark.asyncio
async def test_stopping_the_backend_releases_a_hung_request(http: httpx.AsyncClient) -> None:
    backend = DemoBackend()
    await backend.start()
    backend.state.set_fault("hang")
    request = asyncio.ensure_future(
        http.post(backend.base_url + "/chat/completions", json=chat_body(), timeout=5)
    )
    await wait_for_stats(http, backend, active_requests=1)
    started = time.monotonic()
    await backend.stop()
    assert time.monotonic() - started < 0.5
    assert backend.state.active_requests == 0
    with pytest.raises(httpx.TransportError):
        await request


@pytest.mark.asyncio
async def test_drop_fault_closes_without_a_response(
    client: openai.AsyncOpenAI, http: httpx.AsyncClient, backend: DemoBackend
) -> None:
    await arm(http, backend, fault="drop", count=2)
    with pytest.raises(httpx.RemoteProtocolError):
        await http.post(backend.base_url + "/chat/completions", json=chat_body())
    with pytest.raises(openai.APIConnectionError):
        await client.chat.completions.create(model="demo-free", messages=MESSAGES)
    completion = await client.chat.completions.create(model="demo-free", messages=MESSAGES)
    assert completion.choices[0].message.content


@pytest.mark.asyncio
async def test_drop_mid_stream_fault_cuts_the_connection(
    client: openai.AsyncOpenAI, http: httpx.AsyncClient, backend: DemoBackend
) -> None:
    await arm(http, backend, fault="drop_mid_stream", after_chunks=4, count=2)
    received: list[str] = []
    url = backend.base_url + "/chat/completions"
    with pytest.raises(httpx.RemoteProtocolError):
        async with http.stream("POST", url, json=chat_body(stream=True)) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    received.append(line)
    assert len(received) == 4 and "[DONE]" not in received[-1]
    stream = await client.chat.completions.create(
        model="demo-free",
        messages=MESSAGES,
        stream=True,
    )
    with pytest.raises(openai.APIConnectionError):
        async for _chunk in stream:
            pass
    current = await wait_for_stats(http, backend, active_requests=0)
    assert current["streams_started"] == 2 and current["streams_completed"] == 0
    assert current["streams_aborted"] == 0  # the server cut them, not the client


@pytest.mark.asyncio
async def test_malformed_sse_fault(
    client: openai.AsyncOpenAI, http: httpx.AsyncClient, backend: DemoBackend
) -> None:
    await arm(http, backend, fault="malformed_sse", after_chunks=2, count=2)
    url = backend.base_url + "/chat/completions"
    async with http.stream("POST", url, json=chat_body(stream=True)) as response:
        data = await sse_data(response)
    assert len(data) == 3
    json.loads(data[1])
    with pytest.raises(json.JSONDecodeError):
        json.loads(data[2])
    stream = await client.chat.completions.create(
        model="demo-free",
        messages=MESSAGES,
        stream=True,
    )
    with pytest.raises(json.JSONDecodeError):
        async for _chunk in stream:
            pass


@pytest.mark.asyncio
async def test_mid_stream_fault_fires_before_the_finish_chunk_of_a_short_reply(
    http: httpx.AsyncClient, backend: DemoBackend
) -> None:
    backend.state.set_fault("error_mid_stream", after_chunks=1000)
    url = backend.base_url + "/chat/completions"
    async with http.stream("POST", url, json=chat_body(stream=True, max_tokens=3)) as response:
        data = await sse_data(response)
    events = [json.loads(item) for item in data[:-1]]
    assert "error" in events[-1] and data[-1] == "[DONE]"
    assert all(not e["choices"][0]["finish_reason"] for e in events[:-1])


@pytest.mark.asyncio
async def test_client_disconnect_mid_stream_is_counted(
    http: httpx.AsyncClient, backend: DemoBackend
) -> None:
    backend.state.set_fault("slow_chunks", latency_ms=20)
    url = backend.base_url + "/chat/completions"
    async with http.stream("POST", url, json=chat_body(stream=True)) as response:
        lines = response.aiter_lines()
        assert (await anext(lines)).startswith("data: ")
    after = await wait_for_stats(http, backend, streams_aborted=1, active_requests=0)
    assert after["client_disconnects"] == 1 and after["streams_completed"] == 0


@pytest.mark.asyncio
async def test_fault_control_endpoint(http: httpx.AsyncClient, backend: DemoBackend) -> None:
    faults_url = root_url(backend.base_url) + "/_demo/faults"
    await arm(http, backend, fault="http_500", count=-1)
    await arm(http, backend, fault="slow_chunks")
    listed = (await http.get(faults_url)).json()["faults"]
    assert {item["fault"]: item["count"] for item in listed} == {"http_500": -1, "slow_chunks": 1}
    assert listed[1]["latency_ms"] == 50.0
    for _ in range(3):  # -1 lasts until cleared
        response = await http.post(backend.base_url + "/chat/completions", json=chat_body())
        assert response.status_code == 500
    await http.delete(faults_url, params={"fault": "http_500"})
    assert [item["fault"] for item in (await http.get(faults_url)).json()["faults"]] == [
        "slow_chunks"
    ]
    assert (await http.delete(faults_url)).json() == {"faults": []}
    response = await http.post(backend.base_url + "/chat/completions", json=chat_body())
    assert response.status_code == 200
    for bad in (
        {"fault": "explode"},
        {"fault": "latency", "count": 0},
        {"fault": "drop", "after_chunks": -1},
    ):
        response = await http.post(faults_url, json=bad)
        assert response.status_code == 400
        assert_openai_error(response.json())
    assert (await http.get(faults_url)).json() == {"faults": []}


@pytest.mark.asyncio
async def test_stats_count_requests_and_connections(
    client: openai.AsyncOpenAI, http: httpx.AsyncClient, backend: DemoBackend
) -> None:
    await client.models.list()
    await client.chat.completions.create(model="demo-free", messages=MESSAGES)
    await client.completions.create(model="demo-free", prompt="x")
    await client.embeddings.create(model="demo-free", input="x")
    current = await stats(http, backend)
    assert current["requests"] == {
        "models": 1,
        "chat_completions": 1,
        "completions": 1,
        "embeddings": 1,
    }
    assert current["active_connections"] >= 1 and current["active_requests"] == 0
    await client.close()
    await http.aclose()
    async with httpx.AsyncClient(verify=False) as fresh:
        await wait_for_stats(fresh, backend, active_connections=1)  # only this one
        reset = (await fresh.delete(root_url(backend.base_url) + "/_demo/stats")).json()
        assert set(reset["requests"].values()) == {0}


@pytest.mark.asyncio
async def test_listen_starts_without_await_and_stop_is_idempotent(
    http: httpx.AsyncClient,
) -> None:
    backend = DemoBackend(latency_ms=1, chunk_delay_ms=2)
    with pytest.raises(RuntimeError):
        _ = backend.base_url
    backend.listen()
    with pytest.raises(RuntimeError):
        backend.listen()
    assert (backend.state.latency_ms, backend.state.chunk_delay_ms) == (1.0, 2.0)
    assert (await http.get(backend.base_url + "/models")).status_code == 200
    await backend.stop()
    await backend.stop()
    with pytest.raises(httpx.ConnectError):
        await http.get(backend.base_url + "/models")


@pytest.mark.asyncio
async def test_control_endpoints_can_be_left_out() -> None:
    state = DemoState()
    async with (
        DemoBackend(state=state, enable_control=False) as backend,
        httpx.AsyncClient(verify=False) as http,
    ):
        response = await http.post(root_url(backend.base_url) + "/_demo/faults", json={})
        assert response.status_code == 404
        assert (await http.get(backend.base_url + "/models")).status_code == 200
    assert make_app(state).settings["log_function"] is not None


# -- DemoState and DemoReply without the network ------------------------------------------


def test_terminal_fault_leaves_answer_shaping_faults_armed() -> None:
    state = DemoState()
    state.set_fault("http_503")
    state.set_fault("error_mid_stream", after_chunks=2)
    state.set_fault("latency", latency_ms=5)
    first = state.take_faults(streaming=True)
    assert (first.terminal, first.mid_stream, first.latency_ms) == ("http_503", None, 5.0)
    second = state.take_faults(streaming=True)
    assert (second.terminal, second.mid_stream, second.after_chunks) == (
        None,
        "error_mid_stream",
        2,
    )
    assert state.take_faults(streaming=True) is NO_FAULTS


def test_stream_only_faults_wait_for_a_stream() -> None:
    state = DemoState(latency_ms=1, chunk_delay_ms=2)
    state.set_fault("drop_mid_stream")
    state.set_fault("slow_chunks", latency_ms=10)
    plain = state.take_faults(streaming=False)
    assert (plain.mid_stream, plain.chunk_delay_ms, plain.latency_ms) == (None, 2.0, 1.0)
    streamed = state.take_faults(streaming=True)
    assert (streamed.mid_stream, streamed.chunk_delay_ms) == ("drop_mid_stream", 12.0)
    assert state.armed_faults() == []
    with pytest.raises(ValueError):
        state.set_fault("nonsense")
    with pytest.raises(ValueError):
        state.set_fault("latency", latency_ms=-1)


@pytest.mark.parametrize(
    "prompt",
    ["", "plain words here", "émoji 😀 and 東京, (brackets) a.b.c!!", "x" * 100, "\t tabs \n"],
)
@pytest.mark.parametrize("max_tokens", [None, 1, 3, 10, 1000])
def test_reply_tokens_match_count_text_tokens(prompt: str, max_tokens: int | None) -> None:
    reply = DemoReply(prompt, max_tokens)
    text = reply.text()
    assert reply.tokens == count_text_tokens(text)
    if max_tokens is not None:
        assert reply.tokens <= max_tokens
    assert reply.finish_reason == ("length" if max_tokens in (1, 3, 10) else "stop")


def test_large_reply_is_generated_lazily() -> None:
    reply = DemoReply("benchmark", 10_000_000)
    assert reply.large and reply.finish_reason == "length"
    words = reply.words()
    produced = [next(words) for _ in range(10_000)]
    assert reply.tokens == count_text_tokens("".join(word.text for word in produced))
    assert reply.tokens < 10_000_000


@pytest.mark.asyncio
async def test_large_non_streamed_reply_fills_max_tokens(
    http: httpx.AsyncClient, backend: DemoBackend
) -> None:
    body = chat_body(max_tokens=LARGE_REPLY_MIN_TOKENS)
    response = await http.post(backend.base_url + "/chat/completions", json=body)
    assert response.headers.get("transfer-encoding") == "chunked"
    payload = response.json()
    text = payload["choices"][0]["message"]["content"]
    assert payload["choices"][0]["finish_reason"] == "length"
    assert payload["usage"]["completion_tokens"] == count_text_tokens(text)
    assert LARGE_REPLY_MIN_TOKENS - 2 <= count_text_tokens(text) <= LARGE_REPLY_MIN_TOKENS


@pytest.mark.asyncio
async def test_large_stream_can_be_abandoned(http: httpx.AsyncClient, backend: DemoBackend) -> None:
    url = backend.base_url + "/chat/completions"
    body = chat_body(max_tokens=10_000_000, stream=True)
    async with http.stream("POST", url, json=body) as response:
        seen = 0
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                seen += 1
                if seen == 2_000:
                    break
    await wait_for_stats(http, backend, streams_aborted=1, active_requests=0)


# -- the command line and the synchronous client ---------------------------------------------


def start_cli(*args: str) -> tuple[subprocess.Popen[str], str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "lumen_jupyter.demo.backend", "--port", "0", *args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env=env,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    match = READY_LINE.match(line)
    if match is None:
        process.kill()
        pytest.fail(f"unexpected first line from the CLI: {line!r}")
    assert int(match.group(2)) > 0
    return process, match.group(1)


@pytest.fixture(scope="module")
def cli_url() -> Iterator[str]:
    process, url = start_cli()
    yield url
    process.terminate()
    assert process.wait(timeout=5) == 0


@pytest.fixture(scope="module")
def sync_http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5, verify=False) as client:
        yield client


@pytest.fixture
def sync_client(cli_url: str, sync_http: httpx.Client) -> Iterator[openai.OpenAI]:
    sync_http.delete(root_url(cli_url) + "/_demo/faults")
    with openai.OpenAI(
        base_url=cli_url,
        api_key="any",
        max_retries=0,
        timeout=5,
        http_client=openai.DefaultHttpxClient(verify=False),
    ) as api:
        yield api


def test_cli_prints_the_ready_line_and_serves(cli_url: str, sync_http: httpx.Client) -> None:
    models = sync_http.get(cli_url + "/models").json()
    assert [model["id"] for model in models["data"]] == [model.id for model in DEMO_MODELS]


def test_cli_latency_flag(sync_http: httpx.Client) -> None:
    process, url = start_cli("--latency-ms", "150", "--chunk-delay-ms", "1")
    try:
        started = time.monotonic()
        response = sync_http.post(url + "/chat/completions", json=chat_body())
        assert response.status_code == 200 and time.monotonic() - started >= 0.14
    finally:
        process.terminate()
        assert process.wait(timeout=5) == 0


def test_sync_client_chat_and_stream(sync_client: openai.OpenAI) -> None:
    whole = sync_client.chat.completions.create(model="demo-restricted", messages=MESSAGES)
    assert whole.usage is not None
    assert whole.usage.prompt_tokens == count_message_tokens(MESSAGES)
    with sync_client.chat.completions.create(
        model="demo-restricted",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    ) as stream:
        chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        whole.choices[0].message.content
    )
    assert chunks[-1].usage == whole.usage


def test_sync_client_sees_faults(
    sync_client: openai.OpenAI, sync_http: httpx.Client, cli_url: str
) -> None:
    faults_url = root_url(cli_url) + "/_demo/faults"
    assert sync_http.post(faults_url, json={"fault": "http_429"}).status_code == 200
    with pytest.raises(openai.RateLimitError):
        sync_client.chat.completions.create(model="demo-free", messages=MESSAGES)
    sync_http.post(faults_url, json={"fault": "drop_mid_stream", "after_chunks": 2})
    with pytest.raises(openai.APIConnectionError):
        for _chunk in sync_client.chat.completions.create(
            model="demo-free",
            messages=MESSAGES,
            stream=True,
        ):
            pass
    assert sync_client.models.retrieve("demo-free").id == "demo-free"
