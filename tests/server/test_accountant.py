"""The accountant batches the writes of concurrent calls, off the event loop, and keeps
each one's outcome."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import datetime, timezone

import psycopg
import pytest
from sqlalchemy import Connection, func, select
from sqlalchemy.exc import OperationalError

from lumen_jupyter.store import Store
from lumen_jupyter.store.accountant import Accountant, _is_lost
from lumen_jupyter.store.notify import conninfo_from_url
from lumen_jupyter.store.schema import accounts

WHEN = datetime(2026, 3, 4, tzinfo=timezone.utc)


@pytest.fixture
def accountant(store: Store) -> Iterator[Accountant]:
    books = Accountant(store)
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


async def test_writes_never_run_on_the_event_loop(accountant: Accountant) -> None:
    assert await accountant.run(where) == "lumen-accountant"
    assert await accountant.run(add_account("off-loop")) > 0
    assert names(accountant.store) == ["off-loop"]


def backend_pid(conn: Connection) -> int:
    return int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())


@pytest.mark.postgres
async def test_it_keeps_its_connection_and_a_killed_one_loses_no_write(
    accountant: Accountant, store: Store
) -> None:
    if store.dialect != "postgresql":
        pytest.skip("a database connection of its own to kill: PostgreSQL")
    first = await accountant.run(backend_pid)
    assert await accountant.run(backend_pid) == first  # kept between batches
    # Killed again and again: the backend's goodbye may be read before the socket's end
    # (the driver does not know yet) or after it; either way the write runs afresh.
    for round in range(30):
        with psycopg.connect(conninfo_from_url(store.url), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (first,))
        assert await accountant.run(add_account(f"after-kill-{round:02}")) > 0
        second = await accountant.run(backend_pid)
        assert second != first
        assert await accountant.run(backend_pid) == second
        first = second
    assert names(store) == [f"after-kill-{round:02}" for round in range(30)]


def test_a_connection_is_lost_when_its_error_says_so_before_its_driver_does(store: Store) -> None:
    """What a terminated backend looks like when its last message is read first: the
    driver's connection is not yet broken, the error chain says why."""
    goodbye = psycopg.errors.AdminShutdown("terminating connection due to administrator command")
    try:
        try:
            raise goodbye
        except psycopg.Error:
            raise psycopg.OperationalError("cannot exit pipeline mode while busy") from None
    except psycopg.Error as during_goodbye:
        wrapped = OperationalError("INSERT ...", {}, during_goodbye)
    with store.write_connection() as conn:
        assert not _is_lost(conn, wrapped.__class__("SELECT 1", {}, ValueError("a bad value")))
        assert not _is_lost(conn, psycopg.errors.UniqueViolation("duplicate key"))
        assert _is_lost(conn, wrapped)
        assert _is_lost(conn, psycopg.errors.AdminShutdown("terminating connection"))
