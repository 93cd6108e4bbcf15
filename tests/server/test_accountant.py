"""The accountant batches the writes of concurrent calls and keeps each one's outcome;
on SQLite it writes at once when nothing waits and nobody else holds the database."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Connection, func, select

from lumen_jupyter.server import accountant as accountant_module
from lumen_jupyter.server.accountant import Accountant
from lumen_jupyter.store import Store
from lumen_jupyter.store.schema import accounts

WHEN = datetime(2026, 3, 4, tzinfo=UTC)


@pytest.fixture
def accountant(store: Store) -> Iterator[Accountant]:
    """Always through the thread: the batching tests below need it."""
    books = Accountant(store, inline=False)
    yield books
    books.close()


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'lumen.db'}")
    store.migrate()
    yield store
    store.dispose()


@pytest.fixture
def inline(sqlite_file: Store) -> Iterator[Accountant]:
    books = Accountant(sqlite_file)
    assert books.inline
    yield books
    books.close()


def where(conn: Connection) -> str:
    return threading.current_thread().name


def add_account(name: str) -> object:
    def write(conn: Connection) -> int:
        inserted = conn.execute(
            accounts.insert().values(username=name, created_at=WHEN).returning(accounts.c.id)
        )
        return int(inserted.scalar_one())

    return write


def names(store: Store) -> list[str]:
    with store.read() as conn:
        return sorted(conn.execute(select(accounts.c.username)).scalars())


async def test_waiting_writes_share_a_transaction(accountant: Accountant, store: Store) -> None:
    gate = threading.Event()

    def hold(conn: Connection) -> str:
        gate.wait(10)  # keeps the thread busy while the others queue up
        return "held"

    first = asyncio.ensure_future(accountant.run(hold))
    await asyncio.sleep(0.05)
    others = [asyncio.ensure_future(accountant.run(add_account(f"u{i:02}"))) for i in range(20)]
    await asyncio.sleep(0.05)
    gate.set()
    assert await first == "held"
    ids = await asyncio.gather(*others)
    assert len(set(ids)) == 20
    assert names(store) == [f"u{i:02}" for i in range(20)]
    assert accountant.writes == 21
    assert accountant.batches == 2  # the held write, then the twenty queued behind it


async def test_a_failing_write_fails_alone(accountant: Accountant, store: Store) -> None:
    gate = threading.Event()

    def hold(conn: Connection) -> None:
        gate.wait(10)

    def half_done(conn: Connection) -> None:
        add_account("half")(conn)  # written, then the write fails: must not stay
        raise ValueError("no such model")

    holder = asyncio.ensure_future(accountant.run(hold))
    await asyncio.sleep(0.05)
    before = asyncio.ensure_future(accountant.run(add_account("before")))
    failing = asyncio.ensure_future(accountant.run(half_done))
    after = asyncio.ensure_future(accountant.run(add_account("after")))
    await asyncio.sleep(0.05)
    gate.set()
    await holder
    assert isinstance(await before, int) and isinstance(await after, int)
    with pytest.raises(ValueError, match="no such model"):
        await failing
    assert names(store) == ["after", "before"]


async def test_a_single_failing_write_is_not_run_twice(
    accountant: Accountant, store: Store
) -> None:
    runs = []

    def failing(conn: Connection) -> None:
        runs.append(1)
        raise LookupError("refused")

    with pytest.raises(LookupError):
        await accountant.run(failing)
    assert runs == [1]


async def test_close_finishes_queued_writes_and_refuses_new_ones(
    accountant: Accountant, store: Store
) -> None:
    waiting = [asyncio.ensure_future(accountant.run(add_account(f"c{i}"))) for i in range(5)]
    await asyncio.sleep(0)  # queued
    await asyncio.get_running_loop().run_in_executor(None, accountant.close)
    await asyncio.gather(*waiting)
    assert names(store) == [f"c{i}" for i in range(5)]
    with pytest.raises(RuntimeError, match="closed"):
        await accountant.run(add_account("late"))
    with store.read() as conn:
        assert conn.execute(select(func.count()).select_from(accounts)).scalar_one() == 5


# -- writing at once on SQLite ---------------------------------------------------------------


async def test_an_idle_accountant_writes_on_the_event_loop(inline: Accountant) -> None:
    assert await inline.run(where) == threading.current_thread().name
    assert await inline.run(add_account("now")) > 0
    assert (inline.inline_writes, inline.batches) == (2, 0)
    assert names(inline.store) == ["now"]


async def test_a_busy_caller_asks_for_the_batch(inline: Accountant) -> None:
    assert await inline.run(where, at_once=False) == "lumen-accountant"
    assert (inline.inline_writes, inline.batches) == (0, 1)


async def test_a_locked_database_sends_the_write_to_the_thread(inline: Accountant) -> None:
    database = inline.store.engine.url.database
    assert database is not None
    other = sqlite3.connect(database, isolation_level=None)  # another process's writer
    other.execute("BEGIN IMMEDIATE")
    try:
        first = asyncio.ensure_future(inline.run(where))
        await asyncio.sleep(0.1)
        assert not first.done()  # queued, the thread waits for the lock: the loop does not
        second = asyncio.ensure_future(inline.run(add_account("queued")))
        await asyncio.sleep(0)
    finally:
        other.execute("COMMIT")
        other.close()
    assert await first == "lumen-accountant"
    assert await second > 0  # queued behind the first, not written on the loop
    assert inline.inline_writes == 0 and inline.writes == 2
    assert await inline.run(where) == threading.current_thread().name  # idle again: at once


async def test_errors_of_a_write_made_at_once_reach_the_caller(inline: Accountant) -> None:
    def half_done(conn: Connection) -> None:
        add_account("half")(conn)
        raise ValueError("no such model")

    with pytest.raises(ValueError, match="no such model"):
        await inline.run(half_done)
    assert names(inline.store) == []  # rolled back


async def test_the_thread_checkpoints_the_log_of_writes_made_at_once(
    inline: Accountant, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(accountant_module, "CHECKPOINT_EVERY", 5)
    for i in range(10):
        await inline.run(add_account(f"w{i}"))
    for _ in range(100):
        if inline.checkpoints == 2:
            break
        await asyncio.sleep(0.01)
    assert inline.checkpoints == 2
    raw = inline.store.engine.raw_connection()
    try:  # nothing left to copy: the log was checkpointed up to its end
        busy, frames, copied = raw.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    finally:
        raw.close()
    assert busy == 0 and frames == copied


def test_the_connection_that_never_waits_is_not_shared(inline: Accountant) -> None:
    asyncio.run(inline.run(where))
    inline.close()
    with inline.store.write() as conn:  # a pooled connection still waits for locks
        timeout = conn.exec_driver_sql("PRAGMA busy_timeout").scalar()
        autocheckpoint = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
    assert (timeout, autocheckpoint) == (30_000, 1000)


def test_postgresql_and_memory_always_use_the_thread(store: Store) -> None:
    assert Accountant(store).inline is store.sqlite_file
    memory = Store("sqlite://")
    assert Accountant(memory).inline is False
    memory.dispose()
