"""The gateway and REST behaviour every host must show, on SQLite and PostgreSQL.

Each test runs six times: the Jupyter server extension, the standalone service, and a
user's Jupyter server forwarding to that service (hub mode), each on a fresh SQLite
file and a fresh PostgreSQL database (see ``conftest.py``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import pytest

from lumen_jupyter.core.money import coins_to_micro

pytestmark = pytest.mark.usefixtures("host")

MESSAGES = [{"role": "user", "content": "Say something short"}]


async def test_models_list_and_one_model_with_its_consent(host: Any) -> None:
    _, key = await host.key()
    client = host.openai(key)
    listed = {m.id: m.model_extra["access"] for m in (await client.models.list()).data}
    assert listed["demo-pro"] == "allowed" and "demo-restricted" not in listed
    one = await client.models.retrieve("demo-restricted")
    assert one.model_extra["access"] == "needs_ack"
    consent = one.model_extra["consent"]
    assert consent["consent_url"].startswith(host.root + "lumen/api/models/demo-restricted")
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("no-such-model")


async def test_a_call_is_charged_what_it_used(host: Any) -> None:
    _, key = await host.key()
    before = host.balance()
    answer = await host.openai(key).chat.completions.create(
        model="demo-pro", messages=MESSAGES, max_tokens=20
    )
    assert answer.usage is not None
    cost = (answer.usage.prompt_tokens * 50 + answer.usage.completion_tokens * 150) / 1e6
    await host.settled()
    assert before - host.balance() == coins_to_micro(cost)


async def test_a_stream_is_relayed_and_billed_before_it_ends(host: Any) -> None:
    _, key = await host.key()
    before = host.balance()
    stream = await host.openai(key).chat.completions.create(
        model="demo-pro",
        messages=MESSAGES,
        max_tokens=30,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = "", None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage is not None:
            usage = chunk.usage
    assert text and usage is not None
    await host.settled()
    cost = (usage.prompt_tokens * 50 + usage.completion_tokens * 150) / 1e6
    assert before - host.balance() == coins_to_micro(cost)


async def test_embeddings_and_completions(host: Any) -> None:
    _, key = await host.key()
    client = host.openai(key)
    embedded = await client.embeddings.create(model="demo-pro", input="hello there")
    assert embedded.data and embedded.usage.prompt_tokens > 0
    completed = await client.completions.create(model="demo-pro", prompt="Once", max_tokens=5)
    assert completed.choices
    await host.settled()


async def test_a_call_that_could_cost_more_than_the_balance_is_refused(host: Any) -> None:
    _, key = await host.key()
    before = host.balance()
    with pytest.raises(openai.APIStatusError) as refused:
        await host.openai(key).chat.completions.create(
            model="demo-costly", messages=MESSAGES, max_tokens=100
        )
    assert refused.value.status_code == 429
    assert refused.value.body["code"] == "coins_exhausted"  # type: ignore[index]
    assert refused.value.response.headers["x-should-retry"] == "false"
    await host.settled()
    assert host.balance() == before


async def test_consent_is_required_once_then_the_model_answers(host: Any) -> None:
    _, key = await host.key()
    client = host.openai(key)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        await client.chat.completions.create(model="demo-restricted", messages=MESSAGES)
    error = refused.value.body
    assert error["code"] == "consent_required"  # type: ignore[index]
    assert error["consent_url"].startswith(host.root)  # type: ignore[index]
    consented = await host.rest("POST", "models/demo-restricted/consent", {})
    assert consented.status_code == 200, consented.text
    answer = await client.chat.completions.create(
        model="demo-restricted", messages=MESSAGES, max_tokens=5
    )
    assert answer.choices
    await host.settled()


async def test_a_revoked_key_is_refused_at_once(host: Any) -> None:
    key_id, key = await host.key()
    client = host.openai(key)
    await client.chat.completions.create(model="demo-free", messages=MESSAGES, max_tokens=3)
    assert (await host.rest("DELETE", f"keys/{key_id}")).status_code == 200
    with pytest.raises(openai.AuthenticationError):
        await client.chat.completions.create(model="demo-free", messages=MESSAGES, max_tokens=3)
    await host.settled()


async def test_no_credential_and_a_wrong_one_are_401(host: Any) -> None:
    url = f"{host.v1}/chat/completions"
    body = {"model": "demo-free", "messages": MESSAGES}
    missing = await host.http.post(url, json=body)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "missing_api_key"
    wrong = await host.http.post(url, json=body, headers={"Authorization": "Bearer sk_" + "x" * 43})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "invalid_api_key"


async def test_bad_input_is_a_clear_400_and_costs_nothing(host: Any) -> None:
    _, key = await host.key()
    before = host.balance()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    url = f"{host.v1}/chat/completions"
    cases = [
        (b"{not json", "invalid_json"),
        (b'{"messages": []}', "missing_model"),
        (b'{"model": "demo-pro", "messages": [], "max_tokens": 5}', "invalid_request"),
        (b'{"model": "demo-pro", "messages": [{"role": "user", "content": "x"}], "n": 0}', None),
    ]
    for raw, code in cases:
        answer = await host.http.post(url, content=raw, headers=headers)
        assert answer.status_code == 400, (raw, answer.text)
        if code is not None:
            assert answer.json()["error"]["code"] == code, answer.text
    assert (await _declare_a_huge_body(url, key)).startswith(b"HTTP/1.1 413")
    await host.settled()
    assert host.balance() == before


async def _declare_a_huge_body(url: str, key: str) -> bytes:
    """Send only the head of a request declaring 512 MB: the answer must come at once."""
    parsed = httpx.URL(url)
    reader, writer = await asyncio.open_connection(parsed.host, parsed.port)
    writer.write(
        f"POST {parsed.raw_path.decode()} HTTP/1.1\r\nHost: {parsed.host}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {512 * 1024 * 1024}\r\n\r\n".encode()
    )
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(200), 10)
    finally:
        writer.close()


async def test_the_profile_and_usage_answer_as_documented(host: Any) -> None:
    _, key = await host.key()
    await host.openai(key).chat.completions.create(
        model="demo-pro", messages=MESSAGES, max_tokens=5
    )
    await host.settled()
    profile = (await host.rest("GET", "profile")).json()
    assert profile["user"]["username"] == "ada"
    keys = (await host.rest("GET", "keys")).json()
    assert [k["name"] for k in keys["keys"]] == ["test-key"]
    usage = (await host.rest("GET", "usage?period=week&group_by=model")).json()
    assert usage["series"] == ["demo-pro"]
    assert usage["totals"]["demo-pro"]["requests"] == 1, usage


async def test_what_a_personal_key_may_do_on_the_rest_api(host: Any) -> None:
    _, key = await host.key()
    headers = {"Authorization": f"Bearer {key}"}
    profile = await host.rest("GET", "profile", headers=headers)
    create = await host.rest("POST", "keys", {"name": "minted"}, headers=headers)
    assert create.status_code == 403
    assert create.json()["error"]["code"] == "key_not_allowed"
    if host.name in ("extension", "hub"):
        # The user's own server: a key works on the model API only.
        assert profile.status_code == 403
    else:
        # The service: a key may read its owner's profile, never manage keys.
        assert profile.status_code == 200
        assert profile.json()["user"]["username"] == "ada"


async def test_concurrent_calls_never_overspend_the_pool(host: Any) -> None:
    _, key = await host.key()
    client = host.openai(key, http_client=httpx.AsyncClient(timeout=60))

    async def call() -> str:
        try:
            await client.chat.completions.create(
                model="demo-dear", messages=MESSAGES, max_tokens=30
            )
            return "ok"
        except openai.APIStatusError as error:
            return str(error.status_code)

    outcomes = await asyncio.gather(*(call() for _ in range(60)))
    assert "ok" in outcomes and "429" in outcomes, outcomes
    await host.settled()
    assert host.balance() >= 0


async def _answers_on_one_connection(root: str, requests: list[tuple[str, str]]) -> list[str]:
    """Send ``(path, authorization)`` GETs one after another on one kept-alive connection,
    as a proxy that pools its connections does; returns each answer's head, or ``""``
    once the server has closed the connection without saying so."""
    url = httpx.URL(root)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    heads: list[str] = []
    try:
        for path, authorization in requests:
            writer.write(
                f"GET {url.raw_path.decode()}{path} HTTP/1.1\r\nHost: {url.host}\r\n"
                f"Authorization: {authorization}\r\n\r\n".encode()
            )
            await writer.drain()
            try:
                head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode()
            except asyncio.IncompleteReadError:
                heads.append("")
                break
            heads.append(head)
            length = next(
                (
                    int(line.split(":", 1)[1])
                    for line in head.split("\r\n")
                    if line.lower().startswith("content-length:")
                ),
                0,
            )
            await reader.readexactly(length)
            if "connection: close" in head.lower():
                break
    finally:
        writer.close()
    return heads


async def test_a_refusal_never_leaves_a_kept_connection_dead(host: Any) -> None:
    """A request refused before its body is read (a bad key, a route this host refuses)
    ends its connection; the answer must say so, or a proxy keeping the connection (the
    hub's) sends the next request - maybe another user's - into a closed socket (a 503)."""
    bad_key = "Bearer sk_" + "0" * 40
    session = host.session["Authorization"]
    heads = await _answers_on_one_connection(
        host.root,
        [
            ("lumen/api/profile", bad_key),
            ("lumen/api/profile", session),
            ("lumen/api/admin/users", session),
            ("lumen/api/profile", session),
        ],
    )
    assert heads[0].startswith(("HTTP/1.1 401", "HTTP/1.1 403")), heads
    for index, head in enumerate(heads[:-1]):
        assert heads[index + 1] or "connection: close" in head.lower(), heads
