"""One lumen, two hosts: the same behaviour tests against each, on SQLite and PostgreSQL.

``host`` is a running lumen with a demo backend of the test's own, reached over HTTP:

* ``extension``: a real Jupyter server (pytest-jupyter) with the server extension; the
  user's session is Jupyter's token;
* ``standalone``: the standalone service (``jupyter lumen serve``) in this process, on a
  free port under the prefix ``/services/lumen/``; its session authenticator here is a
  small one that names the user in the bearer token, standing in for JupyterHub's;
* ``hub``: a real Jupyter server whose extension runs in hub mode, forwarding to the
  standalone service (``hub_service.py``), which knows the user by the server's hub token.

Both read the same YAML: a 20-coin pool refilled by 1 coin an hour, the demo models.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from sqlalchemy import select
from traitlets.config import Config

from lumen_jupyter.core.accounts import Identity
from lumen_jupyter.core.ledger import ledger_matches_balance
from lumen_jupyter.core.service import LumenService
from lumen_jupyter.demo.backend import DemoBackend
from lumen_jupyter.service.app import LumenServe
from lumen_jupyter.store.schema import accounts, requests_log
from tests.contract import check_response
from tests.hosts.hub_service import RunningService, hub_environment, running_service
from tests.hosts.standalone import serving

SESSION_PREFIX = "session-of-"
POOL = {"max": 20, "refresh": 1, "starting": 20}


def models(url: str) -> list[dict[str, Any]]:
    def entry(name: str, upstream: str, price_in: float, price_out: float, **extra: Any) -> Any:
        return {
            "name": name,
            "input_cost_per_million": price_in,
            "output_cost_per_million": price_out,
            "endpoints": [{"url": url, "model": upstream}],
            **extra,
        }

    return [
        entry("demo-free", "demo-free", 0, 0),
        entry("demo-pro", "demo-pro", 50, 150, max_output_tokens=2048),
        entry(
            "demo-restricted",
            "demo-restricted",
            100,
            300,
            needs_consent=True,
            notice="demo-restricted has terms: accept them once.",
        ),
        entry("demo-costly", "demo-pro", 4_000_000, 4_000_000),
        entry("demo-dear", "demo-pro", 100_000, 100_000),
    ]


@pytest.fixture
def lumen_settings(tmp_path: Path, demo: DemoBackend, empty_store_url: str) -> dict[str, Any]:
    """The settings both hosts get (``c.Lumen.*``)."""
    path = tmp_path / "lumen.yaml"
    config = {
        "models": models(demo.base_url),
        "defaults": {"models": "allowed", "tokens": POOL},
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return {
        "database_url": empty_store_url,
        "config_file": str(path),
        "demo_backend": "off",
        "health_interval": 0.0,
        "secret_file": str(tmp_path / "secret"),
    }


@dataclass
class Host:
    """A running lumen and how to talk to it as ``ada``."""

    name: str
    root: str
    """``http://127.0.0.1:PORT/<prefix>``: where ``lumen/`` starts."""
    session: dict[str, str]
    service: LumenService
    http: httpx.AsyncClient

    @property
    def v1(self) -> str:
        return f"{self.root}lumen/v1"

    async def rest(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        """``lumen/api/<path>`` as the user's session (or ``headers``); the answer is
        checked against the OpenAPI document."""
        url = f"{self.root}lumen/api/{path}"
        response = await self.http.request(
            method,
            url,
            headers=self.session if headers is None else headers,
            content=None if body is None else json.dumps(body),
        )
        check_response(method, httpx.URL(url).path, response.status_code, response.content)
        return response

    async def key(self, name: str = "test-key") -> tuple[int, str]:
        created = (await self.rest("POST", "keys", {"name": name})).json()
        return int(created["id"]), str(created["key"])

    def openai(self, key: str, **options: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.v1, api_key=key, max_retries=0, **options)

    def balance(self, username: str = "ada") -> int:
        pool = self.service.pool_state(Identity(username=username, display_name=username))
        return int(pool["balance"]["micro"])

    async def settled(self, timeout: float = 10.0) -> None:
        """No call left pending, and balance == sum of ledger for every account."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        store = self.service.store
        while True:
            with store.read() as conn:
                pending = conn.execute(
                    select(requests_log.c.id).where(requests_log.c.status == "pending")
                ).all()
            if not pending:
                break
            assert loop.time() < deadline, f"calls left pending: {pending}"
            await asyncio.sleep(0.02)
        with store.read() as conn:
            for acct in conn.execute(select(accounts.c.id)).scalars():
                assert ledger_matches_balance(conn, int(acct)), f"account {acct}"


class NamedSessions:
    """Test sessions: ``Bearer session-of-<user>`` is that user (a stand-in for a hub)."""

    async def identify(self, handler: Any, action: str) -> Identity | None:
        header = handler.request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.startswith(SESSION_PREFIX):
            return None
        name = token.removeprefix(SESSION_PREFIX)
        return Identity(username=name, display_name=name)


@pytest.fixture(params=["extension", "standalone", "hub"])
def host_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def hub_service(
    lumen_settings: dict[str, Any],
    tmp_path: Path,
    jp_asyncio_loop: asyncio.AbstractEventLoop,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[RunningService]:
    """The lumen service, and ``ada``'s server environment pointing at it (hub mode)."""
    with running_service(lumen_settings, tmp_path, jp_asyncio_loop) as running:
        hub_environment(monkeypatch, running.url, "ada")
        yield running


@pytest.fixture
def jp_server_config(
    lumen_settings: dict[str, Any], host_kind: str, request: pytest.FixtureRequest
) -> dict[str, Any]:
    if host_kind == "hub":
        request.getfixturevalue("hub_service")
        # The user's server holds nothing of lumen's: no store, no YAML, no secret.
        return {"ServerApp": {"jpserver_extensions": {"lumen_jupyter": True}}}
    return {
        "ServerApp": {"jpserver_extensions": {"lumen_jupyter": True}},
        "LumenJupyter": {"username": "ada", **lumen_settings},
    }


@pytest.fixture
def host(
    host_kind: str,
    request: pytest.FixtureRequest,
    lumen_settings: dict[str, Any],
    tmp_path: Path,
    jp_asyncio_loop: asyncio.AbstractEventLoop,
) -> Iterator[Host]:
    http = httpx.AsyncClient(timeout=30)
    try:
        if host_kind == "extension":
            yield extension_host(request, http)
        elif host_kind == "hub":
            yield hub_host(request, http)
        else:
            yield from standalone_host(lumen_settings, tmp_path, jp_asyncio_loop, http)
    finally:
        jp_asyncio_loop.run_until_complete(http.aclose())


def extension_host(request: pytest.FixtureRequest, http: httpx.AsyncClient) -> Host:
    serverapp = request.getfixturevalue("jp_serverapp")
    request.getfixturevalue("http_server")
    port = request.getfixturevalue("jp_http_port")
    base = request.getfixturevalue("jp_base_url")
    return Host(
        "extension",
        f"http://127.0.0.1:{port}{base}",
        {"Authorization": f"token {serverapp.identity_provider.token}"},
        serverapp.web_app.settings["lumen_service"],
        http,
    )


def hub_host(request: pytest.FixtureRequest, http: httpx.AsyncClient) -> Host:
    """The user's server in hub mode; the books are the service's."""
    running: RunningService = request.getfixturevalue("hub_service")
    serverapp = request.getfixturevalue("jp_serverapp")
    request.getfixturevalue("http_server")
    port = request.getfixturevalue("jp_http_port")
    base = request.getfixturevalue("jp_base_url")
    return Host(
        "hub",
        f"http://127.0.0.1:{port}{base}",
        {"Authorization": f"token {serverapp.identity_provider.token}"},
        running.service,
        http,
    )


def standalone_host(
    settings: dict[str, Any],
    tmp_path: Path,
    loop: asyncio.AbstractEventLoop,
    http: httpx.AsyncClient,
) -> Iterator[Host]:
    config = Config({"Lumen": settings})
    config.LumenServe.prefix = "/services/lumen/"
    config.LumenServe.admin_token_file = str(tmp_path / "admin" / "token")
    config.LumenServe.access_log = str(tmp_path / "access.log")
    app = LumenServe(config=config)
    app.session_authenticator = NamedSessions()
    with serving(app, loop) as (port, runtime):
        yield Host(
            "standalone",
            f"http://127.0.0.1:{port}/services/lumen/",
            {"Authorization": f"Bearer {SESSION_PREFIX}ada"},
            runtime.service,
            http,
        )
