"""Both halves together: a user's server in hub mode and the service in hub mode.

The service runs with its real hub authenticator (``server/hub_auth.py``) against
the fake hub of ``tests/service/fake_hub.py``; alice's Jupyter server forwards to
it with the server token the hub gave her server.  So what the forwarder sends is
what the service's hub mode accepts: the server token is resolved by the hub into
alice, with her hub groups, and a token without access to the service is refused.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from lumen_jupyter.demo.backend import DemoBackend
from lumen_jupyter.service.app import LumenServe
from lumen_jupyter.store.schema import requests_log
from tests.hosts.standalone import serving
from tests.service.fake_hub import ACCESS, FakeHub
from tests.service.hub_setup import PREFIX, lumen_config, populate

MESSAGES = [{"role": "user", "content": "Say something short"}]


@pytest.fixture
def fake_hub(jp_asyncio_loop: asyncio.AbstractEventLoop) -> Iterator[FakeHub]:
    hub = populate(FakeHub())
    hub.start()
    yield hub
    jp_asyncio_loop.run_until_complete(hub.stop())


@pytest.fixture
def service(
    fake_hub: FakeHub,
    demo: DemoBackend,
    tmp_path: Path,
    jp_asyncio_loop: asyncio.AbstractEventLoop,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[str, Any]]:
    """The service as the hub runs it: its own hub token and API URL in its environment
    while it starts (it reads them once)."""
    with monkeypatch.context() as service_env:
        for name, value in fake_hub.environ(PREFIX).items():
            service_env.setenv(name, value)
        (tmp_path / "service").mkdir()
        app = LumenServe(config=lumen_config(tmp_path / "service", demo.base_url))
        with serving(app, jp_asyncio_loop) as (port, runtime):
            fake_hub.service_origin = f"http://127.0.0.1:{port}"
            service_env.undo()  # from here on, this process is alice's server
            yield f"http://127.0.0.1:{port}{PREFIX}", runtime.service


@pytest.fixture
def server_token(fake_hub: FakeHub) -> str:
    """The token JupyterHub gives alice's server (``c.Spawner.server_token_scopes``)."""
    return fake_hub.token("alice", {ACCESS, "access:servers!server=alice/"})


@pytest.fixture
def jp_server_config(
    service: tuple[str, Any], server_token: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    for name in ("LUMEN_DATABASE_URL", "LUMEN_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LUMEN_SERVICE_URL", service[0])
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", server_token)
    monkeypatch.setenv("JUPYTERHUB_USER", "alice")
    return {"ServerApp": {"jpserver_extensions": {"lumen_jupyter": True}}}


@pytest.fixture
def users_server(
    jp_serverapp: Any,
    http_server: Any,
    jp_http_port: int,
    jp_base_url: str,
    jp_asyncio_loop: asyncio.AbstractEventLoop,
) -> Iterator[tuple[str, dict[str, str], httpx.AsyncClient]]:
    http = httpx.AsyncClient(timeout=30)
    session = {"Authorization": f"token {jp_serverapp.identity_provider.token}"}
    yield f"http://127.0.0.1:{jp_http_port}{jp_base_url}", session, http
    jp_asyncio_loop.run_until_complete(http.aclose())


async def test_the_hub_resolves_the_servers_token_into_its_owner(
    users_server: tuple[str, dict[str, str], httpx.AsyncClient], service: tuple[str, Any]
) -> None:
    root, session, http = users_server
    profile = await http.get(f"{root}lumen/api/profile", headers=session)
    assert profile.status_code == 200, profile.text
    assert profile.json()["user"]["username"] == "alice"
    answer = await http.post(
        f"{root}lumen/v1/chat/completions",
        headers=session,
        json={"model": "demo-pro", "messages": MESSAGES, "max_tokens": 5},
    )
    assert answer.status_code == 200, answer.text
    books = service[1]
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        with books.store.read() as conn:
            rows = conn.execute(select(requests_log.c.account_id, requests_log.c.status)).all()
        if rows and rows[0].status != "pending":
            break
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    assert rows == [(books.known_account("alice"), "ok")]


async def test_the_coin_meter_streams_from_the_hub_backed_service(
    users_server: tuple[str, dict[str, str], httpx.AsyncClient],
) -> None:
    root, session, http = users_server
    async with http.stream("GET", f"{root}lumen/api/events", headers=session) as events:
        assert events.status_code == 200
        async for line in events.aiter_lines():
            if line.startswith("data: "):
                assert json.loads(line[6:])["balance"]["micro"] == 20_000_000
                break


async def test_a_server_token_without_access_to_the_service_is_refused_there(
    users_server: tuple[str, dict[str, str], httpx.AsyncClient],
    fake_hub: FakeHub,
    server_token: str,
) -> None:
    root, session, http = users_server
    fake_hub.tokens[server_token].scopes.discard(ACCESS)  # an admin forgot server_token_scopes
    refused = await http.get(f"{root}lumen/api/profile", headers=session)
    assert refused.status_code == 403, refused.text
    message = refused.json()["error"]["message"]
    assert "access:services" in message, message
    assert server_token not in refused.text
