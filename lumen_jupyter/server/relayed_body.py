"""A request body passed on to another server as it arrives, with flow control.

The forwarder (:mod:`.forwarder`) starts its request to the lumen service as soon
as a caller's headers are in, and hands each piece of the caller's body to it as
tornado reads it: nothing waits for the whole body, and a caller that sends
faster than the service reads is slowed down (:meth:`RelayedBody.feed` waits
while more than :data:`WINDOW_BYTES` are unread) instead of filling memory.

The HTTP client may need to send the body a second time: a keep-alive connection
that the service closed just as it was reused fails before anything was answered,
and the client retries once on a new connection (see
:mod:`lumen_jupyter.gateway.http_client`).  So the pieces already sent are kept
until the service's answer begins, up to :data:`REPLAY_BYTES`; a larger body is
not kept, and cannot be sent again (:meth:`RelayedBody.open` says ``None``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

WINDOW_BYTES = 256 * 1024
"""Bytes received but not yet taken by the request before the caller is slowed down."""

REPLAY_BYTES = 1024 * 1024
"""Bytes kept so that the body can be sent again on a new connection."""


class BodyAborted(Exception):
    """The caller went away before its body was complete."""


class RelayedBody:
    """The caller's body, read by one request attempt at a time."""

    def __init__(
        self, *, window_bytes: int = WINDOW_BYTES, replay_bytes: int = REPLAY_BYTES
    ) -> None:
        self.window_bytes = window_bytes
        self.replay_bytes = replay_bytes
        self._pieces: list[bytes] = []
        self._first = 0  # the number of the piece at self._pieces[0]
        self._taken = 0  # pieces taken by the current attempt
        self._unread = 0  # bytes received and not yet taken
        self._kept = 0  # bytes of the pieces held
        self._replayable = True
        self._ended = False
        self._aborted = False
        self._answered = False
        self._discarding = False
        self._attempt = 0
        self._wake = asyncio.Event()

    def _changed(self) -> None:
        self._wake.set()
        self._wake = asyncio.Event()

    async def feed(self, piece: bytes) -> None:
        """One more piece from the caller; waits while too much is unread."""
        if not piece or self._aborted or self._discarding:
            return
        self._pieces.append(piece)
        self._unread += len(piece)
        self._kept += len(piece)
        if self._kept > self.replay_bytes:
            self._replayable = False
            self._drop_taken()
        self._changed()
        while self._unread > self.window_bytes and not (self._answered or self._aborted):
            await self._wake.wait()
        if self._answered and self._unread > self.window_bytes:
            # The service has answered and stopped reading (it refused the body
            # early): what it does not read it does not need, and a request that
            # would go on reading fails rather than send a body with a gap.
            self._discarding = True
            self._pieces.clear()
            self._first = self._taken
            self._unread = self._kept = 0
            self._changed()

    @property
    def ended(self) -> bool:
        """Whether the caller's whole body has arrived."""
        return self._ended

    def end(self) -> None:
        """The caller's body is complete."""
        self._ended = True
        self._changed()

    def abort(self) -> None:
        """The caller went away: the request's body fails, so it is not sent complete."""
        self._aborted = True
        self._changed()

    def answered(self) -> None:
        """The service's answer has begun: the body is never sent again."""
        self._answered = True
        self._replayable = False
        self._drop_taken()
        self._changed()

    def open(self) -> AsyncIterator[bytes] | None:
        """The body from its start for a new attempt, or ``None`` if it was not kept."""
        if self._attempt and not self._replayable:
            return None
        self._attempt += 1
        self._taken = 0
        self._unread = sum(len(piece) for piece in self._pieces)
        return self._read(self._attempt)

    async def _read(self, attempt: int) -> AsyncIterator[bytes]:
        # An empty piece first: the HTTP client sends a request's head together with
        # the first piece of its body, and the service must see the head at once (to
        # refuse a body it will not take before the caller has sent it).
        yield b""
        while attempt == self._attempt:
            if self._aborted or self._discarding:
                raise BodyAborted("the body was not sent complete")
            index = self._taken - self._first
            if index < len(self._pieces):
                piece = self._pieces[index]
                self._taken += 1
                self._unread -= len(piece)
                if not self._replayable:
                    self._drop_taken()
                self._changed()
                yield piece
            elif self._ended:
                return
            else:
                await self._wake.wait()

    def _drop_taken(self) -> None:
        drop = self._taken - self._first
        if drop > 0:
            self._kept -= sum(len(piece) for piece in self._pieces[:drop])
            del self._pieces[:drop]
            self._first = self._taken
