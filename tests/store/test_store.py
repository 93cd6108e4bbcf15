"""The store on SQLite and PostgreSQL: migrations, UTC times, upserts, dialect set-up."""

from __future__ import annotations

import stat
import threading
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text

from lumen_jupyter.store import Store, normalize_url, sqlite_url
from lumen_jupyter.store.engine import MIGRATIONS
from lumen_jupyter.store.schema import (
    accounts,
    balances,
    meta,
    metadata,
    usage_daily,
    usage_stats,
)

LATEST = MIGRATIONS[-1][0]


def test_migrate_creates_every_table_and_records_the_version(empty_store_url: str) -> None:
    db = Store(empty_store_url)
    try:
        with db.read() as conn:
            assert inspect(conn).get_table_names() == []
        assert db.migrate() == LATEST
        with db.read() as conn:
            names = set(inspect(conn).get_table_names())
            assert {t.name for t in metadata.sorted_tables} <= names
            versions = [int(v) for (v,) in conn.execute(select(meta.c.version))]
            applied = conn.execute(select(meta.c.applied_at)).scalars().all()
        assert versions == [m[0] for m in MIGRATIONS]
        assert applied and all(moment.tzinfo is not None for moment in applied)
    finally:
        db.dispose()


def test_migrate_twice_is_idempotent_and_keeps_data(empty_store_url: str) -> None:
    db = Store(empty_store_url)
    try:
        db.migrate()
        now = datetime(2026, 1, 1, tzinfo=timezone.utc)
        with db.write() as conn:
            conn.execute(accounts.insert().values(username="alice", created_at=now))
        with db.read() as conn:
            first = conn.execute(select(meta)).all()
        assert db.migrate() == LATEST
        again = Store(empty_store_url)  # a second server starting later
        try:
            assert again.migrate() == LATEST
        finally:
            again.dispose()
        with db.read() as conn:
            assert conn.execute(select(meta)).all() == first
            assert conn.execute(select(accounts.c.username)).scalars().all() == ["alice"]
    finally:
        db.dispose()


def test_servers_migrating_at_once(empty_store_url: str) -> None:
    """Several servers (one hub, one database) start together on a fresh database."""
    stores = [Store(empty_store_url) for _ in range(4)]
    start = threading.Barrier(len(stores))
    outcomes: list[object] = []

    def run(db: Store) -> None:
        start.wait(timeout=30)
        try:
            outcomes.append(db.migrate())
        except Exception as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=run, args=(db,)) for db in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert outcomes == [LATEST] * len(stores)
        with stores[0].read() as conn:
            versions = conn.execute(select(meta.c.version)).scalars().all()
            assert versions == [m[0] for m in MIGRATIONS]
    finally:
        for db in stores:
            db.dispose()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (
            datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc),
            datetime(2026, 5, 6, 7, 8, 9, 123456),
        ),
        (
            datetime(2026, 5, 6, 9, 8, 9, 1, tzinfo=timezone(timedelta(hours=2))),
            datetime(2026, 5, 6, 7, 8, 9, 1),
        ),
        (datetime(2026, 5, 6, 7, 8, 9), datetime(2026, 5, 6, 7, 8, 9)),  # naive is UTC
    ],
)
def test_times_come_back_aware_utc(store: Store, given: datetime, expected: datetime) -> None:
    with store.write() as conn:
        conn.execute(accounts.insert().values(username="t", created_at=given))
    with store.read() as conn:
        value = conn.execute(select(accounts.c.created_at)).scalar_one()
        later = conn.execute(
            select(accounts.c.username).where(
                accounts.c.created_at > expected.replace(tzinfo=timezone.utc)
            )
        ).all()
    assert value == expected.replace(tzinfo=timezone.utc)
    assert value.utcoffset() == timedelta(0)
    assert later == []  # comparisons in SQL agree with Python


def test_times_must_be_datetimes(store: Store) -> None:
    with pytest.raises(Exception, match="expected a datetime"), store.write() as conn:
        conn.execute(accounts.insert().values(username="t", created_at="2026-01-01"))


def test_insert_ignore_tells_whether_it_inserted(store: Store) -> None:
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with store.write() as conn:
        assert store.insert_ignore(conn, accounts, {"username": "a", "created_at": now})
        assert not store.insert_ignore(conn, accounts, {"username": "a", "created_at": now})
        acct = conn.execute(select(accounts.c.id)).scalar_one()
        row = {"account_id": acct, "balance_micro": 5, "last_refill_at": now}
        assert store.insert_ignore(conn, balances, row)
        assert not store.insert_ignore(conn, balances, {**row, "balance_micro": 9})
    with store.read() as conn:
        assert conn.execute(select(balances.c.balance_micro)).scalar_one() == 5


def test_upsert_increments_and_replaces(store: Store) -> None:
    t1 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    t2 = t1 + timedelta(hours=1)
    with store.write() as conn:
        conn.execute(accounts.insert().values(username="a", created_at=t1))
        acct = conn.execute(select(accounts.c.id)).scalar_one()
        counts = {"requests": 1, "input_tokens": 10, "output_tokens": 20, "coins_micro": 2**40}
        for when in (t1, t2):
            store.upsert(
                conn,
                usage_stats,
                {"account_id": acct, "model": "m", "source": "api", "last_used_at": when, **counts},
                keys=("account_id", "model", "source"),
                increments=tuple(counts),
                replace=("last_used_at",),
            )
        store.upsert(
            conn,
            usage_daily,
            {
                "account_id": acct,
                "day": date(2026, 1, 1),
                "model": "m",
                "source": "api",
                "key_id": 0,
                "notebook": "",
                **counts,
            },
            keys=("account_id", "day", "model", "source", "key_id", "notebook"),
            increments=tuple(counts),
        )
    with store.read() as conn:
        row = conn.execute(select(usage_stats)).one()
        day = conn.execute(select(usage_daily.c.day)).scalar_one()
    assert (row.requests, row.input_tokens, row.output_tokens) == (2, 20, 40)
    assert row.coins_micro == 2**41  # BIGINT money
    assert row.last_used_at == t2
    assert day == date(2026, 1, 1)


def test_write_rolls_back_on_error(store: Store) -> None:
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with pytest.raises(RuntimeError), store.write() as conn:
        conn.execute(accounts.insert().values(username="ghost", created_at=now))
        raise RuntimeError("boom")
    with store.read() as conn:
        assert conn.execute(select(accounts)).all() == []


def test_sqlite_runs_in_wal_with_foreign_keys(tmp_path: Path) -> None:
    db = Store(sqlite_url(tmp_path / "deep" / "dir" / "lumen.sqlite"))  # creates its folder
    try:
        db.migrate()
        with db.read() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar_one() == 1
            assert conn.execute(text("PRAGMA busy_timeout")).scalar_one() == 30000
    finally:
        db.dispose()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_sqlite_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "lumen.db"
    store = Store(sqlite_url(path))
    store.migrate()
    with store.write() as conn:
        conn.execute(
            accounts.insert().values(username="ada", created_at=datetime.now(timezone.utc))
        )
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    # the -wal and -shm files SQLite keeps next to it while it is open
    assert {p.name: oct(mode(p)) for p in path.parent.iterdir() if mode(p) & 0o077} == {}
    store.engine.dispose()


def test_sqlite_file_readable_by_others_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "lumen.db"
    path.touch()
    path.chmod(0o644)
    Store(sqlite_url(path)).migrate()
    assert mode(path) == 0o600


def test_in_memory_sqlite_keeps_its_tables() -> None:
    db = Store("sqlite://")
    try:
        assert db.migrate() == LATEST
        now = datetime(2026, 1, 1, tzinfo=timezone.utc)
        with db.write() as conn:
            conn.execute(accounts.insert().values(username="m", created_at=now))
        with db.read() as conn:
            assert conn.execute(select(accounts.c.username)).scalars().all() == ["m"]
    finally:
        db.dispose()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://u:p@h:5/db", "postgresql+psycopg://u:p@h:5/db"),
        ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:////tmp/x.sqlite", "sqlite:////tmp/x.sqlite"),
    ],
)
def test_normalize_url(url: str, expected: str) -> None:
    assert normalize_url(url) == expected


def test_unsupported_database() -> None:
    with pytest.raises(ValueError, match="unsupported database"):
        Store("mysql://u@h/db")


def test_conversations_migration_backfills_finished_chats(empty_store_url: str) -> None:
    """A store at version 1 with chat history gets its conversations counted by version 2."""
    from lumen_jupyter.store import engine
    from lumen_jupyter.store.schema import accounts, chat_conversations, requests_log

    db = Store(empty_store_url)
    try:
        first = engine.MIGRATIONS[0]
        with db.write() as conn:
            meta.create(conn, checkfirst=True)
            first[2](conn)
            conn.execute(
                meta.insert().values(version=first[0], applied_at=datetime.now(timezone.utc))
            )
            now = datetime(2026, 1, 1, tzinfo=timezone.utc)
            conn.execute(accounts.insert().values(id=1, username="ada", created_at=now))
            base = {"account_id": 1, "created_at": now, "model": "m", "endpoint": "chat"}
            rows = [
                {**base, "source": "chat", "conversation": "c1", "status": "ok"},
                {**base, "source": "chat", "conversation": "c1", "status": "ok"},
                {**base, "source": "chat", "conversation": "c2", "status": "aborted"},
                {**base, "source": "chat", "conversation": "c3", "status": "error"},
                {**base, "source": "api", "conversation": "c4", "status": "ok"},
            ]
            conn.execute(requests_log.insert(), rows)
        assert db.migrate() == LATEST
        with db.read() as conn:
            found = conn.execute(select(chat_conversations.c.conversation)).scalars().all()
        assert sorted(found) == ["c1", "c2"]
    finally:
        db.dispose()


def test_key_limits_migration_adds_columns_to_a_version_4_store(empty_store_url: str) -> None:
    """A store before version 6 (keys without limits) gets version 6: existing keys and calls
    keep working, with no budget, no expiry and nothing reserved."""
    from lumen_jupyter.store.schema import api_keys, requests_log

    db = Store(empty_store_url)
    try:
        db.migrate()
        now = datetime(2026, 1, 1, tzinfo=timezone.utc)
        with db.write() as conn:  # back to the shape of version 4
            for table, column in [
                ("lumen_api_keys", "budget_micro"),
                ("lumen_api_keys", "reserved_micro"),
                ("lumen_api_keys", "expires_at"),
                ("lumen_requests", "key_reserved_micro"),
            ]:
                conn.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
            conn.execute(meta.delete().where(meta.c.version == 6))
            conn.execute(accounts.insert().values(id=1, username="ada", created_at=now))
            conn.execute(
                text(
                    "INSERT INTO lumen_api_keys (account_id, name, key_hash, hint, status, "
                    "created_at, requests, input_tokens, output_tokens, coins_micro) VALUES "
                    "(1, 'old', 'h', 'sk_a…b', 'active', :now, 3, 1, 2, 50)"
                ),
                {"now": now},
            )
            conn.execute(
                text(
                    "INSERT INTO lumen_requests (account_id, created_at, model, endpoint, key_id,"
                    " source, input_tokens, output_tokens, reserved_micro, coins_micro, status,"
                    " estimated, metered, cap_micro, overrun_micro) VALUES (1, :now, 'm',"
                    " 'chat', 1, 'api', 0, 0, 10, 0, 'pending', false, true, 10, 0)"
                ),
                {"now": now},
            )
        with db.read() as conn:
            assert "budget_micro" not in {
                c["name"] for c in inspect(conn).get_columns("lumen_api_keys")
            }
        assert db.migrate() == LATEST
        with db.read() as conn:
            key = conn.execute(select(api_keys)).one()
            pending = conn.execute(select(requests_log)).one()
        assert (key.budget_micro, key.reserved_micro, key.expires_at) == (None, 0, None)
        assert int(key.coins_micro) == 50
        assert int(pending.key_reserved_micro) == 0
    finally:
        db.dispose()
