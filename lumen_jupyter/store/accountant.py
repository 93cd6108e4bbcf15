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

Several processes may write the same books (the service's workers): a batch runs
its writes in account order, so two batches lock the rows of their accounts in
the same order and cannot deadlock each other.

Nothing of it runs on the event loop: a commit is file or network I/O whose time
the server does not control (a SQLite file on a busy or network disk, a
PostgreSQL round trip).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection

from .engine import Store
from .pipeline import pipelined

T = TypeVar("T")

log = logging.getLogger("lumen_jupyter.accountant")

MAX_BATCH = 64
"""A batch takes no more waiting writes once it holds this many (one turn of the event
loop's writes always stay together), so that a commit never waits on too much work."""


@dataclass
class _Work(Generic[T]):
    write: Callable[[Connection], T]
    future: asyncio.Future[T]
    order: int = 0
    outcome: tuple[bool, Any] = field(default=(False, None))


_STOP = object()


_CONNECTION_GONE = ("08", "57P01", "57P02", "57P03")
"""SQLSTATEs of a connection that is gone: connection exceptions, and the server
shutting it down (an administrator, a crash, a restart)."""


def _is_lost(conn: Connection, error: BaseException) -> bool:
    """Whether a batch failed because its connection is gone, rather than a statement
    failing on a good one.  The driver may not know yet: a terminated backend's last
    message can be read before the socket's end, so the error itself is asked too."""
    if conn.invalidated:
        return True
    driver = conn.connection.dbapi_connection if not conn.closed else None
    if driver is None or getattr(driver, "closed", False) or getattr(driver, "broken", False):
        return True
    return any(
        getattr(cause, "connection_invalidated", False)
        or str(getattr(cause, "sqlstate", None) or "").startswith(_CONNECTION_GONE)
        for cause in _causes(error)
    )


def _causes(error: BaseException) -> Iterator[BaseException]:
    """``error``, the driver's error it wraps, and the errors it was raised from or
    during (each once)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    while todo:
        cause = todo.pop()
        if cause is None or id(cause) in seen:
            continue
        seen.add(id(cause))
        yield cause
        orig = getattr(cause, "orig", None)
        todo += [
            cause.__cause__,
            cause.__context__,
            orig if isinstance(orig, BaseException) else None,
        ]


def _by_account(work: _Work[Any]) -> int:
    return work.order


class Accountant:
    """Runs ``write(conn)`` callables on one thread, many per transaction."""

    def __init__(self, store: Store, *, name: str = "lumen-accountant") -> None:
        self.store = store
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._started = False
        self._closed = False
        self._conn: Connection | None = None  # the thread's, between batches
        self._committing = False
        self._lost = False  # the last batch failed because its connection was gone
        self._outbox: list[_Work[Any]] = []  # writes of this turn of the loop, sent together
        self.batches = 0
        self.writes = 0

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    async def run(self, write: Callable[[Connection], T], *, order: int = 0) -> T:
        """Run ``write`` in a write transaction shared with other waiting writes;
        ``order`` (the account it writes to) places it in the batch."""
        if self._closed:
            raise RuntimeError("the accountant is closed")
        self.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._outbox.append(_Work(write, future, order))
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
            if not self._thread.is_alive():
                self._release_connection()

    # -- the thread -----------------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
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
                batch.extend(more)
            batch.sort(key=_by_account)  # stable: one account's writes keep their order
            self._write(batch)
            self._hand_back(batch)
            if stop:
                return

    def _write(self, batch: list[_Work[Any]]) -> None:
        self.batches += 1
        self.writes += len(batch)
        for fresh in (False, True):
            try:
                with self._books() as conn, pipelined(conn):
                    for work in batch:
                        work.outcome = (True, work.write(conn))
                return
            except Exception as error:  # handed to the caller
                failure = error
                if not fresh and self._lost and not self._committing:
                    # The kept connection had died (a database restart, an idle timeout):
                    # nothing of the batch was committed, so it runs again on a new one.
                    continue
            break
        if len(batch) == 1:
            batch[0].outcome = (False, failure)
            return
        for work in batch:  # rolled back: again one at a time, so a failure stays its own
            try:
                with self.store.write() as conn:
                    work.outcome = (True, work.write(conn))
            except Exception as error:  # handed to the caller
                work.outcome = (False, error)

    @contextmanager
    def _books(self) -> Iterator[Connection]:
        """A write transaction on the accountant's own connection, kept between batches:
        taking one from the pool for every batch (and, on PostgreSQL, pinging it first: a
        round trip) cost more than the SQL of a small batch.  After any failure the
        connection is given back and the next batch takes a fresh one from the pool."""
        self._committing = self._lost = False
        conn = self._conn
        if conn is None:
            conn = self._conn = self.store.write_connection()
        try:
            with conn.begin():
                yield conn
                self._committing = True  # a failure from here on may have committed
        except BaseException as error:
            self._lost = _is_lost(conn, error)
            self._release_connection(invalidate=self._lost)
            raise

    def _release_connection(self, *, invalidate: bool = False) -> None:
        """Give the kept connection back to the pool - or, if it is gone, have the pool
        drop it without trying to roll it back first."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # a broken connection: the pool drops it
                if invalidate and not conn.closed:
                    conn.invalidate()
                conn.close()

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
        for work in batch:
            if work.future.done():
                continue
            succeeded, value = work.outcome
            if succeeded:
                work.future.set_result(value)
            else:
                work.future.set_exception(value)
