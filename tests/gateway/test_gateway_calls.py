"""Model calls through the gateway with the real `openai` client: what is charged, exactly.

Every caller kind (personal key, kernel credential, Jupyter session token), every endpoint
(chat streaming and not, completions, embeddings), per-key counters, notebook attribution,
the model list, and the request fields that must reach the upstream untouched.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

import httpx
import openai
import pytest
from sqlalchemy import select

from lumen_jupyter.core.money import call_cost, coins_to_micro
from lumen_jupyter.core.tokens import count_message_tokens, count_prompt_tokens, count_text_tokens
from lumen_jupyter.demo import backend as demo_backend
from lumen_jupyter.demo.backend import DemoBackend, DemoReply
from lumen_jupyter.gateway.traffic import recent_calls
from lumen_jupyter.store.schema import requests_log

PRO_IN = coins_to_micro(50)
PRO_OUT = coins_to_micro(150)
START = coins_to_micro(20)


@pytest.fixture
def lumen_config(yaml_lumen_config: dict[str, Any]) -> dict[str, Any]:
    return yaml_lumen_config


def reply_of(prompt: str, max_tokens: int | None = None, seed: int = 0) -> tuple[str, int]:
    """The demo's answer to ``prompt`` and its token count (as the demo reports it)."""
    text = DemoReply(prompt, max_tokens, seed).text()
    return text, count_text_tokens(text)


def pro_cost(tokens_in: int, tokens_out: int) -> int:
    return call_cost(tokens_in, tokens_out, PRO_IN, PRO_OUT)


def recent(moment: Any) -> bool:
    return moment is not None and abs(datetime.now(timezone.utc) - moment) < timedelta(minutes=1)


@pytest.fixture
def received(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The JSON bodies the demo backend received, in order."""
    bodies: list[dict[str, Any]] = []
    original = demo_backend._parse_json_object

    def record(raw: bytes) -> dict[str, Any]:
        body = original(raw)
        bodies.append(body)
        return body

    monkeypatch.setattr(demo_backend, "_parse_json_object", record)
    return bodies


# -- chat, with a personal key ----------------------------------------------------------------


async def test_chat_with_personal_key_is_charged_exactly(
    aclient: Any, make_key: Any, books: Any, demo: DemoBackend
) -> None:
    key_id, key = await make_key("laptop")
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Explain coin budgets in two words"},
    ]
    client = aclient(key)
    reply = await client.chat.completions.create(
        model="demo-pro", messages=messages, max_tokens=200
    )
    tokens_in = count_message_tokens(messages)
    text, tokens_out = reply_of("Explain coin budgets in two words", 200)
    assert reply.choices[0].message.content == text
    assert reply.model == "demo-pro"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (tokens_in, tokens_out)

    cost = pro_cost(tokens_in, tokens_out)
    assert cost > 0
    row = books.request()
    assert (row.status, row.endpoint, row.source, row.key_id) == ("ok", "chat", "api", key_id)
    assert (row.input_tokens, row.output_tokens, row.coins_micro) == (tokens_in, tokens_out, cost)
    assert row.estimated is False
    assert row.http_status == 200
    assert books.balance() == START - cost

    counted = books.key(key_id)
    assert (counted.requests, counted.input_tokens, counted.output_tokens) == (
        1,
        tokens_in,
        tokens_out,
    )
    assert counted.coins_micro == cost
    assert recent(counted.last_used_at)
    stats = books.usage()
    assert set(stats) == {("demo-pro", "api")}
    assert stats["demo-pro", "api"].coins_micro == cost

    # A second call adds up; the key counters follow.
    again = await client.chat.completions.create(model="demo-pro", messages=messages, max_tokens=5)
    assert again.usage is not None
    second = pro_cost(tokens_in, again.usage.completion_tokens)
    assert again.usage.completion_tokens == reply_of("Explain coin budgets in two words", 5)[1]
    counted = books.key(key_id)
    assert counted.requests == 2
    assert counted.coins_micro == cost + second
    assert books.balance() == START - cost - second
    assert demo.state.requests["chat_completions"] == 2
    await books.settled()


async def test_stream_with_kernel_credential_in_a_thread(
    sclient: Any, books: Any, lumen_app: Any, jp_fetch: Any
) -> None:
    token = lumen_app.kernel_credentials.issue("kernel-in-a-thread")
    notebook = "analysis/Coins & costs é.ipynb"
    headers = {
        "X-Lumen-Notebook": quote(notebook),
        "X-Lumen-Cell": "cell-7f3a",
    }
    messages = [{"role": "user", "content": "Stream me a short answer please"}]

    def run() -> tuple[list[Any], str]:
        client = sclient(token, default_headers=headers)
        chunks = list(
            client.chat.completions.create(
                model="demo-pro",
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        text = "".join(
            c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].delta
        )
        return chunks, text

    chunks, text = await asyncio.to_thread(run)
    expected, tokens_out = reply_of("Stream me a short answer please")
    assert text == expected
    tokens_in = count_message_tokens(messages)
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1 and chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (
        tokens_in,
        tokens_out,
    )

    row = books.request()
    assert (row.source, row.key_id, row.status, row.estimated) == ("kernel", None, "ok", False)
    assert (row.notebook, row.cell) == (notebook, "cell-7f3a")
    assert (row.input_tokens, row.output_tokens) == (tokens_in, tokens_out)
    assert row.coins_micro == pro_cost(tokens_in, tokens_out)
    assert books.balance() == START - row.coins_micro
    assert ("demo-pro", "kernel") in books.usage()
    # The notebook shows in the spending history.
    history = await jp_fetch(
        "lumen", "api", "usage", params={"period": "week", "group_by": "notebook"}
    )
    totals = json.loads(history.body)["totals"]
    assert list(totals) == [notebook]
    assert totals[notebook]["coins_micro"] == row.coins_micro
    await books.settled()


async def test_completions_and_embeddings_with_the_session_token(
    aclient: Any, session_token: str, books: Any
) -> None:
    client = aclient("unused", default_headers={"Authorization": f"token {session_token}"})
    prompt = "Once upon a time in a notebook"
    done = await client.completions.create(model="demo-pro", prompt=prompt, max_tokens=30)
    text, tokens_out = reply_of(prompt, 30)
    assert done.choices[0].text == text
    tokens_in = count_prompt_tokens(prompt)

    stream = await client.completions.create(
        model="demo-pro", prompt=prompt, max_tokens=30, stream=True
    )
    streamed = "".join([c.choices[0].text async for c in stream if c.choices])
    assert streamed == text

    inputs = ["first vector", "second, longer vector of text"]
    vectors = await client.embeddings.create(model="demo-pro", input=inputs)
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 16
    embed_in = count_prompt_tokens(inputs)

    first, second, third = books.requests()
    for row in (first, second):
        assert (row.endpoint, row.source, row.status) == ("completions", "session", "ok")
        assert (row.input_tokens, row.output_tokens) == (tokens_in, tokens_out)
        assert row.coins_micro == pro_cost(tokens_in, tokens_out)
        assert row.estimated is False
    assert (third.endpoint, third.source, third.status) == ("embeddings", "session", "ok")
    assert (third.input_tokens, third.output_tokens) == (embed_in, 0)
    assert third.coins_micro == pro_cost(embed_in, 0)
    assert books.balance() == START - books.spent()
    stats = books.usage()["demo-pro", "session"]
    assert stats.requests == 3
    assert stats.input_tokens == 2 * tokens_in + embed_in
    assert stats.coins_micro == books.spent()

    # The same with the "Bearer" spelling of the Jupyter token.
    bearer = aclient(session_token)
    again = await bearer.embeddings.create(model="demo-free", input="x")
    assert again.data
    await books.settled()


async def test_web_chat_source_only_for_kernel_and_session(
    aclient: Any, make_key: Any, session_token: str, books: Any, jp_fetch: Any, lumen_app: Any
) -> None:
    _, key = await make_key()
    chat = {"X-Lumen-Source": "chat", "X-Lumen-Conversation": "conv-1"}
    kernel = aclient(lumen_app.kernel_credentials.issue("chat-kernel"), default_headers=chat)
    session = aclient(
        "unused",
        default_headers={**chat, "Authorization": f"token {session_token}"},
    )
    api = aclient(key, default_headers={**chat, "X-Lumen-Conversation": "conv-2"})
    messages = [{"role": "user", "content": "hi"}]
    for client in (kernel, session, api):
        await client.chat.completions.create(model="demo-pro", messages=messages, max_tokens=8)
    sources = [r.source for r in books.requests()]
    assert sources == ["chat", "chat", "api"]

    profile = json.loads((await jp_fetch("lumen", "api", "profile")).body)
    chat_rows = books.requests()[:2]
    web = profile["web_chat"]
    assert web["requests"] == 2
    assert web["conversations"] == 1  # conv-2 came with a personal key: not web chat
    assert web["coins_micro"] == sum(r.coins_micro for r in chat_rows)
    assert web["tokens"] == sum(r.input_tokens + r.output_tokens for r in chat_rows)
    assert profile["tiles"]["coins_used"]["micro"] == books.spent()
    await books.settled()


async def test_model_request_counts_survive_a_restart(
    aclient: Any, make_key: Any, lumen_app: Any
) -> None:
    """The per-minute/hour/day counts come back from the request log: a new gateway
    (what a restarted server builds) counts the calls made before it."""
    _, key = await make_key()
    client = aclient(key)
    for model in ("demo-pro", "demo-pro", "demo-free"):
        await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "x"}], max_tokens=3
        )
    # one call of yesterday-and-a-bit, written straight into the log: too old to count
    with lumen_app.store.write() as conn:
        old = conn.execute(select(requests_log).order_by(requests_log.c.id.desc())).first()
        row = dict(old._mapping)
        row.pop("id")
        row["created_at"] = lumen_app.service.clock.now() - timedelta(days=1, minutes=1)
        conn.execute(requests_log.insert().values(**row))

    before = {m.id: m.model_extra["requests"] for m in (await client.models.list()).data}
    first = lumen_app.gateway
    lumen_app.gateway = lumen_app._make_gateway()  # what a restart starts from
    await first.close()
    assert lumen_app.gateway.upstreams.traffic["demo-pro"].times  # seeded
    after = {m.id: m.model_extra["requests"] for m in (await client.models.list()).data}
    assert after == before
    assert after["demo-pro"] == {"last_minute": 2, "last_hour": 2, "last_day": 2}
    assert after["demo-free"] == {"last_minute": 1, "last_hour": 1, "last_day": 1}


def test_recent_calls_reads_only_the_last_day(lumen_app: Any) -> None:
    store = lumen_app.store
    now = lumen_app.service.clock.now().replace(microsecond=0)
    account = lumen_app.service.account(lumen_app.identity.username)
    ages = [timedelta(days=2), timedelta(hours=25), timedelta(hours=23), timedelta(seconds=30)]
    rows = [
        {
            "account_id": account,
            "created_at": now - age,
            "model": f"m{index}",
            "endpoint": "chat",
            "source": "api",
            "status": "ok",
        }
        for index, age in enumerate(ages)
    ]
    with store.write() as conn:
        # in admission order, as the log is written; more than one batch of them
        conn.execute(requests_log.insert(), [row for row in rows for _ in range(1500)])
    calls = recent_calls(store, now)
    assert {model for model, _ in calls} == {"m2", "m3"}
    assert len(calls) == 3000
    assert calls[0] == ("m2", 23 * 3600.0) and calls[-1] == ("m3", 30.0)


# -- the model list ------------------------------------------------------------------------


async def test_models_list_has_lumen_fields_and_hides_what_cannot_be_called(
    aclient: Any, make_key: Any, jp_fetch: Any, books: Any
) -> None:
    _, key = await make_key()
    client = aclient(key)
    listed = await client.models.list()
    names = [m.id for m in listed.data]
    # demo-blocked is blocked, demo-restricted needs a consent not given yet.
    assert names == ["demo-free", "demo-pro", "pro-alias"]

    await client.chat.completions.create(
        model="demo-pro", messages=[{"role": "user", "content": "x"}], max_tokens=3
    )
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as http:
        raw = (await http.get(f"{client.base_url}models")).json()
        one = (await http.get(f"{client.base_url}models/demo-pro")).json()
        hidden = await http.get(f"{client.base_url}models/demo-blocked")
    pro = next(m for m in raw["data"] if m["id"] == "demo-pro")
    assert one == pro
    assert hidden.status_code == 404
    assert pro["object"] == "model" and pro["owned_by"] and isinstance(pro["created"], int)
    assert pro["status"] == "ok"
    assert pro["input_cost_per_million"] == 50 and pro["output_cost_per_million"] == 150
    assert pro["instances"] == {"configured": 1, "healthy": 1}
    assert pro["requests"] == {"last_minute": 1, "last_hour": 1, "last_day": 1}
    assert pro["max_model_len"] == 32768
    assert pro["max_output_tokens"] == 2048
    assert pro["description"] == "Priced demo model"
    assert pro["supports_function_calling"] is True
    assert pro["supports_reasoning"] is False
    assert pro["knowledge_cutoff"] == "2024-06"
    assert pro["input_modalities"] == ["text"] and pro["output_modalities"] == ["text"]
    free = next(m for m in raw["data"] if m["id"] == "demo-free")
    assert free["requests"]["last_day"] == 0
    assert "description" not in free and "max_output_tokens" not in free  # unknown: omitted

    # Consent makes demo-restricted visible and callable.
    await jp_fetch(
        "lumen", "api", "models", "demo-restricted", "consent", method="POST", body=b"{}"
    )
    names = [m.id for m in (await client.models.list()).data]
    assert names == ["demo-free", "demo-pro", "demo-restricted", "pro-alias"]
    await client.chat.completions.create(
        model="demo-restricted", messages=[{"role": "user", "content": "x"}], max_tokens=3
    )
    assert [r.model for r in books.requests()] == ["demo-pro", "demo-restricted"]
    await books.settled()


@pytest.mark.gateway(pool=None)
async def test_no_pool_means_no_models_and_403(
    aclient: Any, make_key: Any, books: Any, demo: DemoBackend
) -> None:
    _, key = await make_key()
    client = aclient(key)
    assert (await client.models.list()).data == []
    with pytest.raises(openai.PermissionDeniedError) as caught:
        await client.chat.completions.create(
            model="demo-free", messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.status_code == 403
    assert "budget" in caught.value.message.lower()
    assert demo.state.requests["chat_completions"] == 0
    assert books.requests() == []
    await books.settled()


# -- what reaches the upstream, and what comes back ---------------------------------------------


async def test_other_fields_pass_through_untouched(
    aclient: Any, make_key: Any, received: list[dict[str, Any]], books: Any
) -> None:
    _, key = await make_key()
    client = aclient(key)
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "Look a word up",
                "parameters": {"type": "object", "properties": {"word": {"type": "string"}}},
            },
        }
    ]
    reply = await client.chat.completions.create(
        model="pro-alias",
        messages=[{"role": "user", "content": "Use the tool"}],
        tools=tools,
        tool_choice="auto",
        response_format={"type": "json_object"},
        seed=1234,
        temperature=0.25,
        max_tokens=40,
        user="someone",
        extra_body={"top_k": 7, "vendor_option": {"nested": [1, 2]}},
    )
    assert reply.model == "pro-alias"  # the gateway's name, not the upstream's
    sent = received[-1]
    assert sent["model"] == "demo-pro"  # the endpoint's upstream model name
    assert sent["tools"] == tools
    assert sent["tool_choice"] == "auto"
    assert sent["response_format"] == {"type": "json_object"}
    assert sent["seed"] == 1234 and sent["temperature"] == 0.25 and sent["user"] == "someone"
    assert sent["top_k"] == 7 and sent["vendor_option"] == {"nested": [1, 2]}
    assert sent["max_tokens"] == 40
    # The seed changes the demo's answer: it really was used upstream.
    assert reply.choices[0].message.content == reply_of("Use the tool", 40, 1234)[0]
    row = books.request()
    assert row.coins_micro == call_cost(
        row.input_tokens, row.output_tokens, coins_to_micro(2), coins_to_micro(3)
    )
    await books.settled()


async def test_include_usage_reaches_the_caller_only_when_asked(
    aclient: Any, make_key: Any, received: list[dict[str, Any]], books: Any, gateway_url: str
) -> None:
    _, key = await make_key()
    client = aclient(key)
    messages = [{"role": "user", "content": "Count my tokens"}]
    stream = await client.chat.completions.create(
        model="pro-alias", messages=messages, stream=True, max_tokens=25
    )
    chunks = [c async for c in stream]
    assert chunks and all(c.usage is None for c in chunks)
    assert all(c.model == "pro-alias" for c in chunks)
    # ... yet the gateway asked the upstream for usage and billed it exactly.
    assert received[-1]["stream_options"] == {"include_usage": True}
    row = books.request()
    assert row.estimated is False
    assert (row.input_tokens, row.output_tokens) == (
        count_message_tokens(messages),
        reply_of("Count my tokens", 25)[1],
    )

    # Raw bytes, in case a client library hid an empty usage chunk.
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(
            f"{gateway_url}/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "demo-pro", "messages": messages, "stream": True, "max_tokens": 25},
        )
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert all('"usage"' not in e for e in events[:-1])

    stream = await client.chat.completions.create(
        model="demo-pro",
        messages=messages,
        stream=True,
        max_tokens=25,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert [c.usage is not None for c in chunks].count(True) == 1
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == reply_of("Count my tokens", 25)[1]
    await books.settled()


async def test_sync_and_async_clients_side_by_side(
    aclient: Any, sclient: Callable[..., Any], make_key: Any, books: Any
) -> None:
    """Both client kinds at once against the same pool: totals add up exactly."""
    key_id, key = await make_key()
    messages = [{"role": "user", "content": "parallel"}]

    def sync_call() -> int:
        reply = sclient(key).chat.completions.create(
            model="demo-pro", messages=messages, max_tokens=12
        )
        return int(reply.usage.completion_tokens)

    async def async_call() -> int:
        reply = await aclient(key).chat.completions.create(
            model="demo-pro", messages=messages, max_tokens=12
        )
        assert reply.usage is not None
        return int(reply.usage.completion_tokens)

    outs = await asyncio.gather(
        *(asyncio.to_thread(sync_call) for _ in range(3)), *(async_call() for _ in range(3))
    )
    tokens_in = count_message_tokens(messages)
    assert books.spent() == sum(pro_cost(tokens_in, out) for out in outs)
    assert books.balance() == START - books.spent()
    assert books.key(key_id).requests == 6
    await books.settled()
