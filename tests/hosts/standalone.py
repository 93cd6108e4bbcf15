"""The standalone service (``LumenServe``) on a free port of this process's event loop.

Shared by the tests of both hosts and the service's hub-mode tests: the same
``start_server`` that a worker runs, without forking, so a test can reach the
runtime (the store, the service) while it talks HTTP to the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

from lumen_jupyter.server.runtime import LumenRuntime
from lumen_jupyter.service.app import LumenServe


async def _start(app: LumenServe) -> tuple[int, LumenRuntime, Any]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    runtime, server = app.start_server([sock])
    return sock.getsockname()[1], runtime, server


async def _stop(app: LumenServe, runtime: LumenRuntime, server: Any) -> None:
    server.stop()
    await server.close_all_connections()
    await runtime.close()
    if app.hub is not None:
        await app.hub.close()


@contextlib.contextmanager
def serving(app: LumenServe, loop: asyncio.AbstractEventLoop) -> Iterator[tuple[int, LumenRuntime]]:
    """``app`` serving on a free loopback port: ``(port, runtime)``; stopped on exit
    (for fixtures, outside the running loop)."""
    port, runtime, server = loop.run_until_complete(_start(app))
    try:
        yield port, runtime
    finally:
        loop.run_until_complete(_stop(app, runtime, server))


@contextlib.asynccontextmanager
async def served(app: LumenServe) -> AsyncIterator[tuple[int, LumenRuntime]]:
    """:func:`serving`, inside a running test."""
    port, runtime, server = await _start(app)
    try:
        yield port, runtime
    finally:
        await _stop(app, runtime, server)
