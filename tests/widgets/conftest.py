"""Widget tests: the profile widgets over a real Jupyter server (pytest-jupyter).

The widgets call their source synchronously, and the test server runs on the
test's own event loop, so every widget call is made from a thread
(``await run(...)``) while the loop serves the request.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import comm
import pytest

from lumen_jupyter.kernel.client import call_listeners as hooks

from .rest_source import RestSource


@pytest.fixture
def jp_server_config(tmp_path: Any) -> dict[str, Any]:
    return {
        "ServerApp": {"jpserver_extensions": {"lumen_jupyter": True}},
        "LumenJupyter": {
            "username": "ada",
            "display_name": "Ada Lovelace",
            "email": "ada@example.org",
            "database_url": f"sqlite:///{tmp_path / 'lumen-widgets.db'}",
        },
    }


@pytest.fixture
def source(
    jp_serverapp: Any, http_server: Any, http_server_port: Any, jp_base_url: str
) -> RestSource:
    """The REST API of the test server (listening on ``http_server_port``) with its token."""
    port = http_server_port[0].getsockname()[1]
    token = jp_serverapp.identity_provider.token
    return RestSource(f"http://127.0.0.1:{port}{jp_base_url}", token)


async def run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, *args, **kwargs)


@dataclass
class Sent:
    msg_type: str
    data: Any
    buffers: list[bytes] = field(default_factory=list)

    def text(self) -> str:
        return json.dumps(self.data, default=str)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[Sent]:
    """Every message the widgets send to the front end (comm open, state updates, custom)."""
    log: list[Sent] = []

    def publish(
        self: Any,
        msg_type: str,
        data: Any = None,
        metadata: Any = None,
        buffers: Any = None,
        **keys: Any,
    ) -> None:
        log.append(Sent(msg_type, data, [bytes(b) for b in (buffers or [])]))

    monkeypatch.setattr(comm.DummyComm, "publish_msg", publish)
    return log


def replies(log: list[Sent], request_id: str) -> list[Sent]:
    return [
        m
        for m in log
        if isinstance(m.data, dict)
        and m.data.get("method") == "custom"
        and m.data["content"].get("request_id") == request_id
    ]


async def intent(
    widget: Any, log: list[Sent], method: str, **args: Any
) -> tuple[dict[str, Any], list[bytes]]:
    """Send an intent as the front end does and return the widget's reply (content, buffers)."""
    request_id = uuid.uuid4().hex
    content = {"type": "intent", "method": method, "args": args, "request_id": request_id}
    message = {"content": {"data": {"method": "custom", "content": content}}, "buffers": []}
    await run(widget._handle_msg, message)
    found = replies(log, request_id)
    assert len(found) == 1, f"expected one reply to {method}, got {len(found)}"
    return found[0].data["content"], found[0].buffers


@pytest.fixture(autouse=True)
def close_widgets() -> Iterator[None]:
    yield
    for widget in hooks.live_widgets():
        close = getattr(widget, "close", None)
        if close is not None:
            close()
