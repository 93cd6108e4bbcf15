"""PostgreSQL pipeline mode for the hot statements of a transaction.

A model call's books are ~17 small statements in two transactions, and on
PostgreSQL each statement was a round trip: sent, then waited for, before the
next one was even sent.  Most of them are writes whose answer nobody reads (the
ledger row, the usage counters), so waiting for each cost a wake-up of the
database and of this process for nothing - ~20 round trips per call, ~60 µs of
CPU and ~100 µs of time each.

Inside :func:`pipelined`, psycopg's pipeline mode sends hot statements
(:mod:`.prepared`) without waiting; an answer is waited for only when it is
read - a ``rowcount``, a row - and then every statement sent before it is
answered in the same round trip.  What is written, and in which order, does not
change; an error still fails the transaction, at the latest when the block ends.

A statement run through SQLAlchemy (``Connection.execute``) reads its cursor's
description as soon as it is sent, which pipeline mode leaves empty, so the
pipeline is ended before such a statement runs (an engine event) and the rest
of the block runs as usual.  On SQLite, and where libpq has no pipeline mode,
:func:`pipelined` does nothing.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from sqlalchemy import Connection, Engine, event


class Pipeline:
    """The pipeline of one transaction on one psycopg connection."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver
        self._exit: contextlib.ExitStack | None = contextlib.ExitStack()
        self._pipeline = self._exit.enter_context(driver.pipeline())
        self._sent = 0
        self._answered = 0

    @property
    def active(self) -> bool:
        return self._exit is not None

    def sent(self) -> int:
        """Count a statement sent; its number, for :meth:`wait_for`."""
        self._sent += 1
        return self._sent

    def wait_for(self, number: int) -> None:
        """Wait for the answer of statement ``number`` - and of everything sent so far,
        in the same round trip; nothing, if it is in already."""
        if self._exit is not None and number > self._answered:
            self._pipeline.sync()
            self._answered = self._sent

    def end(self, *failure: Any) -> None:
        """Leave pipeline mode: everything sent is answered (the first error raised,
        unless the block is already failing with ``failure``)."""
        stack, self._exit = self._exit, None
        if stack is not None:
            stack.__exit__(*(failure or (None, None, None)))


_current: ContextVar[Pipeline | None] = ContextVar("lumen_pipeline", default=None)


def current(driver: Any) -> Pipeline | None:
    """The active pipeline of ``driver`` (a DB-API connection), if any."""
    pipeline = _current.get()
    if pipeline is not None and pipeline.active and pipeline.driver is driver:
        return pipeline
    return None


@contextlib.contextmanager
def pipelined(conn: Connection) -> Iterator[None]:
    """Run the block's hot statements in pipeline mode (PostgreSQL; elsewhere a no-op)."""
    if conn.dialect.name != "postgresql" or _current.get() is not None or not _supported():
        yield
        return
    pipeline = Pipeline(conn.connection.dbapi_connection)
    token = _current.set(pipeline)
    try:
        yield
    except BaseException:
        _current.reset(token)
        pipeline.end(*sys.exc_info())
        raise
    _current.reset(token)
    pipeline.end()


def end_pipeline_before_sqlalchemy(engine: Engine) -> None:
    """Leave pipeline mode before a statement that SQLAlchemy runs (see the module)."""

    @event.listens_for(engine, "before_cursor_execute")
    def _leave(conn: Connection, *_args: Any) -> None:
        pipeline = _current.get()
        if pipeline is not None and pipeline.driver is conn.connection.dbapi_connection:
            pipeline.end()


def _supported() -> bool:
    import psycopg

    return bool(psycopg.Pipeline.is_supported())


__all__ = ["Pipeline", "current", "end_pipeline_before_sqlalchemy", "pipelined"]
