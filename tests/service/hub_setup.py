"""The hub-mode service of the tests: its YAML, its users at the fake hub, and a
runner in a thread of its own (for the browser tests, whose Playwright owns the
main thread's event loop).

The hub's users: alice in ``class-a``, erin in ``class-b``, bob who may grant to
``class-a``, carol a hub admin with ``custom:lumen:admin``, dave a hub admin
without any lumen scope.  The YAML gives everyone a 20-coin pool and hub group
``staff`` a 500-coin one.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from traitlets.config import Config

from lumen_jupyter.demo.backend import DemoBackend
from lumen_jupyter.service.app import LumenServe
from lumen_jupyter.store import sqlite_url
from tests.hosts.standalone import served
from tests.service.fake_hub import FakeHub

PREFIX = "/services/lumen/"
ADMIN_SCOPE = "custom:lumen:admin"
GRANT_CLASS_A = "custom:lumen:grant!group=class-a"


def populate(hub: FakeHub) -> FakeHub:
    hub.add_user("alice", {"class-a"}, user_info={"name": "Alice Liddell"})
    hub.add_user("bob", {"teachers"}, scopes={GRANT_CLASS_A})
    hub.add_user("carol", admin=True, scopes={ADMIN_SCOPE})
    hub.add_user("dave", admin=True)
    hub.add_user("erin", {"class-b"})
    return hub


def lumen_config(tmp_path: Path, demo_url: str, cache_seconds: float = 1.0) -> Config:
    """``c.Lumen`` and ``c.LumenServe`` of the service: SQLite in ``tmp_path``."""
    path = tmp_path / "lumen.yaml"
    model = {
        "name": "demo-pro",
        "input_cost_per_million": 50,
        "output_cost_per_million": 150,
        "endpoints": [{"url": demo_url, "model": "demo-pro"}],
    }
    yaml_text = {
        "models": [model],
        "defaults": {"models": "allowed", "tokens": {"max": 20, "starting": 20}},
        "groups": {"staff": {"tokens": {"max": 500, "starting": 500}}},
    }
    path.write_text(yaml.safe_dump(yaml_text), encoding="utf-8")
    config = Config()
    config.Lumen.database_url = sqlite_url(tmp_path / "lumen.db")
    config.Lumen.config_file = str(path)
    config.Lumen.demo_backend = "off"
    config.Lumen.health_interval = 0.0
    config.Lumen.secret_file = str(tmp_path / "secret")
    config.LumenServe.admin_token_file = str(tmp_path / "admin" / "token")
    config.LumenServe.hub_cache_seconds = cache_seconds
    return config


@dataclass
class ThreadedService:
    hub: FakeHub
    root: str
    """``http://127.0.0.1:PORT/services/lumen/``"""
    admin_token: str


@contextmanager
def service_in_thread(tmp_path: Path) -> Iterator[ThreadedService]:
    """The fake hub, a demo upstream and the service in hub mode, on an event loop of
    their own thread; the ``JUPYTERHUB_*`` environment is restored afterwards."""
    hub = populate(FakeHub())
    saved = dict(os.environ)
    started = threading.Event()
    found: dict[str, Any] = {}
    loop = asyncio.new_event_loop()

    async def main() -> None:
        stop = asyncio.Event()
        found["stop"] = stop
        hub.start()
        demo = DemoBackend(enable_control=False)
        await demo.start()
        os.environ.update(hub.environ(PREFIX))
        app = LumenServe(config=lumen_config(tmp_path, demo.base_url))
        try:
            async with served(app) as (port, _):
                hub.service_origin = f"http://127.0.0.1:{port}"
                found["root"] = f"{hub.service_origin}{PREFIX}"
                started.set()
                await stop.wait()
        finally:
            await demo.stop()
            await hub.stop()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    try:
        assert started.wait(30), "the service did not start"
        token = (tmp_path / "admin" / "token").read_text().strip()
        yield ThreadedService(hub, found["root"], token)
    finally:
        loop.call_soon_threadsafe(found["stop"].set)
        thread.join(30)
        os.environ.clear()
        os.environ.update(saved)
