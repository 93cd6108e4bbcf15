"""Pool changes notified across processes: the trigger, and the listener that hears it.

The writes come from other connections (a ``Store`` of its own, or plain psycopg), as
another worker or ``jupyter lumen`` would make them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone

import psycopg
import pytest
from sqlalchemy import text, update

from lumen_jupyter.store import Store, sqlite_url
from lumen_jupyter.store.notify import (
    PoolListener,
    conninfo_from_url,
    defer_pool_notifications,
    describe_url,
    install_pool_trigger,
    notify_pool_changes,
)
from lumen_jupyter.store.schema import accounts, balances, user_pools
from tests import pg

NOW = datetime(2026, 3, 4, 12, 0, tzinfo=timezone.utc)


def test_the_url_becomes_a_conninfo_and_is_logged_without_its_password() -> None:
    url = "postgresql+psycopg://lumen:s3cret%40pw@db.example:6543/books?sslmode=require"
    info = psycopg.conninfo.conninfo_to_dict(conninfo_from_url(url, application_name="x"))
    assert info == {
        "host": "db.example",
        "port": "6543",
        "user": "lumen",
        "password": "s3cret@pw",
        "dbname": "books",
        "sslmode": "require",
        "application_name": "x",
    }
    assert "s3cret" not in describe_url(url)
    sockets = conninfo_from_url("postgresql://lumen@/books?host=/run/postgresql")
    assert psycopg.conninfo.conninfo_to_dict(sockets)["host"] == "/run/postgresql"
    with pytest.raises(ValueError, match="PostgreSQL only"):
        conninfo_from_url("sqlite:///books.db")


def test_the_trigger_migration_does_nothing_on_sqlite(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    store = Store(sqlite_url(tmp_path / "lumen.sqlite"))
    try:
        store.migrate()
        with store.write() as conn:
            install_pool_trigger(conn)
            found = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))
            assert found.all() == []
    finally:
        store.dispose()


# -- PostgreSQL ---------------------------------------------------------------------------


@pytest.fixture
def pg_url(postgres_server: pg.PostgresServer) -> Iterator[str]:
    with postgres_server.database(migrated=True) as url:
        yield url


@pytest.fixture
def writer(pg_url: str) -> Iterator[Store]:
    """Another process's store: two accounts, ``1`` with a balance, ``2`` without."""
    store = Store(pg_url)
    with store.write() as conn:
        for account_id in (1, 2):
            conn.execute(
                accounts.insert().values(id=account_id, username=f"u{account_id}", created_at=NOW)
            )
        conn.execute(
            balances.insert().values(account_id=1, balance_micro=5_000_000, last_refill_at=NOW)
        )
    try:
        yield store
    finally:
        store.dispose()


class Heard:
    """The account ids a listener hands over, to be awaited."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.reconnects = 0
        self._changed = asyncio.Event()

    def __call__(self, account_id: int) -> None:
        self.ids.append(account_id)
        self._changed.set()

    def reconnected(self) -> None:
        self.reconnects += 1

    async def after(self, seen: int, timeout: float) -> int:
        """The first id heard after the first ``seen``, waiting at most ``timeout`` seconds."""
        while len(self.ids) == seen:
            self._changed.clear()
            await asyncio.wait_for(self._changed.wait(), timeout)
        return self.ids[seen]


def set_balance(store: Store, account_id: int, micro: int) -> None:
    with store.write() as conn:
        conn.execute(
            update(balances).where(balances.c.account_id == account_id).values(balance_micro=micro)
        )


async def timed(write: Callable[[], None], heard: Heard, timeout: float = 1.0) -> tuple[int, float]:
    """Run ``write`` in a thread (another connection); the id heard and the seconds it took."""
    seen = len(heard.ids)
    started = time.perf_counter()
    await asyncio.to_thread(write)
    account_id = await heard.after(seen, timeout)
    return account_id, time.perf_counter() - started


@pytest.mark.postgres
@pytest.mark.asyncio
async def test_a_balance_changed_elsewhere_reaches_the_listener(pg_url: str, writer: Store) -> None:
    heard = Heard()
    listener = PoolListener(pg_url, heard, ping_interval=0.05)  # pings between the writes
    listener.start()
    try:
        await listener.wait_listening(5)
        account_id, took = await timed(lambda: set_balance(writer, 1, 4_000_000), heard)
        assert account_id == 1 and took < 1.0

        def new_balance() -> None:
            with writer.write() as conn:
                conn.execute(
                    balances.insert().values(account_id=2, balance_micro=7, last_refill_at=NOW)
                )

        assert (await timed(new_balance, heard))[0] == 2

        def unchanged_then_changed() -> None:
            # delivered in commit order: hearing 2 and nothing before it means the
            # update that left account 1's pool as it was notified nothing
            with writer.write() as conn:
                conn.execute(
                    update(balances)
                    .where(balances.c.account_id == 1)
                    .values(balance_micro=balances.c.balance_micro)
                )
            set_balance(writer, 2, 8)

        seen = len(heard.ids)
        assert (await timed(unchanged_then_changed, heard))[0] == 2
        assert heard.ids[seen:] == [2]

        def rolled_back_then_changed() -> None:
            with writer.engine.connect() as conn:
                conn.execute(update(balances).values(balance_micro=0))
                conn.rollback()
            set_balance(writer, 1, 3)

        seen = len(heard.ids)
        assert (await timed(rolled_back_then_changed, heard))[0] == 1
        assert heard.ids[seen:] == [1]

        def own_pool_set() -> None:
            with writer.write() as conn:
                conn.execute(
                    user_pools.insert().values(
                        account_id=2,
                        max_micro=10,
                        refresh_micro=0,
                        starting_micro=10,
                        updated_at=NOW,
                    )
                )

        assert (await timed(own_pool_set, heard))[0] == 2
    finally:
        await listener.stop()


@pytest.mark.postgres
@pytest.mark.asyncio
async def test_a_burst_is_heard_once_per_account(pg_url: str, writer: Store) -> None:
    heard = Heard()
    listener = PoolListener(pg_url, heard)
    listener.start()
    try:
        await listener.wait_listening(5)

        def burst() -> None:
            with writer.write() as conn:  # one transaction: one notification per account
                for amount in range(1, 50):
                    conn.execute(update(balances).values(balance_micro=amount))

        await timed(burst, heard)
        await asyncio.sleep(0.2)
        assert heard.ids == [1]
    finally:
        await listener.stop()


@pytest.mark.postgres
@pytest.mark.asyncio
async def test_changes_in_quick_succession_are_handed_over_together(
    pg_url: str, writer: Store
) -> None:
    heard = Heard()
    listener = PoolListener(pg_url, heard, coalesce=0.2)
    listener.start()
    try:
        await listener.wait_listening(5)

        def many() -> None:
            with writer.write() as conn:
                conn.execute(
                    balances.insert().values(account_id=2, balance_micro=0, last_refill_at=NOW)
                )
            for amount in range(1, 21):  # twenty transactions, alternating accounts
                set_balance(writer, 1 + amount % 2, amount)

        await timed(many, heard)
        await asyncio.sleep(0.5)  # the rest, read together after the pause
        assert set(heard.ids) == {1, 2}
        # the first at once, then each account once per pause (one read at once would
        # still hand most of them over one by one: 16 of 21 when tried)
        assert len(heard.ids) <= 7
    finally:
        await listener.stop()


@pytest.mark.postgres
@pytest.mark.asyncio
async def test_a_hot_writer_may_defer_and_notify_itself(pg_url: str, writer: Store) -> None:
    heard = Heard()
    listener = PoolListener(pg_url, heard, coalesce=0)
    listener.start()
    try:
        await listener.wait_listening(5)

        def open_second() -> None:
            with writer.write() as conn:
                conn.execute(
                    balances.insert().values(account_id=2, balance_micro=0, last_refill_at=NOW)
                )

        assert (await timed(open_second, heard))[0] == 2

        def deferred_then_told() -> None:
            with writer.write() as conn:
                defer_pool_notifications(conn)
                conn.execute(update(balances).values(balance_micro=11))  # both accounts
            with writer.write() as conn:
                notify_pool_changes(conn, [1, 1])

        seen = len(heard.ids)
        assert (await timed(deferred_then_told, heard))[0] == 1
        await asyncio.sleep(0.2)
        assert heard.ids[seen:] == [1]  # account 2 changed silently, 1 once
        # the setting lasted one transaction: the trigger speaks again
        assert (await timed(lambda: set_balance(writer, 2, 12), heard))[0] == 2
    finally:
        await listener.stop()


@pytest.mark.postgres
@pytest.mark.asyncio
async def test_it_listens_again_after_its_connection_is_killed(
    pg_url: str, writer: Store, caplog: pytest.LogCaptureFixture
) -> None:
    heard = Heard()
    listener = PoolListener(pg_url, heard, on_reconnect=heard.reconnected)
    listener.start()
    try:
        first = await listener.wait_listening(5)
        with psycopg.connect(conninfo_from_url(pg_url), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (first,))
        deadline = time.monotonic() + 5
        while listener.connections < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        second = await listener.wait_listening(5)
        assert second != first and listener.connections == 2
        assert heard.reconnects == 1  # told that changes may have been missed
        account_id, took = await timed(lambda: set_balance(writer, 1, 1), heard)
        assert account_id == 1 and took < 1.0
    finally:
        await listener.stop()
    assert any("listening for pool changes" in r.getMessage() for r in caplog.records)


@pytest.mark.postgres
@pytest.mark.asyncio
async def test_stop_leaves_no_task_and_no_connection(pg_url: str) -> None:
    listener = PoolListener(pg_url, Heard())
    listener.start()
    pid = await listener.wait_listening(5)
    await listener.stop()
    assert not listener.running
    assert [t for t in asyncio.all_tasks() if t.get_name() == "lumen-pool-listener"] == []
    with psycopg.connect(conninfo_from_url(pg_url), autocommit=True) as admin:
        deadline = time.monotonic() + 5
        while True:
            row = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,))
            left = row.fetchone()
            if left == (0,) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
    assert left == (0,)
    await listener.stop()  # stopping twice is harmless


@pytest.mark.asyncio
async def test_an_unreachable_database_is_retried_and_its_password_never_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "lumen_jupyter.notify")
    url = f"postgresql+psycopg://lumen:pw-not-to-log@127.0.0.1:{pg.free_port()}/books"
    listener = PoolListener(url, Heard(), min_backoff=0.05, max_backoff=0.1)
    listener.start()
    try:
        deadline = time.monotonic() + 5
        while len(caplog.records) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert listener.running and listener.connections == 0
        assert len(caplog.records) >= 2  # it keeps trying
    finally:
        await listener.stop()
    assert "pw-not-to-log" not in caplog.text
    assert "127.0.0.1" in caplog.text


def test_the_extension_loads_without_psycopg() -> None:
    """psycopg is the ``postgres`` extra: a plain ``pip install`` (SQLite) has none, and
    the store, the server extension and the service must import without it."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['psycopg'] = None\n"  # import psycopg raises ImportError
        "import lumen_jupyter.store, lumen_jupyter.store.notify, lumen_jupyter.server.app\n"
        "print('loaded')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and "loaded" in done.stdout, done.stderr
