"""The lumen service as a JupyterHub would run it, without a hub: for hub-mode tests.

:class:`HubTokens` stands in for the hub: it knows each test user's hub token and
resolves ``Authorization: token <hub token>`` (as JupyterHub's ``HubAuth`` reads
it) into that user; nothing else names anyone.  :func:`running_service` runs the
standalone service in this process on a free port under ``/services/lumen/``.

A user's Jupyter server in hub mode is pointed at it with :func:`hub_environment`:
``LUMEN_SERVICE_URL``, the owner's hub token and name, and no lumen store.

``python -m tests.hosts.hub_service [LumenServe options]`` runs the same service as a
process of its own (for the kernel tests and the forwarder benchmark).
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tornado.httpserver import HTTPServer
from traitlets.config import Config

from lumen_jupyter.core.accounts import Identity
from lumen_jupyter.core.service import LumenService
from lumen_jupyter.service.app import LumenServe

HUB_TOKENS = {
    "ada": "3f1c0c5e9b7a4d2e8f6a1b3c5d7e9f01",
    "bob": "8a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d",
}
"""Each test user's hub token (JupyterHub's are 32 hex digits too)."""

PREFIX = "/services/lumen/"


class HubTokens:
    """A stand-in for the hub: ``Authorization: token <hub token>`` is that token's user."""

    def __init__(self, tokens: dict[str, str] | None = None) -> None:
        self.users = {token: name for name, token in (tokens or HUB_TOKENS).items()}

    async def identify(self, handler: Any, action: str) -> Identity | None:
        scheme, _, token = handler.request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() not in ("token", "bearer"):
            return None
        name = self.users.get(token.strip())
        return None if name is None else Identity(username=name, display_name=name)


@dataclass
class RunningService:
    url: str
    """``http://127.0.0.1:PORT/services/lumen/``: what ``LUMEN_SERVICE_URL`` names."""
    service: LumenService
    app: LumenServe
    server: HTTPServer

    async def stop(self) -> None:
        """Stop answering: the port is closed, open connections are cut."""
        self.server.stop()
        await self.server.close_all_connections()


@contextmanager
def running_service(
    settings: dict[str, Any], tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> Iterator[RunningService]:
    """The standalone service with ``settings`` (``c.Lumen.*``), hub tokens as sessions."""
    config = Config({"Lumen": settings})
    config.LumenServe.prefix = PREFIX
    config.LumenServe.admin_token_file = str(tmp_path / "service-admin" / "token")
    app = LumenServe(config=config)
    app.session_authenticator = HubTokens()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)

    async def start() -> Any:
        return app.start_server([sock])

    runtime, server = loop.run_until_complete(start())

    async def stop() -> None:
        server.stop()
        await server.close_all_connections()
        await runtime.close()

    try:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}{PREFIX}"
        yield RunningService(url, runtime.service, app, server)
    finally:
        loop.run_until_complete(stop())


def hub_environment(monkeypatch: pytest.MonkeyPatch, service_url: str, owner: str = "ada") -> None:
    """The environment JupyterHub gives ``owner``'s server, with the admin's
    ``LUMEN_SERVICE_URL``; no lumen store or YAML is named."""
    for name in ("LUMEN_DATABASE_URL", "LUMEN_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LUMEN_SERVICE_URL", service_url)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", HUB_TOKENS[owner])
    monkeypatch.setenv("JUPYTERHUB_USER", owner)


def main() -> None:
    """The service as a process, knowing the test users by their hub tokens."""
    LumenServe.session_authenticator = HubTokens()
    LumenServe.launch_instance(sys.argv[1:])


if __name__ == "__main__":
    main()
