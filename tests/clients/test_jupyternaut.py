"""Jupyternaut on top of the gateway: the recipe of docs/jupyter-ai.md, end to end.

A server from the client environment runs Jupyternaut with only a gateway model named
(``initial_language_model = "openai/demo-pro"``) and the ``lumen_jupyter.jupyternaut``
extension.  A chat client on jupyterlab-chat's WebSocket - what JupyterLab's chat
panel speaks when real-time collaboration is off - asks Jupyternaut a question in
``work/help.chat``.  The answer streams back from the demo backend through the
gateway; the call is billed as chat traffic of that chat, with the server's own
credential and no personal key; and no credential is in jupyter-ai's settings, the
server's log, the chat file, the server's environment, or any other file it wrote.

The :class:`~lumen_jupyter.jupyternaut.GatewayAuth` tests show that the credential is
put on requests to the gateway only.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from lumen_jupyter.jupyternaut import (
    PLACEHOLDER_KEY,
    ChatContext,
    GatewayAuth,
    _current_chat,
    server_root_url,
)
from tests.clients.evidence import (
    CREDENTIAL,
    PERSONAL_KEY,
    assert_no_secret_in_files,
    key_count,
    process_environment,
    request_rows,
    usage_totals,
)
from tests.kernel.server import JupyterServer

JUPYTERNAUT = "jupyter-ai-personas::jupyter_ai_jupyternaut::JupyternautPersona"
CHAT = "work/help.chat"


async def ask_jupyternaut(server: JupyterServer, path: str, question: str) -> tuple[str, str]:
    """Send ``question`` to Jupyternaut in the chat at ``path``; (its answer, the chat id).

    As JupyterLab's chat input does: the message names its persona in
    ``metadata.to_persona``; the answer is streamed as updates of one message, and
    the persona's "writing" state turns off when it is complete.
    """
    url = server.root_url.replace("http", "ws", 1) + "api/chat/ws/" + path
    socket = await websocket_connect(HTTPRequest(url, headers=server.jupyter_headers))
    try:
        connection = json.loads(await socket.read_message())  # type: ignore[arg-type]
        assert connection["action"] == "connection", connection
        deadline = time.monotonic() + 30  # the personas join the chat once it opens
        while JUPYTERNAUT not in connection["users"]:
            frame = await asyncio.wait_for(socket.read_message(), deadline - time.monotonic())
            data = json.loads(frame)  # type: ignore[arg-type]
            if data["action"] == "users":
                connection["users"].update(data["users"])
        message = {
            "type": "client",
            "action": "send",
            "id": uuid.uuid4().hex,
            "body": f"@Jupyternaut {question}",
            "mentions": [JUPYTERNAUT],
            "metadata": {"to_persona": JUPYTERNAUT},
        }
        await socket.write_message(json.dumps(message))
        answer: dict[str, Any] = {}
        deadline = time.monotonic() + 90
        while True:
            frame = await asyncio.wait_for(socket.read_message(), deadline - time.monotonic())
            assert frame is not None, "the server closed the chat"
            data = json.loads(frame)
            if data["action"] == "message" and data["message"]["sender"] == JUPYTERNAUT:
                answer = data["message"]
            done = data["action"] == "writing" and data["user"]["username"] == JUPYTERNAUT
            if done and not data["state"] and answer:
                return str(answer["body"]), str(connection["id"])
    finally:
        socket.close()


def test_jupyternaut_answers_through_the_gateway(jupyternaut_server: JupyterServer) -> None:
    server = jupyternaut_server
    (server.root_dir / "work").mkdir(exist_ok=True)
    (server.root_dir / CHAT).write_text("", encoding="utf-8")

    answer, chat_id = asyncio.run(ask_jupyternaut(server, CHAT, "say hello"))

    assert answer.startswith("Demo reply to:"), answer  # the demo backend, via the gateway
    assert "say hello" in answer
    assert not answer.startswith("Error"), answer

    rows = request_rows(server)
    assert rows, "Jupyternaut's call did not reach the gateway"
    assert {(r["model"], r["source"], r["notebook"], r["conversation"]) for r in rows} == {
        ("demo-pro", "chat", CHAT, chat_id)
    }, rows
    assert all(r["status"] == "ok" and r["key_id"] is None for r in rows), rows
    assert key_count(server) == 0  # no personal key was made for it

    profile = server.rest("GET", "lumen/api/profile").json()
    assert profile["web_chat"]["requests"] == len(rows)
    assert profile["web_chat"]["conversations"] == 1
    assert usage_totals(server, "group_by=notebook")[CHAT]["requests"] == len(rows)

    settings = server.root_dir.parent / "data" / "jupyter_ai" / "config.json"
    config = json.loads(settings.read_text(encoding="utf-8"))
    assert config["model_provider_id"] == "openai/demo-pro"
    assert config["api_keys"] == {}
    assert not (server.root_dir / ".env").exists()  # jupyter-ai's secrets file
    searched = assert_no_secret_in_files(server)
    assert "data/jupyter_ai/config.json" in searched and CHAT in [
        s.removeprefix("root/") for s in searched
    ]
    environment = process_environment(server.process.pid)
    assert not CREDENTIAL.search(environment) and not PERSONAL_KEY.search(environment)


# -- what the recipe's request hook sends where ------------------------------------------

V1 = "http://127.0.0.1:8888/a%40b/lumen/v1/"
SECRET = "lkt_" + "x" * 43


def _request(url: str) -> httpx.Request:
    return httpx.Request("POST", url, headers={"Authorization": f"Bearer {PLACEHOLDER_KEY}"})


def test_credential_goes_to_the_gateway_only() -> None:
    auth = GatewayAuth(V1.rstrip("/"), SECRET)
    to_gateway = _request(V1 + "chat/completions")
    auth.stamp(to_gateway)
    assert to_gateway.headers["Authorization"] == f"Bearer {SECRET}"
    for elsewhere in (
        "https://api.openai.com/v1/chat/completions",
        "http://127.0.0.1:8888/a%40b/api/contents",  # the same server, not the gateway
        "http://127.0.0.1:9999/a%40b/lumen/v1/chat/completions",  # another port
    ):
        request = _request(elsewhere)
        auth.stamp(request)
        assert request.headers["Authorization"] == f"Bearer {PLACEHOLDER_KEY}", elsewhere
        assert "X-Lumen-Source" not in request.headers
    assert SECRET not in repr(auth)


def test_calls_while_answering_a_chat_are_chat_traffic_of_that_chat() -> None:
    auth = GatewayAuth(V1, SECRET)
    outside = _request(V1 + "chat/completions")
    auth.stamp(outside)
    assert "X-Lumen-Source" not in outside.headers  # not from a persona: no attribution

    async def answer() -> httpx.Request:
        token = _current_chat.set(ChatContext("work/a b.chat", "c" * 80))
        try:
            request = _request(V1 + "chat/completions")
            await auth.astamp(request)
            return request
        finally:
            _current_chat.reset(token)

    inside = asyncio.run(answer())
    assert inside.headers["X-Lumen-Source"] == "chat"
    assert inside.headers["X-Lumen-Notebook"] == "work/a%20b.chat"
    assert inside.headers["X-Lumen-Conversation"] == "c" * 64


def test_server_root_url_is_loopback_for_a_wildcard_address() -> None:
    class App:
        ip = "0.0.0.0"
        port = 8888
        base_url = "/user/ada/"
        certfile = ""

    assert server_root_url(App()) == "http://127.0.0.1:8888/user/ada/"
    App.ip, App.certfile = "::1", "cert.pem"
    assert server_root_url(App()) == "https://[::1]:8888/user/ada/"
