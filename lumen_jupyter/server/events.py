"""Server-sent events for the front end: the pool moves, a call was refused.

The Lab status bar and panels subscribe to ``GET lumen/api/events`` instead of
polling.  The gateway publishes ``usage`` after every settled call and
``refused`` when a call is refused for missing consent or exhausted coins; the
stream also re-reads the pool every few seconds, so grants made with
``jupyter lumen`` and refills landing show up without any call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from tornado.iostream import StreamClosedError

from .auth import LumenHandler, lumen_endpoint

RECHECK_SECONDS = 5.0
QUEUE_LIMIT = 64


class EventHub:
    """Fan-out of small events to every open stream of this server."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[tuple[str, dict[str, Any]]]] = set()

    @property
    def subscribers(self) -> int:
        return len(self._queues)

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        """Queue an event for every subscriber; a subscriber too slow to keep up drops it."""
        for queue in list(self._queues):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait((kind, data))

    async def subscribe(self, timeout: float) -> AsyncIterator[tuple[str, dict[str, Any]] | None]:
        """Yield events as they come, and ``None`` after ``timeout`` seconds of quiet."""
        queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(QUEUE_LIMIT)
        self._queues.add(queue)
        try:
            while True:
                try:
                    yield await asyncio.wait_for(queue.get(), timeout)
                except asyncio.TimeoutError:
                    yield None
        finally:
            self._queues.discard(queue)


class EventsHandler(LumenHandler):
    """``GET lumen/api/events``: ``pool`` whenever the balance changes, ``refused`` at once."""

    _closed = False

    def on_connection_close(self) -> None:
        self._closed = True

    @lumen_endpoint("read")
    async def get(self) -> None:
        hub: EventHub = self.settings["lumen_events"]
        recheck = float(self.settings.get("lumen_events_recheck", RECHECK_SECONDS))
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        last: dict[str, Any] | None = None
        try:
            last = await self._send_pool(last)
            async for item in hub.subscribe(recheck):
                if self._closed:
                    break
                if item is not None and item[0] == "refused":
                    await self._send("refused", item[1])
                last = await self._send_pool(last)
        except StreamClosedError:
            pass

    async def _send_pool(self, last: dict[str, Any] | None) -> dict[str, Any]:
        pool = await self.run(self.service.pool_state, self.identity)
        if pool != last:
            await self._send("pool", pool)
        return pool

    async def _send(self, kind: str, data: dict[str, Any]) -> None:
        self.write(f"event: {kind}\ndata: {json.dumps(data)}\n\n")
        await self.flush()
