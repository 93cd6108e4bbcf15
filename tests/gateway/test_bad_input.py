"""Bad input on both APIs is a clear 4xx with the API's error shape, never a 500.

Each case was found by fuzzing: deep nesting, lone surrogates, non-ASCII digits as
key ids, fields of the wrong type, and REST bodies far over any sensible size.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest

from tests.gateway.test_gateway_errors import _raw_request, error_of

DEEP = b"[" * 100_000
MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture
def rest(
    gateway_url: str, session_token: str, jp_asyncio_loop: asyncio.AbstractEventLoop
) -> Iterator[httpx.AsyncClient]:
    """The profile REST API with the Jupyter token."""
    root = gateway_url[: -len("v1")] + "api"
    client = httpx.AsyncClient(
        base_url=root, timeout=30, headers={"Authorization": f"token {session_token}"}
    )
    yield client
    jp_asyncio_loop.run_until_complete(client.aclose())


@pytest.fixture
def v1(
    gateway_url: str, session_token: str, jp_asyncio_loop: asyncio.AbstractEventLoop
) -> Iterator[httpx.AsyncClient]:
    """The model API with the Jupyter token (no key needed to test parsing)."""
    client = httpx.AsyncClient(
        base_url=gateway_url, timeout=30, headers={"Authorization": f"token {session_token}"}
    )
    yield client
    jp_asyncio_loop.run_until_complete(client.aclose())


def rest_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["Content-Type"].startswith("application/json")
    return error_of(response)


async def test_deep_nesting_is_400_on_both_apis(
    rest: httpx.AsyncClient, v1: httpx.AsyncClient, books: Any
) -> None:
    for body in (DEEP, DEEP + b"]" * 100_000, b'{"name": ' + b"[" * 70 + b"]" * 70 + b"}"):
        response = await rest.post("/keys", content=body)
        assert "nested too deeply" in rest_error(response, 400)["message"]
    for body in (DEEP, b'{"model": "demo-pro", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}"):
        response = await v1.post("/chat/completions", content=body)
        error = rest_error(response, 400)
        assert error["type"] == "invalid_request_error"
        assert "nested too deeply" in error["message"]
    # A reasonably nested tool schema still goes through.
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(20):
        schema = {"type": "object", "properties": {"inner": schema}}
    tools = [{"type": "function", "function": {"name": "f", "parameters": schema}}]
    body = {"model": "demo-pro", "messages": MESSAGES, "max_tokens": 5, "tools": tools}
    assert (await v1.post("/chat/completions", json=body)).status_code == 200
    assert (await rest.get("/keys")).json()["keys"] == []  # nothing was created on the way
    await books.settled()


async def test_lone_surrogate_is_400(
    rest: httpx.AsyncClient, v1: httpx.AsyncClient, books: Any
) -> None:
    response = await rest.post("/keys", content=b'{"name": "key \\ud800"}')
    assert "surrogate" in rest_error(response, 400)["message"]
    response = await rest.post("/keys", content=b'{"\\udfff": 1}')
    rest_error(response, 400)
    body = b'{"model": "demo-pro", "messages": [{"role": "user", "content": "a\\ud800"}]}'
    response = await v1.post("/chat/completions", content=body)
    assert "surrogate" in rest_error(response, 400)["message"]
    # A proper pair is one character, and fine.
    created = await rest.post("/keys", content=b'{"name": "smile \\ud83d\\ude00"}')
    assert created.status_code == 201 and created.json()["name"] == "smile \U0001f600"
    assert len(books.requests()) == 0
    await books.settled()


@pytest.mark.parametrize("key_id", ["²", "①", "٣", "3.0", "-3", "0x3", " 3", "3" * 13])
async def test_key_ids_are_ascii_digits_only(rest: httpx.AsyncClient, key_id: str) -> None:
    for _ in range(3):  # so that a key 3 exists, which "٣" must not mean
        assert (await rest.post("/keys", json={"name": "k"})).status_code == 201
    path = "/keys/" + quote(key_id, safe="")
    for method, body in (("DELETE", None), ("PATCH", {"name": "renamed"})):
        response = await rest.request(method, path, json=body)
        assert response.status_code in (400, 404), (key_id, method, response.status_code)
        error_of(response)
    keys = (await rest.get("/keys")).json()["keys"]
    assert [k["status"] for k in keys] == ["active"] * 3
    assert all(k["name"] == "k" for k in keys)


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"stream": "false"}, "stream"),
        ({"stream": 1}, "stream"),
        ({"stream_options": "include_usage"}, "stream_options"),
        ({"stream_options": [True]}, "stream_options"),
        ({"stream_options": {"include_usage": "yes"}}, "stream_options"),
        ({"messages": {"role": "user", "content": "hi"}}, "messages"),
        ({"messages": ["hello"]}, "messages"),
        ({"model": ["demo-pro"]}, "model"),
        ({"user": {"id": 1}}, "user"),
    ],
)
async def test_model_call_fields_are_typed(
    v1: httpx.AsyncClient, books: Any, extra: dict[str, Any], param: str
) -> None:
    body = {"model": "demo-pro", "messages": MESSAGES, "max_tokens": 5, **extra}
    response = await v1.post("/chat/completions", json=body)
    error = rest_error(response, 400)
    assert error["type"] == "invalid_request_error"
    assert error.get("param") == param
    assert books.requests() == []  # refused before anything was reserved or billed
    await books.settled()


async def test_rest_body_over_the_limit_is_413_before_it_is_read(
    rest: httpx.AsyncClient, gateway_url: str, session_token: str
) -> None:
    big = json.dumps({"name": "x" * (2 * 1024 * 1024)})
    response = await rest.post("/keys", content=big)
    assert rest_error(response, 413)["code"] == "payload_too_large"
    # A declared 512 MB body: the answer comes before one byte of it is sent.
    path = urlsplit(gateway_url).path[: -len("v1")] + "api/keys"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: token {session_token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {512 * 1024 * 1024}\r\n\r\n"
    )
    answer, sent, elapsed = await _raw_request(gateway_url, head)
    assert sent == 0 and elapsed < 5
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    # Chunked, with no declared length: refused once past the limit, not at the end.
    head = head.replace(f"Content-Length: {512 * 1024 * 1024}", "Transfer-Encoding: chunked")
    block = b"x" * (256 * 1024)

    async def body() -> Any:
        yield b'%x\r\n{"name": "\r\n' % 10
        for _ in range(400):  # 100 MB if it were all read
            yield b"%x\r\n" % len(block) + block + b"\r\n"
        yield b"0\r\n\r\n"

    answer, sent, elapsed = await _raw_request(gateway_url, head, body)
    if answer:  # a client still sending may see the close before the 413
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 40 * len(block), sent
    assert elapsed < 5
    assert (await rest.get("/keys")).json()["keys"] == []
    # Under the limit all is as before.
    assert (await rest.post("/keys", json={"name": "small"})).status_code == 201
