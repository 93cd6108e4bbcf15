"""The accountant: one thread that writes the books of model calls, in batches.

Each model call writes twice (its reservation, then its settlement).  Handing
each write to a thread pool and giving it a transaction of its own cost more
than the SQL itself: a pool hand-off, a connection checkout, BEGIN and COMMIT,
and a wake-up of the event loop, per write.  Under load, calls arrive together;
the event loop hands the writes of one turn over together (one wake-up of the
thread), and the accountant takes every write waiting in its queue, runs them one
after the other in a single transaction, commits once, and wakes the event loop
once.

A write that raises (an unknown model, a revoked key, a database error) must
not take the others down with it: the batch is rolled back and each of its
writes is run again in a transaction of its own.  Errors raised before any
write (the access checks) are ordinary answers, so this is rare.

When nothing is queued, a hand-off to the thread is pure latency: the write
alone takes ~0.2 ms.  On a SQLite file the accountant then writes at once, on the
event loop, on a connection of its own that never waits for a lock: if any other
writer (the thread, the REST API, the admin command, another server) holds the
database, BEGIN fails at once and the write is queued as usual.  That connection
never checkpoints the write-ahead log, which can take milliseconds; the thread
does it every few hundred such writes.  PostgreSQL, where every statement is a
network round trip, always goes through the thread.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import Connection

from ..store import Store

T = TypeVar("T")

log = logging.getLogger("lumen_jupyter.accountant")

MAX_BATCH = 64
"""A batch takes no more waiting writes once it holds this many (one turn of the event
loop's writes always stay together), so that a commit never waits on too much work."""

CHECKPOINT_EVERY = 256
"""Writes made on the event loop between two checkpoints of SQLite's log by the thread."""


@dataclass
class _Work(Generic[T]):
    write: Callable[[Connection], T]
    future: asyncio.Future[T]
    outcome: tuple[bool, Any] = field(default=(False, None))


_STOP = object()
_CHECKPOINT = object()


class Accountant:
    """Runs ``write(conn)`` callables on one thread, many per transaction."""

    def __init__(
        self, store: Store, *, name: str = "lumen-accountant", inline: bool | None = None
    ) -> None:
        self.store = store
        self.inline = store.sqlite_file if inline is None else inline
        """Whether a write may run at once on the event loop when nothing is queued."""
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._started = False
        self._closed = False
        self._pending = 0  # writes queued and not yet handed back (touched on the loop only)
        self._outbox: list[_Work[Any]] = []  # writes of this turn of the loop, sent together
        self._inline_conn: Connection | None = None
        self.batches = 0
        self.writes = 0
        self.inline_writes = 0
        self.checkpoints = 0

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    async def run(self, write: Callable[[Connection], T], *, at_once: bool = True) -> T:
        """Run ``write`` in a write transaction shared with other waiting writes.

        ``at_once``: the caller would rather have this write made now, on the event
        loop, if nothing is queued (SQLite files only).  Under load a caller says no,
        so that writes are batched.
        """
        if self._closed:
            raise RuntimeError("the accountant is closed")
        if at_once and self.inline and not self._pending:
            written, value = self._write_now(write)
            if written:
                return cast(T, value)
        self.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending += 1
        self._outbox.append(_Work(write, future))
        if len(self._outbox) == 1:  # hand over once per turn of the loop, not per write
            loop.call_soon(self._send)
        return await future

    def _send(self) -> None:
        works, self._outbox = self._outbox, []
        if works:
            self._queue.put(works)

    def close(self, timeout: float = 10.0) -> None:
        """Finish the writes already queued, then stop the thread."""
        if self._closed:
            return
        self._closed = True
        if self._started:
            self._send()  # writes of this turn of the loop not handed over yet
            self._queue.put(_STOP)
            self._thread.join(timeout)
        if self._inline_conn is not None:
            self._inline_conn.invalidate()  # its settings must not go back to the pool
            self._inline_conn = None

    # -- on the event loop ----------------------------------------------------------------

    def _write_now(self, write: Callable[[Connection], T]) -> tuple[bool, Any]:
        """Run ``write`` here and now, unless another writer holds the database."""
        conn = self._inline_connection()
        try:
            transaction = conn.begin()  # BEGIN IMMEDIATE, refused at once if locked
        except sqlite3.OperationalError as error:
            if "locked" in str(error) or "busy" in str(error):
                return False, None
            raise
        with transaction:
            value = write(conn)
        self.inline_writes += 1
        if self.inline_writes % CHECKPOINT_EVERY == 0:
            self.start()
            self._queue.put(_CHECKPOINT)
        return True, value

    def _inline_connection(self) -> Connection:
        if self._inline_conn is None:
            conn = self.store.engine.connect().execution_options(lumen_write=True)
            driver = conn.connection.dbapi_connection
            assert driver is not None
            driver.execute("PRAGMA busy_timeout=0")
            driver.execute("PRAGMA wal_autocheckpoint=0")
            self._inline_conn = conn
        return self._inline_conn

    # -- the thread -----------------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            if first is _CHECKPOINT:
                self._checkpoint()
                continue
            batch: list[_Work[Any]] = list(first)
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    stop = True
                    break
                if more is _CHECKPOINT:
                    continue  # the batch's own commit may checkpoint
                batch.extend(more)
            self._write(batch)
            self._hand_back(batch)
            if stop:
                return

    def _checkpoint(self) -> None:
        """Copy SQLite's log into the database without waiting for anyone."""
        try:
            raw = self.store.engine.raw_connection()
            try:
                driver = raw.dbapi_connection
                assert driver is not None
                driver.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            finally:
                raw.close()
            self.checkpoints += 1
        except Exception:  # the next one will do
            log.warning("lumen: checkpoint of the SQLite log failed", exc_info=True)

    def _write(self, batch: list[_Work[Any]]) -> None:
        self.batches += 1
        self.writes += len(batch)
        try:
            with self.store.write() as conn:
                for work in batch:
                    work.outcome = (True, work.write(conn))
            return
        except Exception as error:  # handed to the caller
            if len(batch) == 1:
                batch[0].outcome = (False, error)
                return
        for work in batch:  # rolled back: again one at a time, so a failure stays its own
            try:
                with self.store.write() as conn:
                    work.outcome = (True, work.write(conn))
            except Exception as error:  # handed to the caller
                work.outcome = (False, error)

    def _hand_back(self, batch: list[_Work[Any]]) -> None:
        """Wake each waiting event loop once for the whole batch."""
        by_loop: dict[asyncio.AbstractEventLoop, list[_Work[Any]]] = {}
        for work in batch:
            by_loop.setdefault(work.future.get_loop(), []).append(work)
        for loop, works in by_loop.items():
            try:
                loop.call_soon_threadsafe(self._resolve, works)
            except RuntimeError:  # that loop is closed; nobody waits there any more
                log.debug("lumen: a loop closed before %d write(s) were handed back", len(works))

    def _resolve(self, batch: list[_Work[Any]]) -> None:
        self._pending -= len(batch)
        for work in batch:
            if work.future.done():
                continue
            succeeded, value = work.outcome
            if succeeded:
                work.future.set_result(value)
            else:
                work.future.set_exception(value)
