"""Pipeline mode: hot statements are sent without waiting, an answer is waited for only
when it is read, and nothing written or read differs from running them one by one."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest
from sqlalchemy import Connection, func, select

from lumen_jupyter.store import Store
from lumen_jupyter.store.accountant import Accountant
from lumen_jupyter.store.pipeline import pipelined
from lumen_jupyter.store.prepared import HotStatement
from lumen_jupyter.store.schema import accounts

WHEN = datetime(2026, 3, 4, tzinfo=timezone.utc)

ADD_ACCOUNT = HotStatement(accounts.insert().returning(accounts.c.id))
ADD_ACCOUNT_QUIETLY = HotStatement(accounts.insert())


def in_pipeline(conn: Connection) -> bool:
    driver = conn.connection.dbapi_connection
    pgconn = getattr(driver, "pgconn", None)
    return pgconn is not None and int(pgconn.pipeline_status) != 0


def count(store: Store) -> int:
    with store.read() as conn:
        return int(conn.execute(select(func.count()).select_from(accounts)).scalar_one())


def test_writes_go_unanswered_until_an_answer_is_read(store: Store) -> None:
    with store.write() as conn, pipelined(conn):
        for n in range(5):
            ADD_ACCOUNT_QUIETLY.run(conn, {"username": f"quiet{n}", "created_at": WHEN})
        assert in_pipeline(conn) == (store.dialect == "postgresql")
        read = ADD_ACCOUNT.run(conn, {"username": "read", "created_at": WHEN})
        assert read.scalar() > 0  # waited for: every write before it answered too
        again = ADD_ACCOUNT_QUIETLY.run(conn, {"username": "counted", "created_at": WHEN})
        assert again.rowcount == 1
    assert count(store) == 7


def test_a_statement_through_sqlalchemy_ends_the_pipeline_and_reads_right(store: Store) -> None:
    with store.write() as conn, pipelined(conn):
        ADD_ACCOUNT_QUIETLY.run(conn, {"username": "before", "created_at": WHEN})
        seen = conn.execute(select(accounts.c.username)).scalars().all()
        assert seen == ["before"]
        assert not in_pipeline(conn)
        ADD_ACCOUNT_QUIETLY.run(conn, {"username": "after", "created_at": WHEN})
    assert count(store) == 2


def test_an_error_in_an_unread_write_fails_the_block_and_writes_nothing(store: Store) -> None:
    refused = pytest.raises(Exception, match=r"(?i)unique|duplicate")
    with refused, store.write() as conn, pipelined(conn):
        ADD_ACCOUNT_QUIETLY.run(conn, {"username": "twice", "created_at": WHEN})
        ADD_ACCOUNT_QUIETLY.run(conn, {"username": "twice", "created_at": WHEN})
        ADD_ACCOUNT_QUIETLY.run(conn, {"username": "third", "created_at": WHEN})
    assert count(store) == 0


async def test_a_batch_with_a_failing_unread_write_keeps_the_others(store: Store) -> None:
    """The accountant runs a batch in one pipelined transaction: a write that fails
    unseen fails the batch, which then runs one write at a time - only it fails."""
    books = Accountant(store)
    try:
        with store.write() as conn:
            ADD_ACCOUNT_QUIETLY.run(conn, {"username": "taken", "created_at": WHEN})

        def add(name: str) -> object:
            def write(conn: Connection) -> None:
                ADD_ACCOUNT_QUIETLY.run(conn, {"username": name, "created_at": WHEN})

            return write

        outcomes = await asyncio.gather(
            *(books.run(add(name)) for name in ("one", "taken", "two")),  # type: ignore[arg-type]
            return_exceptions=True,
        )
        assert outcomes[0] is None and outcomes[2] is None
        assert isinstance(outcomes[1], Exception)
        assert count(store) == 3
    finally:
        books.close()


def test_answers_in_already_cost_no_more_round_trips(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    if store.dialect != "postgresql":
        pytest.skip("pipeline mode is PostgreSQL's")
    import psycopg

    syncs: list[int] = []
    sync = psycopg.Pipeline.sync

    def counted(self: psycopg.Pipeline) -> None:
        syncs.append(1)
        sync(self)

    monkeypatch.setattr(psycopg.Pipeline, "sync", counted)
    with store.write() as conn, pipelined(conn):
        first = ADD_ACCOUNT_QUIETLY.run(conn, {"username": "a", "created_at": WHEN})
        second = ADD_ACCOUNT_QUIETLY.run(conn, {"username": "b", "created_at": WHEN})
        assert first.rowcount == 1 and len(syncs) == 1
        assert second.rowcount == 1 and len(syncs) == 1  # answered by the same round trip
        third = ADD_ACCOUNT.run(conn, {"username": "c", "created_at": WHEN})
        assert third.scalar() > 0 and len(syncs) == 2
    assert count(store) == 3
