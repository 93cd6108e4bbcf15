"""LumenClient, AsyncLumenClient and the openai clients against a real server."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from IPython.lib.pretty import pretty

import lumen_jupyter
from lumen_jupyter.kernel.client.chat import Delta, Finished
from lumen_jupyter.kernel.client.errors import LumenAPIError
from lumen_jupyter.kernel.client.lumen_client import AsyncLumenClient, LumenClient
from lumen_jupyter.kernel.client.tally import SESSION
from lumen_jupyter.store.schema import requests_log
from tests.kernel.server import JupyterServer, start_server

EXHAUSTED = """
defaults:
  tokens: {max: 1, refresh: 1, starting: 0}
"""


@pytest.fixture(scope="module")
def broke_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    """A server whose user has no coins left (the next refill is an hour away)."""
    running = start_server(tmp_path_factory.mktemp("broke"), lumen_config=EXHAUSTED)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def lumen(kernel_env: JupyterServer) -> Iterator[LumenClient]:
    with lumen_jupyter.client() as client:
        yield client


def test_rest_methods_return_the_api_shapes(lumen: LumenClient) -> None:
    assert lumen.connection.kind == "kernel"
    assert lumen.profile_api_available()
    profile = lumen.profile()
    assert set(profile) >= {"user", "tiles", "pool", "web_chat", "server_time"}
    assert profile["user"]["username"] == "ada"

    created = lumen.create_key("client-test")
    assert created["key"].startswith("sk_") and created["status"] == "active"
    raw = str(created["key"])
    assert len(raw) == 46 and raw not in repr(created)  # shown as its hint only
    assert f"<key {created['hint']}: print() it" in repr(created)
    assert raw not in pretty(created)
    listed = lumen.keys()
    assert isinstance(listed, list) and all("key" not in k for k in listed)
    assert created["id"] in {k["id"] for k in listed}
    renamed = lumen.save_key(created["id"], "client-test-2")
    assert renamed["name"] == "client-test-2" and "key" not in renamed
    assert lumen.revoke_key(created["id"]) == {"id": created["id"], "result": "revoked"}
    assert created["id"] not in {k["id"] for k in lumen.keys(include_revoked=False)}
    assert created["id"] in {k["id"] for k in lumen.keys(include_revoked=True)}

    draft = lumen.create_key()
    assert draft["status"] == "draft"
    assert lumen.revoke_key(draft["id"])["result"] == "discarded"

    models = lumen.models()
    assert [m["name"] for m in models] == ["demo-free", "demo-pro", "demo-restricted"]
    page = lumen.model_page(limit=2, offset=1)
    assert page == {"models": models[1:3], "total": 3}
    keys = lumen.key_page(include_revoked=True, limit=1)
    assert keys["total"] == len(lumen.keys(include_revoked=True)) and len(keys["keys"]) == 1
    with pytest.raises(ValueError, match="0 or more"):
        lumen.key_page(limit=-1)
    detail = lumen.model("demo-restricted")
    assert detail["needs_consent"] and detail["notice_digest"]
    usage = lumen.usage(period="week", group_by="source")
    assert usage["group_by"] == "source" and usage["period"] == "week"
    with pytest.raises(LumenAPIError) as raised:
        lumen.usage(period="decade")
    assert raised.value.status == 400 and "period must be one of" in raised.value.one_line()
    with pytest.raises(LumenAPIError) as raised:
        lumen.consent("demo-pro")
    assert raised.value.status == 400
    with pytest.raises(LumenAPIError) as raised:
        lumen.consent("demo-restricted", notice_digest="not-the-digest")
    assert raised.value.code == "notice_changed"


def test_estimate_is_what_the_gateway_reserves(lumen: LumenClient) -> None:
    estimate = lumen.estimate("demo-pro", "Hello there", max_tokens=100)
    assert estimate["input_tokens"] == 10  # 3 primer + 4 per message + 3 for the text
    assert estimate["max_output_tokens"] == 100
    assert estimate["worst_case"] == {"micro": 15_500, "text": "0.0155"}
    with pytest.raises(LumenAPIError) as raised:
        lumen.estimate("no-such-model", "hi")
    assert raised.value.code == "model_not_found"


def test_streamed_chat_records_the_chat_source(
    lumen: LumenClient, kernel_env: JupyterServer
) -> None:
    events = list(
        lumen.stream_chat("demo-free", "Hello", conversation="conv-client-test", source="chat")
    )
    assert all(isinstance(e, Delta) for e in events[:-1]) and len(events) > 2
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.usage and finished.model == "demo-free"
    answer = "".join(e.text for e in events[:-1] if isinstance(e, Delta))
    assert answer.startswith("Demo reply to: Hello")
    assert SESSION.snapshot()["by_model"]["demo-free"]["requests"] == 1
    with sqlite3.connect(kernel_env.db_path) as db:
        row = db.execute(
            f"SELECT source, notebook FROM {requests_log.name} WHERE conversation = ?",
            ("conv-client-test",),
        ).fetchone()
    assert row == ("chat", str(kernel_env.root_dir / "work" / "analysis.ipynb"))


def test_the_async_client_is_a_twin(kernel_env: JupyterServer) -> None:
    sync_methods = {n for n in dir(LumenClient) if not n.startswith("_")} - {"close"}
    async_methods = {n for n in dir(AsyncLumenClient) if not n.startswith("_")} - {"aclose"}
    assert sync_methods == async_methods

    async def run() -> dict[str, Any]:
        async with AsyncLumenClient() as client:
            assert await client.profile_api_available()
            created = await client.create_key("async-test")
            keys = await client.keys()
            revoked = await client.revoke_key(created["id"])
            events = [e async for e in client.stream_chat("demo-pro", "Hi", max_tokens=20)]
            return {
                "profile": await client.profile(),
                "keys": keys,
                "created": created,
                "revoked": revoked,
                "models": await client.models(),
                "model_page": await client.model_page(limit=1),
                "key_page": await client.key_page(include_revoked=True, limit=5),
                "model": await client.model("demo-pro"),
                "usage": await client.usage(group_by="key"),
                "estimate": await client.estimate("demo-pro", "Hello there", 100),
                "events": events,
                "session": await client.session_usage(),
            }

    got = asyncio.run(run())
    assert got["created"]["id"] in {k["id"] for k in got["keys"]}
    assert got["revoked"]["result"] == "revoked"
    assert got["model"]["name"] == "demo-pro" and len(got["models"]) == 3
    assert got["model_page"] == {"models": got["models"][:1], "total": 3}
    assert got["key_page"]["total"] >= 1 and 1 <= len(got["key_page"]["keys"]) <= 5
    assert got["estimate"]["worst_case"]["micro"] == 15_500
    assert isinstance(got["events"][-1], Finished) and got["events"][-1].usage
    assert got["session"]["by_model"]["demo-pro"]["requests"] == 1


def test_openai_clients_carry_notebook_and_cell(
    kernel_env: JupyterServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    monkeypatch.setattr(
        shell, "parent_header", {"metadata": {"cellId": "cell-openai"}}, raising=False
    )
    client = lumen_jupyter.openai_client()
    assert client.base_url == kernel_env.root_url + "lumen/v1/"
    reply = client.chat.completions.create(
        model="demo-pro", messages=[{"role": "user", "content": "Hi"}], max_tokens=20
    )
    stream = client.chat.completions.create(
        model="demo-pro",
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=20,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].usage is not None
    bare = list(
        client.chat.completions.create(
            model="demo-free", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
    )
    assert bare

    async def run_async() -> Any:
        aclient = lumen_jupyter.async_openai_client()
        return await aclient.chat.completions.create(
            model="demo-free", messages=[{"role": "user", "content": "Hi"}], max_tokens=10
        )

    areply = asyncio.run(run_async())
    assert reply.usage and areply.usage
    with sqlite3.connect(kernel_env.db_path) as db:
        rows = db.execute(
            f"SELECT source, notebook FROM {requests_log.name} WHERE cell = ?", ("cell-openai",)
        ).fetchall()
    path = str(kernel_env.root_dir / "work" / "analysis.ipynb")
    assert rows == [("kernel", path)] * 4
    session = SESSION.snapshot()["by_model"]
    assert session["demo-pro"]["requests"] == 2 and session["demo-pro"]["unknown_usage"] == 0
    assert session["demo-free"]["requests"] == 2
    assert session["demo-free"]["unknown_usage"] == 1  # streamed without include_usage


def test_an_exhausted_budget_is_not_retried(
    broke_server: JupyterServer, clean_env: pytest.MonkeyPatch
) -> None:
    for name, value in broke_server.kernel_env().items():
        clean_env.setenv(name, value)
    sent: list[str] = []

    def count(request: Any) -> None:
        sent.append(str(request.url))

    client = lumen_jupyter.openai_client(
        http_client=openai.DefaultHttpxClient(event_hooks={"request": [count]})
    )
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(
            model="demo-pro", messages=[{"role": "user", "content": "Hi"}], max_tokens=5
        )
    assert len(sent) == 1
    assert raised.value.response.headers["x-should-retry"] == "false"
    with lumen_jupyter.client() as lumen:
        with pytest.raises(LumenAPIError) as error:
            list(lumen.stream_chat("demo-pro", "Hi"))
        assert error.value.status == 429 and error.value.next_refill_at
        assert "Next refill at" in error.value.one_line()
        assert lumen.profile()["pool"]["exhausted"] is True


def test_a_personal_key_sees_models_but_not_the_profile(
    server: JupyterServer, clean_env: pytest.MonkeyPatch
) -> None:
    created = server.rest("POST", "lumen/api/keys", json={"name": "script"}).json()
    clean_env.setenv("LUMEN_BASE_URL", server.root_url)
    clean_env.setenv("LUMEN_API_KEY", created["key"])
    with lumen_jupyter.client() as client:
        assert client.connection.kind == "key"
        assert not client.profile_api_available()
        assert "Personal API keys cannot read the profile" in str(client.profile_api_reason)
        assert {m["id"] for m in client.v1_models()} >= {"demo-free", "demo-pro"}
        assert client.estimate("demo-pro", "Hello there", 100)["worst_case"]["micro"] == 15_500
        reply = client.chat("demo-pro", "Hi", max_tokens=10)
        assert reply["usage"]["prompt_tokens"] > 0
        session = client.session_usage()
        assert session["by_model"]["demo-pro"]["requests"] == 1
        assert session["coins"]["micro"] > 0
        with pytest.raises(LumenAPIError) as raised:
            client.profile()
        assert raised.value.code == "key_not_allowed"
        assert "Personal API keys work on the model API only" in raised.value.one_line()
    server.rest("DELETE", f"lumen/api/keys/{created['id']}")
    clean_env.setenv("LUMEN_API_KEY", created["key"])
    with lumen_jupyter.client() as client, pytest.raises(LumenAPIError) as raised:
        client.v1_models()
    assert raised.value.status == 401
    assert f"{created['hint']} is unknown or revoked" in raised.value.one_line()


@pytest.fixture(scope="module")
def plain_endpoint() -> Iterator[str]:
    """A plain OpenAI-compatible endpoint: the demo backend on its own."""
    process = subprocess.Popen(
        [sys.executable, "-m", "lumen_jupyter.demo.backend", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        yield line.rsplit(" ", 1)[-1].strip()
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_plain_openai_endpoint_has_no_profile_api(
    plain_endpoint: str, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("LUMEN_BASE_URL", plain_endpoint)
    clean_env.setenv("LUMEN_API_KEY", "sk-anything")
    with lumen_jupyter.client() as client:
        assert client.connection.api_url is None
        assert not client.profile_api_available()
        with pytest.raises(LumenAPIError) as raised:
            client.keys()
        assert raised.value.code == "no_profile_api"
        assert "without the lumen-jupyter profile API" in raised.value.one_line()
        models = client.v1_models()
        assert {m["id"] for m in models} >= {"demo-free"}
        events = list(client.stream_chat("demo-free", "Hi"))
        assert isinstance(events[-1], Finished)


def test_the_client_never_sends_a_key_in_a_url(lumen: LumenClient) -> None:
    seen: list[httpx.Request] = []
    lumen._http.event_hooks["request"].append(seen.append)
    lumen.profile()
    lumen.keys()
    assert seen and all("lkt_" not in str(r.url) for r in seen)
