"""Refusals of the gateway: each with the right status, an OpenAI-shaped body, and no charge."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import httpx
import openai
import pytest

from lumen_jupyter.core import keyring
from lumen_jupyter.core.clock import isoformat_z
from lumen_jupyter.core.pools import REFILL_PERIOD
from lumen_jupyter.demo.backend import DemoBackend
from lumen_jupyter.store import Store

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture
def lumen_config(yaml_lumen_config: dict[str, Any]) -> dict[str, Any]:
    return yaml_lumen_config


@pytest.fixture
def http(gateway_url: str, jp_asyncio_loop: asyncio.AbstractEventLoop) -> Iterator[Any]:
    client = httpx.AsyncClient(base_url=gateway_url, timeout=30)
    yield client
    jp_asyncio_loop.run_until_complete(client.aclose())


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert "type" in error and "code" in error
    return dict(error)


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "demo-pro", "messages": MESSAGES, "max_tokens": 10, **extra}


# -- authentication --------------------------------------------------------------------------


async def test_missing_authorization_is_401(http: Any, books: Any, demo: DemoBackend) -> None:
    response = await http.post("/chat/completions", json=chat_body())
    assert response.status_code == 401
    assert error_of(response)["code"] == "missing_api_key"
    response = await http.get("/models")
    assert response.status_code == 401
    response = await http.post("/embeddings", json={"model": "demo-pro", "input": "x"})
    assert response.status_code == 401
    assert demo.state.requests["chat_completions"] == 0
    assert books.requests() == []
    await books.settled()


MALFORMED_AUTHORIZATION = ["Basic eDp5", "Bearer", "token", "sk_abc", "Digest a b"]


async def test_malformed_authorization_is_400(http: Any, books: Any) -> None:
    for header in MALFORMED_AUTHORIZATION:
        response = await http.post(
            "/chat/completions", json=chat_body(), headers={"Authorization": header}
        )
        assert response.status_code == 400, (header, response.text)
        error = error_of(response)
        assert error["code"] == "invalid_authorization", header
        assert "Bearer" in error["message"]
    assert books.requests() == []
    await books.settled()


async def test_unknown_key_is_401_and_not_echoed(http: Any, aclient: Any, books: Any) -> None:
    fake = "sk_" + "Q" * 43
    response = await http.post(
        "/chat/completions", json=chat_body(), headers={"Authorization": f"Bearer {fake}"}
    )
    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_api_key"
    assert fake not in response.text and "QQQQ" not in response.text
    with pytest.raises(openai.AuthenticationError):
        await aclient(fake).models.list()
    with pytest.raises(openai.AuthenticationError):  # a wrong kernel credential too
        await aclient("lkt_wrong").models.list()
    # Neither a Lumen credential nor the Jupyter token: unknown, 401 (not Jupyter's 403).
    for header in ("Bearer not-a-key", "token not-the-jupyter-token"):
        response = await http.post(
            "/chat/completions", json=chat_body(), headers={"Authorization": header}
        )
        assert response.status_code == 401, (header, response.text)
        assert error_of(response)["code"] == "invalid_api_key"
    assert books.requests() == []
    await books.settled()


async def test_key_revoked_between_two_calls(
    aclient: Any, make_key: Any, jp_fetch: Any, books: Any, demo: DemoBackend
) -> None:
    key_id, key = await make_key()
    client = aclient(key)
    await client.chat.completions.create(model="demo-pro", messages=MESSAGES, max_tokens=5)
    response = await jp_fetch("lumen", "api", "keys", str(key_id), method="DELETE")
    assert json.loads(response.body)["result"] == "revoked"
    started = time.monotonic()
    with pytest.raises(openai.AuthenticationError) as caught:
        await client.chat.completions.create(model="demo-pro", messages=MESSAGES, max_tokens=5)
    assert time.monotonic() - started < 5  # at once: no cached key outlives its revocation
    assert caught.value.status_code == 401
    assert demo.state.requests["chat_completions"] == 1
    kept = books.key(key_id)
    assert kept.status == "revoked" and kept.requests == 1  # the history stays
    assert len(books.requests()) == 1
    await books.settled()


async def test_key_revoked_by_another_process_is_refused_at_admission(
    aclient: Any, make_key: Any, lumen_app: Any, books: Any, demo: DemoBackend
) -> None:
    """The server remembers keys it found active; the admin command or a second server
    on the same database revokes without telling it, and the next call is still refused."""
    key_id, key = await make_key()
    client = aclient(key)
    await client.chat.completions.create(model="demo-pro", messages=MESSAGES, max_tokens=5)
    elsewhere = Store(lumen_app.store.url)
    try:
        with elsewhere.write() as conn:
            assert keyring.revoke_key(
                conn, books.account_id(), key_id, datetime.now(timezone.utc)
            ) == ("revoked")
    finally:
        elsewhere.dispose()
    balance = books.balance()
    with pytest.raises(openai.AuthenticationError) as caught:
        await client.chat.completions.create(model="demo-pro", messages=MESSAGES, max_tokens=5)
    assert caught.value.status_code == 401
    assert demo.state.requests["chat_completions"] == 1  # never reached the upstream
    assert books.balance() == balance and len(books.requests()) == 1  # nothing reserved
    with pytest.raises(openai.AuthenticationError):  # and it is forgotten, not retried
        await client.chat.completions.create(model="demo-pro", messages=MESSAGES, max_tokens=5)
    await books.settled()


# -- models and access -----------------------------------------------------------------------


async def test_unknown_model_is_404(aclient: Any, make_key: Any, books: Any) -> None:
    _, key = await make_key()
    with pytest.raises(openai.NotFoundError) as caught:
        await aclient(key).chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert caught.value.status_code == 404
    assert "no-such-model" in caught.value.message
    with pytest.raises(openai.NotFoundError):
        await aclient(key).embeddings.create(model="nope", input="x")
    assert books.requests() == []
    await books.settled()


async def test_blocked_model_is_403(aclient: Any, make_key: Any, books: Any) -> None:
    _, key = await make_key()
    with pytest.raises(openai.PermissionDeniedError) as caught:
        await aclient(key).chat.completions.create(model="demo-blocked", messages=MESSAGES)
    assert caught.value.status_code == 403
    assert books.requests() == []
    await books.settled()


async def test_missing_consent_is_403_naming_the_magic(
    aclient: Any, make_key: Any, jp_fetch: Any, books: Any, demo: DemoBackend
) -> None:
    _, key = await make_key()
    client = aclient(key)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        await client.chat.completions.create(model="demo-restricted", messages=MESSAGES)
    assert caught.value.status_code == 403
    assert "%lumen consent demo-restricted" in caught.value.message
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "consent_required"
    assert demo.state.requests["chat_completions"] == 0
    await jp_fetch(
        "lumen", "api", "models", "demo-restricted", "consent", method="POST", body=b"{}"
    )
    reply = await client.chat.completions.create(
        model="demo-restricted", messages=MESSAGES, max_tokens=4
    )
    assert reply.choices
    await books.settled()


async def test_a_model_needing_consent_is_found_and_says_where_to_consent(
    aclient: Any, make_key: Any, session_token: str, books: Any, demo: DemoBackend
) -> None:
    _, key = await make_key()
    client = aclient(key)
    base = str(client.base_url)  # http://127.0.0.1:PORT/<base_url>lumen/v1/
    root = base.removesuffix("lumen/v1/")
    consent_url = f"{root}lumen/api/models/demo-restricted/consent"
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as http:
        looked = await http.get(f"{base}models/demo-restricted")
        blocked = await http.get(f"{base}models/demo-blocked")
        unknown = await http.get(f"{base}models/nope")
        listed = (await http.get(f"{base}models")).json()["data"]
    # found, with its access state and where to consent - not "does not exist"
    assert looked.status_code == 200, looked.text
    model = looked.json()
    assert (model["id"], model["object"], model["access"]) == (
        "demo-restricted",
        "model",
        "needs_ack",
    )
    assert model["consent"]["consent_url"] == consent_url
    assert model["consent"]["profile_url"] == f"{root}lumen/api/profile"
    assert (blocked.status_code, unknown.status_code) == (404, 404)
    # the list stays "what you can call now"
    assert "demo-restricted" not in [m["id"] for m in listed]
    assert {m["access"] for m in listed} <= {"allowed", "consented"}

    with pytest.raises(openai.PermissionDeniedError) as caught:
        await client.chat.completions.create(model="demo-restricted", messages=MESSAGES)
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["consent_url"] == consent_url
    assert body["profile_url"] == f"{root}lumen/api/profile"
    assert (
        f"POST {consent_url}" in body["message"]
        and "%lumen consent demo-restricted" in body["message"]
    )
    assert demo.state.requests["chat_completions"] == 0

    # the URL works as given, with the Jupyter login
    async with httpx.AsyncClient(headers={"Authorization": f"token {session_token}"}) as http:
        accepted = await http.post(consent_url, json={})
        profile = await http.get(body["profile_url"])
    assert accepted.status_code == 200, accepted.text
    assert profile.status_code == 200 and "pool" in profile.json()
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as http:
        after = (await http.get(f"{base}models/demo-restricted")).json()
    assert after["access"] == "consented" and "consent" not in after
    reply = await client.chat.completions.create(
        model="demo-restricted", messages=MESSAGES, max_tokens=4
    )
    assert reply.choices
    await books.settled()


# -- coins ---------------------------------------------------------------------------------


@pytest.mark.gateway(pool={"max": 5, "refresh": 1, "starting": 0})
async def test_exhausted_coins_is_429_not_retried(
    gateway_url: str, make_key: Any, books: Any, demo: DemoBackend
) -> None:
    _, key = await make_key()
    sent: list[httpx.Request] = []

    async def count(request: httpx.Request) -> None:
        sent.append(request)

    client = openai.AsyncOpenAI(
        base_url=gateway_url,
        api_key=key,  # default max_retries: the client would retry an ordinary 429
        http_client=openai.DefaultAsyncHttpxClient(event_hooks={"request": [count]}),
    )
    assert client.max_retries >= 2
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="demo-pro", messages=MESSAGES, max_tokens=5)
    assert len(sent) == 1, "the client retried a 429 that says x-should-retry: false"
    assert time.monotonic() - started < 5  # no back-off sleeps either
    response = caught.value.response
    assert response.status_code == 429
    assert response.headers["x-should-retry"] == "false"
    error = caught.value.body
    assert isinstance(error, dict) and error["code"] == "coins_exhausted"
    refill = isoformat_z(books.last_refill_at() + REFILL_PERIOD)
    assert refill in error["message"]
    assert "exhausted" in error["message"].lower()
    assert error["next_refill_at"] == refill
    assert demo.state.requests["chat_completions"] == 0
    assert books.balance() == 0
    assert books.requests() == []

    # The sync client, default retries too.
    def sync_call() -> None:
        sync = openai.OpenAI(
            base_url=gateway_url,
            api_key=key,
            http_client=openai.DefaultHttpxClient(event_hooks={"request": [sent.append]}),
        )
        with pytest.raises(openai.RateLimitError):
            sync.chat.completions.create(model="demo-pro", messages=MESSAGES, max_tokens=5)

    await asyncio.to_thread(sync_call)
    assert len(sent) == 2
    await books.settled()


@pytest.mark.gateway(pool={"max": 1, "refresh": 0, "starting": 0.001})
async def test_balance_below_the_worst_case_is_429_too_low(
    aclient: Any, make_key: Any, books: Any
) -> None:
    _, key = await make_key()
    with pytest.raises(openai.RateLimitError) as caught:
        # worst case: max_tokens 1000 x 150 coins per million = 0.15 coins > 0.001
        await aclient(key).chat.completions.create(
            model="demo-pro", messages=MESSAGES, max_tokens=1000
        )
    message = caught.value.message
    assert "too low" in message and "max_tokens" in message
    assert "administrator" in message  # no refill configured: say who can help
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert books.balance() == 1000
    # A free model still works with what is left.
    await aclient(key).chat.completions.create(model="demo-free", messages=MESSAGES)
    assert books.balance() == 1000
    await books.settled()


# -- malformed requests ------------------------------------------------------------------------


MALFORMED_REQUESTS = [
    ("/chat/completions", b"{not json", "invalid_json"),
    ("/chat/completions", b"", "invalid_json"),
    ("/chat/completions", b"[1, 2]", "invalid_json"),
    ("/chat/completions", b"\xff\xfe", "invalid_json"),
    ("/chat/completions", json.dumps({"messages": MESSAGES}).encode(), "missing_model"),
    (
        "/chat/completions",
        json.dumps({"model": "", "messages": MESSAGES}).encode(),
        "missing_model",
    ),
    ("/chat/completions", json.dumps({"model": "demo-pro"}).encode(), None),
    ("/chat/completions", json.dumps({"model": "demo-pro", "messages": []}).encode(), None),
    ("/chat/completions", json.dumps({"model": "demo-pro", "messages": ["x"]}).encode(), None),
    ("/chat/completions", json.dumps(chat_body(max_tokens=-3)).encode(), None),
    ("/chat/completions", json.dumps(chat_body(max_tokens="10")).encode(), None),
    ("/chat/completions", json.dumps(chat_body(max_completion_tokens=0)).encode(), None),
    ("/completions", json.dumps({"model": "demo-pro"}).encode(), None),
    ("/embeddings", json.dumps({"model": "demo-pro", "input": ""}).encode(), None),
]


async def test_malformed_requests_are_400(
    http: Any, make_key: Any, books: Any, demo: DemoBackend
) -> None:
    _, key = await make_key()
    for path, body, code in MALFORMED_REQUESTS:
        response = await http.post(
            path,
            content=body,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        assert response.status_code == 400, (path, body, response.text)
        error = error_of(response)
        if code is not None:
            assert error["code"] == code, (path, body, error)
    # The openai client's own malformed call is refused the same way.
    with pytest.raises(openai.BadRequestError):
        await openai.AsyncOpenAI(
            base_url=str(http.base_url), api_key=key, max_retries=0
        ).chat.completions.create(model="demo-pro", messages=[])
    assert sum(demo.state.requests.values()) == 0
    assert books.requests() == []
    await books.settled()


# -- a body too large ----------------------------------------------------------------------------


async def _raw_request(
    gateway_url: str, head: str, body_sender: Any = None
) -> tuple[bytes, int, float]:
    """Send ``head`` (and let ``body_sender`` stream a body); returns (answer, body bytes sent,
    seconds until the answer or the close)."""
    parts = urlsplit(gateway_url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    started = time.monotonic()
    writer.write(head.encode("latin-1"))
    await writer.drain()
    sent = 0
    answer = b""

    async def read_answer() -> bytes:
        try:
            return await reader.read(65536)
        except (ConnectionResetError, BrokenPipeError):
            return b""

    reading = asyncio.ensure_future(read_answer())
    if body_sender is not None:
        try:
            async for piece in body_sender():
                if reading.done():
                    break
                writer.write(piece)
                await writer.drain()
                sent += len(piece)
        except (ConnectionResetError, BrokenPipeError):
            pass
    answer = await asyncio.wait_for(reading, 20)
    elapsed = time.monotonic() - started
    writer.close()
    return answer, sent, elapsed


async def test_declared_50mb_body_is_413_before_it_is_read(
    gateway_url: str, make_key: Any, books: Any, demo: DemoBackend
) -> None:
    _, key = await make_key()
    path = urlsplit(gateway_url).path + "/chat/completions"
    size = 50 * 1024 * 1024
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
    )
    # Not one byte of the body is sent: the answer must come anyway.
    answer, sent, elapsed = await _raw_request(gateway_url, head)
    assert sent == 0
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"payload_too_large" in answer
    assert elapsed < 5
    assert demo.state.requests["chat_completions"] == 0
    assert books.requests() == []
    await books.settled()


async def test_chunked_50mb_body_is_413_as_soon_as_it_passes_the_limit(
    gateway_url: str, make_key: Any, books: Any, demo: DemoBackend
) -> None:
    _, key = await make_key()
    path = urlsplit(gateway_url).path + "/chat/completions"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    total = 50 * 1024 * 1024
    block = b"x" * (1024 * 1024)

    async def body() -> Any:
        yield b'%x\r\n{"model": "demo-pro", "messages": [{"role": "user", "content": "\r\n' % 64
        for _ in range(total // len(block)):
            yield b"%x\r\n" % len(block) + block + b"\r\n"
        yield b"0\r\n\r\n"

    answer, sent, elapsed = await _raw_request(gateway_url, head, body)
    # Without a declared length the size shows only while reading: the 413 goes out as
    # soon as the 10 MB limit is passed and the connection is closed. A client still
    # sending may see that close (a reset) before it reads the 413, so an empty answer is
    # allowed; tornado's bare 400 at twice the limit is not.
    if answer:
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b"payload_too_large" in answer
    assert sent < 20 * len(block), sent
    assert elapsed < 5
    assert demo.state.requests["chat_completions"] == 0
    assert books.requests() == []
    await books.settled()


@pytest.mark.gateway(traits={"max_request_bytes": 4096})
async def test_body_over_a_small_limit_is_413(
    aclient: Any, make_key: Any, books: Any, demo: DemoBackend
) -> None:
    _, key = await make_key()
    big = [{"role": "user", "content": "word " * 2000}]
    with pytest.raises(openai.APIStatusError) as caught:
        await aclient(key).chat.completions.create(model="demo-pro", messages=big)
    assert caught.value.status_code == 413
    assert "limit" in caught.value.message
    # Just under the limit still works.
    small = [{"role": "user", "content": "word " * 100}]
    await aclient(key).chat.completions.create(model="demo-pro", messages=small, max_tokens=3)
    assert demo.state.requests["chat_completions"] == 1
    await books.settled()


# -- rate limit ------------------------------------------------------------------------------


@pytest.mark.gateway(traits={"rate_limit_per_minute": 2})
async def test_rate_limit_per_key_is_429_with_retry_after(
    http: Any, make_key: Any, session_token: str, books: Any, demo: DemoBackend
) -> None:
    _, first = await make_key("one")
    _, second = await make_key("two")

    async def call(credential: str) -> httpx.Response:
        return await http.post(
            "/chat/completions", json=chat_body(), headers={"Authorization": credential}
        )

    assert (await call(f"Bearer {first}")).status_code == 200
    assert (await call(f"Bearer {first}")).status_code == 200
    limited = await call(f"Bearer {first}")
    assert limited.status_code == 429
    assert error_of(limited)["code"] == "rate_limited"
    retry_after = int(limited.headers["Retry-After"])
    assert limited.headers["x-should-retry"] == "true"  # a rate limit passes; a budget does not
    assert 1 <= retry_after <= 61
    # Another key has its own window; the Jupyter session is not limited by default.
    assert (await call(f"Bearer {second}")).status_code == 200
    for _ in range(3):
        assert (await call(f"token {session_token}")).status_code == 200
    assert demo.state.requests["chat_completions"] == 6
    assert len(books.requests()) == 6
    await books.settled()


def test_upstream_messages_never_carry_secrets() -> None:
    from lumen_jupyter.gateway.call import upstream_error

    leaked = b'{"error": {"message": "Incorrect API key provided: sk-proj-abc123***xyz9"}}'
    refused = upstream_error(401, leaked, "m")
    assert refused.status == 500 and "sk-proj" not in refused.message
    passed = upstream_error(400, leaked.replace(b"API key", b"thing"), "m")
    assert passed.status == 400 and "sk-proj" not in passed.message
    assert "[redacted]" in passed.message


async def test_no_log_line_carries_a_key(
    http: Any, make_key: Any, jp_fetch: Any, jp_serverapp: Any, books: Any
) -> None:
    """Keys used, revoked, mistyped and erroring calls: no log record shows a raw key."""
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    collector = Collect(level=logging.DEBUG)
    loggers = [logging.getLogger(), jp_serverapp.log, logging.getLogger("tornado.access")]
    for logger in loggers:
        logger.addHandler(collector)
    try:
        key_id, key = await make_key("logged")
        assert (
            await http.post(
                "/chat/completions", json=chat_body(), headers={"Authorization": f"Bearer {key}"}
            )
        ).status_code == 200
        bad = await http.post(
            "/chat/completions", content=b"{oops", headers={"Authorization": f"Bearer {key}"}
        )
        assert bad.status_code == 400
        await jp_fetch("lumen", "api", "keys", str(key_id), method="DELETE")
        revoked = await http.post(
            "/chat/completions", json=chat_body(), headers={"Authorization": f"Bearer {key}"}
        )
        assert revoked.status_code == 401
        typo = key[:-1] + ("A" if key[-1] != "A" else "B")
        assert (
            await http.post(
                "/chat/completions", json=chat_body(), headers={"Authorization": f"Bearer {typo}"}
            )
        ).status_code == 401
    finally:
        for logger in loggers:
            logger.removeHandler(collector)
    assert records, "nothing was logged, so this test would prove nothing"
    text = "\n".join(records)
    assert key not in text and typo not in text
    assert key[3:20] not in text
    await books.settled()
