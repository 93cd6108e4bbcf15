"""What goes over the wire between a user's server in hub mode and the lumen service.

The service is played here by a small recording HTTP server, so the tests can see
exactly what the forwarder sends it - which headers, which credential, when each
piece of a body arrives - and make it misbehave (hang up, close a kept connection).
ada's Jupyter server runs the extension in hub mode, pointed at it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from tornado import web
from tornado.httpserver import HTTPServer

from tests.hosts.hub_service import HUB_TOKENS, PREFIX, hub_environment


@dataclass
class Seen:
    """One request as the service received it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    peer: int
    pieces: list[tuple[float, int]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)


@dataclass
class Recorder:
    url: str
    seen: list[Seen] = field(default_factory=list)
    served: dict[int, int] = field(default_factory=dict)  # requests per connection
    drop_reused: int = 0  # close this many reused connections unanswered


@web.stream_request_body
class RecordingHandler(web.RequestHandler):
    def initialize(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def prepare(self) -> None:
        connection = self.request.connection
        stream = connection.stream  # type: ignore[union-attr]
        peer = stream.socket.getpeername()[1]
        served = self.recorder.served
        key = id(stream)  # one per TCP connection (tornado makes a connection object per request)
        served[key] = served.get(key, 0) + 1
        if served[key] > 1 and self.recorder.drop_reused > 0:
            self.recorder.drop_reused -= 1
            stream.close()  # the head was read; nothing will be answered
            self._finished = True
            return
        self.record = Seen(
            self.request.method or "",
            self.request.path,
            self.request.query,
            dict(self.request.headers.get_all()),
            peer,
        )
        self.recorder.seen.append(self.record)

    def data_received(self, chunk: bytes) -> None:
        self.record.pieces.append((time.monotonic(), len(chunk)))
        self.record.body += chunk

    async def get(self, path: str) -> None:
        if path == "api/hangup":
            self.request.connection.stream.close()  # type: ignore[union-attr]
            self._finished = True
            return
        if path == "v1/pieces":
            self.set_header("Content-Type", "text/event-stream; charset=utf-8")
            for index in range(5):
                self.write(f"data: {index} {time.monotonic()}\n\n")
                await self.flush()
                await asyncio.sleep(0.2)
            self.finish()
            return
        body = bytes(self.record.body)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}))

    post = put = patch = delete = get


@pytest.fixture
def recorder(
    jp_asyncio_loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Recorder]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.setblocking(False)
    found = Recorder(f"http://127.0.0.1:{sock.getsockname()[1]}{PREFIX}")
    app = web.Application([(rf"{PREFIX}lumen/(.*)", RecordingHandler, {"recorder": found})])
    server = HTTPServer(app)
    server.add_sockets([sock])
    hub_environment(monkeypatch, found.url, "ada")
    yield found
    server.stop()
    jp_asyncio_loop.run_until_complete(server.close_all_connections())


@pytest.fixture
def jp_server_config(recorder: Recorder) -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"lumen_jupyter": True}}}


@dataclass
class UsersServer:
    root: str
    token: str
    settings: dict[str, Any]

    @property
    def session(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}


@pytest.fixture
def users_server(
    jp_serverapp: Any, http_server: Any, jp_http_port: int, jp_base_url: str
) -> UsersServer:
    return UsersServer(
        f"http://127.0.0.1:{jp_http_port}{jp_base_url}",
        jp_serverapp.identity_provider.token,
        jp_serverapp.web_app.settings,
    )


@pytest.fixture
def http(jp_asyncio_loop: asyncio.AbstractEventLoop) -> Iterator[httpx.AsyncClient]:
    client = httpx.AsyncClient(timeout=30)
    yield client
    jp_asyncio_loop.run_until_complete(client.aclose())


ALLOWED = {
    "host",
    "accept-encoding",
    "authorization",
    "user-agent",
    "content-type",
    "content-length",
    "accept",
    "x-lumen-notebook",
    "x-lumen-cell",
    "x-lumen-conversation",
    "x-lumen-source",
}


async def test_the_service_gets_the_servers_credential_labels_and_nothing_else(
    users_server: UsersServer, recorder: Recorder, http: httpx.AsyncClient
) -> None:
    credential = users_server.settings["lumen_kernel_credentials"].issue("kernel-1")
    labels = {
        "X-Lumen-Notebook": "work/a%20b.ipynb",
        "X-Lumen-Cell": "c1",
        "X-Lumen-Conversation": "talk",
    }
    spoofs = {
        "X-Lumen-User": "bob",
        "X-Forwarded-User": "bob",
        "X-Forwarded-For": "10.0.0.66",
        "Cookie": "jupyterhub-session-id=forged",
        "X-XSRFToken": "forged",
    }
    callers = {
        "session": users_server.session,
        "kernel": {"Authorization": f"Bearer {credential}"},
        "key": {"Authorization": "Bearer sk_" + "k" * 43},
    }
    for name, auth in callers.items():
        answer = await http.post(
            f"{users_server.root}lumen/v1/chat/completions?user=bob",
            headers={**auth, **labels, **spoofs},
            json={"model": "demo-pro"},
        )
        assert answer.status_code == 200, (name, answer.text)
    session, kernel, key = recorder.seen
    for seen in recorder.seen:
        assert {k.lower() for k in seen.headers} <= ALLOWED
        assert seen.path == f"{PREFIX}lumen/v1/chat/completions"
        assert seen.query == "user=bob"  # passed on; the service never reads a user there
        assert seen.headers["X-Lumen-Notebook"] == "work/a%20b.ipynb"
        assert seen.headers["Host"] == recorder.url.split("/")[2]
        text = json.dumps(seen.headers)
        assert users_server.token not in text and credential not in text
    hub_token = f"token {HUB_TOKENS['ada']}"
    assert session.headers["Authorization"] == hub_token
    assert "X-Lumen-Source" not in session.headers
    assert kernel.headers["Authorization"] == hub_token
    assert kernel.headers["X-Lumen-Source"] == "kernel"
    assert key.headers["Authorization"] == "Bearer sk_" + "k" * 43  # unchanged
    assert HUB_TOKENS["ada"] not in json.dumps(key.headers)


async def test_a_body_reaches_the_service_while_the_caller_still_sends_it(
    users_server: UsersServer, recorder: Recorder, http: httpx.AsyncClient
) -> None:
    piece = b"x" * 65536
    sent: list[float] = []

    async def slowly() -> AsyncIterator[bytes]:
        for _ in range(4):
            sent.append(time.monotonic())
            yield piece
            await asyncio.sleep(0.3)

    answer = await http.post(
        f"{users_server.root}lumen/v1/embeddings", content=slowly(), headers=users_server.session
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "bytes": 4 * len(piece),
        "sha256": hashlib.sha256(piece * 4).hexdigest(),
    }
    (seen,) = recorder.seen
    assert seen.headers.get("Transfer-Encoding") == "chunked"
    first_arrival = seen.pieces[0][0]
    assert first_arrival < sent[-1] - 0.3, (seen.pieces[0], sent)


async def test_a_large_body_passes_intact_with_its_length(
    users_server: UsersServer, recorder: Recorder, http: httpx.AsyncClient
) -> None:
    body = bytes(range(256)) * (8 * 4096)  # 8 MiB
    answer = await http.post(
        f"{users_server.root}lumen/v1/embeddings", content=body, headers=users_server.session
    )
    assert answer.json() == {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    (seen,) = recorder.seen
    assert seen.headers["Content-Length"] == str(len(body))


async def test_an_answer_of_unknown_length_is_relayed_piece_by_piece(
    users_server: UsersServer, http: httpx.AsyncClient
) -> None:
    arrivals: list[tuple[float, float]] = []
    async with http.stream(
        "GET", f"{users_server.root}lumen/v1/pieces", headers=users_server.session
    ) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "text/event-stream; charset=utf-8"
        async for line in answer.aiter_lines():
            if line.startswith("data: "):
                produced = float(line.split()[2])
                arrivals.append((produced, time.monotonic()))
    assert len(arrivals) == 5
    for produced, arrived in arrivals:
        assert arrived - produced < 0.15  # each piece as it was produced, not at the end


async def test_a_broken_exchange_is_a_502(
    users_server: UsersServer, http: httpx.AsyncClient
) -> None:
    answer = await http.get(f"{users_server.root}lumen/api/hangup", headers=users_server.session)
    assert answer.status_code == 502
    error = answer.json()["error"]
    assert error["code"] == "lumen_service_error"
    assert "did not answer properly" in error["message"]
    assert HUB_TOKENS["ada"] not in answer.text


async def test_connections_to_the_service_are_kept_alive(
    users_server: UsersServer, recorder: Recorder, http: httpx.AsyncClient
) -> None:
    for _ in range(5):
        answer = await http.get(f"{users_server.root}lumen/api/echo", headers=users_server.session)
        assert answer.status_code == 200
    assert len({seen.peer for seen in recorder.seen}) == 1


async def test_a_body_is_sent_again_when_a_kept_connection_was_closed_unanswered(
    users_server: UsersServer, recorder: Recorder, http: httpx.AsyncClient
) -> None:
    assert (
        await http.get(f"{users_server.root}lumen/api/echo", headers=users_server.session)
    ).status_code == 200
    recorder.drop_reused = 1  # the kept connection's next request is cut, unanswered
    body = b"y" * 300_000

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 50_000):
            yield body[start : start + 50_000]
            await asyncio.sleep(0.01)

    answer = await http.post(
        f"{users_server.root}lumen/v1/embeddings", content=pieces(), headers=users_server.session
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    assert recorder.drop_reused == 0
    first, second = recorder.seen
    assert first.peer != second.peer  # the retry went on a new connection
