"""Server-sent events for the front end: the pool moves, a call was refused.

The Lab status bar and panels subscribe to ``GET lumen/api/events`` instead of
polling.  The gateway publishes ``usage`` after every settled call and
``refused`` when a call is refused for missing consent or exhausted coins; the
pool is also re-read every few seconds, so grants made with ``jupyter lumen``
and refills landing show up without any call.

The pool is read once per change for *all* the streams of a user, not once per
stream: each user with open streams has one watcher that marks itself dirty on
``usage``, waits a moment so a burst of calls costs one read, reads the pool off
the event loop and hands the snapshot to every stream that has not seen it.
Three hundred open streams and a hundred calls a second would otherwise be
thirty thousand pool reads a second, and the REST API would wait behind them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from tornado.iostream import StreamClosedError

from ..core.accounts import Identity
from ..core.wire import Pool
from .base import LumenHandler, lumen_endpoint

log = logging.getLogger("lumen_jupyter.events")

RECHECK_SECONDS = 5.0
COALESCE_SECONDS = 0.25
"""A burst of calls within this time costs one read of the pool (and one event per
stream): the coin meter still moves within a second."""
QUEUE_LIMIT = 64

Event = str
"""One server-sent event, formatted once for all the streams it goes to."""
PoolReader = Callable[[Identity], Awaitable[Pool]]


class _PoolWatch:
    """The pool of one user, read once per change and shared by that user's streams."""

    def __init__(self, identity: Identity, read: PoolReader, recheck: float) -> None:
        self.identity = identity
        self.read = read
        self.recheck = recheck
        self.queues: set[asyncio.Queue[Event]] = set()
        self.snapshot: Pool | None = None
        self.frame: Event | None = None
        self.dirty = asyncio.Event()
        self.task = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.dirty.wait(), self.recheck)
                await asyncio.sleep(COALESCE_SECONDS)
            self.dirty.clear()
            try:
                pool = await self.read(self.identity)
            except Exception:  # the store may be away for a moment: try at the next change
                log.warning("lumen: could not read the pool for the event stream", exc_info=True)
                continue
            if pool != self.snapshot:
                self.snapshot, self.frame = pool, frame("pool", pool)
                for queue in list(self.queues):
                    _offer(queue, self.frame)


def frame(kind: str, data: Mapping[str, Any]) -> Event:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n"


def _offer(queue: asyncio.Queue[Event], event: Event) -> None:
    """Queue an event; a subscriber too slow to keep up drops it (the next pool
    snapshot supersedes a missed one)."""
    with contextlib.suppress(asyncio.QueueFull):
        queue.put_nowait(event)


class EventHub:
    """Fan-out of small events to every open stream of this server."""

    def __init__(self, read_pool: PoolReader, *, recheck: float = RECHECK_SECONDS) -> None:
        self.read_pool = read_pool
        self.recheck = recheck
        self._watches: dict[str, _PoolWatch] = {}

    @property
    def subscribers(self) -> int:
        return sum(len(w.queues) for w in self._watches.values())

    def pool_changed(self, account: int, account_of: Callable[[str], int | None]) -> None:
        """Another process changed the pool of ``account`` (a PostgreSQL notification):
        the streams of its user read it again. ``account_of`` maps a watched user to
        their account id when it is known without database work."""
        for name, watch in self._watches.items():
            if account_of(name) == account:
                watch.dirty.set()

    def publish(self, kind: str, data: Mapping[str, Any], username: str | None = None) -> None:
        """``usage``: the pool of ``username`` (everyone's when ``None``) may have moved;
        anything else goes to the streams as it is."""
        watches = (
            list(self._watches.values())
            if username is None
            else [w for w in (self._watches.get(username),) if w is not None]
        )
        message = None if kind == "usage" else frame(kind, data)
        for watch in watches:
            if message is None:
                watch.dirty.set()
            else:
                for queue in list(watch.queues):
                    _offer(queue, message)

    async def subscribe(self, identity: Identity, timeout: float) -> AsyncIterator[Event | None]:
        """The current pool at once, then events as they come, and ``None`` after
        ``timeout`` seconds of quiet (so the caller can notice a closed connection)."""
        watch = self._watches.get(identity.username)
        if watch is None:
            watch = self._watches[identity.username] = _PoolWatch(
                identity, self.read_pool, self.recheck
            )
        queue: asyncio.Queue[Event] = asyncio.Queue(QUEUE_LIMIT)
        watch.queues.add(queue)
        try:
            if watch.frame is not None:
                yield watch.frame
            else:
                watch.dirty.set()
            while True:
                try:
                    yield await asyncio.wait_for(queue.get(), timeout)
                except asyncio.TimeoutError:
                    yield None
        finally:
            watch.queues.discard(queue)
            if not watch.queues and self._watches.get(identity.username) is watch:
                watch.task.cancel()
                del self._watches[identity.username]

    def close(self) -> None:
        for watch in self._watches.values():
            watch.task.cancel()
        self._watches.clear()


class EventsHandler(LumenHandler):
    """``GET lumen/api/events``: ``pool`` whenever the balance changes, ``refused`` at once."""

    _closed = False

    def on_connection_close(self) -> None:
        self._closed = True

    @lumen_endpoint("read")
    async def get(self) -> None:
        hub: EventHub = self.settings["lumen_events"]
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        await self.flush()  # the headers now: the client knows it is subscribed
        try:
            async for item in hub.subscribe(self.identity, hub.recheck):
                if self._closed:
                    break
                if item is not None:
                    self.write(item)
                    await self.flush()
        except StreamClosedError:
            pass
