"""The store: one SQLAlchemy engine, transactions, migrations, dialect helpers.

SQLite (the default) runs in WAL mode with ``synchronous=NORMAL`` and starts
write transactions with ``BEGIN IMMEDIATE`` so that two writers queue instead
of failing with "database is locked" half-way through.  PostgreSQL needs
nothing special: every balance change is a single conditional UPDATE.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Date,
    Engine,
    Table,
    cast,
    create_engine,
    event,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

from . import schema
from .notify import install_pool_trigger
from .pipeline import end_pipeline_before_sqlalchemy
from .prepared import HotStatement

Migration = Callable[[Connection], None]


def _create_initial_tables(conn: Connection) -> None:
    first = [
        schema.accounts,
        schema.user_pools,
        schema.balances,
        schema.ledger,
        schema.api_keys,
        schema.consents,
        schema.usage_stats,
        schema.usage_daily,
        schema.requests_log,
    ]
    schema.metadata.create_all(conn, tables=first, checkfirst=True)


def _add_chat_conversations(conn: Connection) -> None:
    """Count Web Chat conversations from a small table instead of the request log."""
    schema.chat_conversations.create(conn, checkfirst=True)
    log = schema.requests_log
    conn.execute(
        schema.chat_conversations.insert().from_select(
            ["account_id", "conversation", "started_at"],
            select(log.c.account_id, log.c.conversation, func.min(log.c.created_at))
            .where(
                log.c.source == "chat",
                log.c.conversation.is_not(None),
                log.c.status.in_(("ok", "aborted", "partial")),
            )
            .group_by(log.c.account_id, log.c.conversation),
        )
    )


_MIGRATION_LOCK = 0x6C756D656E  # "lumen": the advisory lock key of migrations on PostgreSQL


def _add_usage_monthly(conn: Connection) -> None:
    """A per-month, per-model roll-up: the all-time spending chart reads a few hundred rows."""
    schema.usage_monthly.create(conn, checkfirst=True)
    daily = schema.usage_daily
    if conn.dialect.name == "postgresql":
        month: Any = cast(func.date_trunc("month", daily.c.day), Date)
    else:
        month = func.strftime("%Y-%m-01", daily.c.day)
    month = month.label("month")
    conn.execute(
        schema.usage_monthly.insert().from_select(
            [
                "account_id",
                "month",
                "model",
                "requests",
                "input_tokens",
                "output_tokens",
                "coins_micro",
            ],
            select(
                daily.c.account_id,
                month,
                daily.c.model,
                func.sum(daily.c.requests),
                func.sum(daily.c.input_tokens),
                func.sum(daily.c.output_tokens),
                func.sum(daily.c.coins_micro),
            ).group_by(daily.c.account_id, month, daily.c.model),
        )
    )


def rebuild_rollups(conn: Connection) -> None:
    """Fill the conversation and monthly tables from the log and the daily counters
    (for stores written in bulk, like the benchmark's seed); they must be empty."""
    _add_chat_conversations(conn)
    _add_usage_monthly(conn)


def _add_instances(conn: Connection) -> None:
    """Pending calls belong to a server process with a heartbeat (recovery frees only a
    dead process's calls); each call records its cap and any overrun of it."""
    schema.instances.create(conn, checkfirst=True)
    present = {column["name"] for column in inspect(conn).get_columns("lumen_requests")}
    added = {
        "instance_id": "VARCHAR(40)",
        "cap_micro": "BIGINT NOT NULL DEFAULT 0",
        "overrun_micro": "BIGINT NOT NULL DEFAULT 0",
    }
    for name, ddl in added.items():
        if name not in present:
            conn.execute(text(f"ALTER TABLE lumen_requests ADD COLUMN {name} {ddl}"))
    conn.execute(
        text(
            "CREATE INDEX IF NOT EXISTS ix_lumen_requests_instance ON lumen_requests (instance_id)"
        )
    )


def _add_notebook_index(conn: Connection) -> None:
    """Spending per cell of a notebook is read from the log: index it by notebook."""
    conn.execute(
        text(
            "CREATE INDEX IF NOT EXISTS ix_lumen_requests_notebook "
            "ON lumen_requests (account_id, notebook, finished_at)"
        )
    )


def _add_key_limits(conn: Connection) -> None:
    """A personal key may carry a coin budget and an expiry; a call reserves its worst
    case on its key's budget as on the pool, and the request remembers what it reserved."""
    _add_columns(
        conn,
        "lumen_api_keys",
        {
            "budget_micro": "BIGINT",
            "reserved_micro": "BIGINT NOT NULL DEFAULT 0",
            "expires_at": "TIMESTAMP",
        },
    )
    _add_columns(conn, "lumen_requests", {"key_reserved_micro": "BIGINT NOT NULL DEFAULT 0"})


def _add_key_time_index(conn: Connection) -> None:
    """A key's rate limit reads its calls of the last minute from the log (every keyed
    call, on every process): index the log by key and time, keyed calls only."""
    conn.execute(
        text(
            "CREATE INDEX IF NOT EXISTS ix_lumen_requests_key_time "
            "ON lumen_requests (key_id, created_at) WHERE key_id IS NOT NULL"
        )
    )


def _add_columns(conn: Connection, table: str, added: Mapping[str, str]) -> None:
    present = {column["name"] for column in inspect(conn).get_columns(table)}
    for name, ddl in added.items():
        if name not in present:
            conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {name} {ddl}"))


MIGRATIONS: Sequence[tuple[int, str, Migration]] = (
    (1, "initial tables", _create_initial_tables),
    (2, "chat conversations", _add_chat_conversations),
    (3, "monthly usage by model", _add_usage_monthly),
    (4, "instances, call caps and overruns", _add_instances),
    (5, "the request log by notebook, for usage by cell", _add_notebook_index),
    (6, "key budgets and expiry", _add_key_limits),
    (7, "the request log by key, for rate limits across processes", _add_key_time_index),
    (8, "pool changes notified to every process (PostgreSQL)", install_pool_trigger),
)
"""Ordered, append-only.  Each runs once, in its own transaction, and is recorded."""


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def _owned_by_me(path: Path) -> bool:
    return os.name == "posix" and path.stat().st_uid == os.getuid()


def make_private_dir(path: Path) -> None:
    """Create ``path`` (0700) or take group and world access off it if it is ours."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077 and _owned_by_me(path):
        os.chmod(path, mode & 0o700)


def make_private_file(path: Path) -> None:
    """Create the SQLite file readable by its owner only (0600), in a directory that
    is created private (0700); an existing file of ours that others can read is tightened.

    The database says who spent what on which notebook; SQLite gives its -wal and
    -shm files the mode of the database file.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077 and _owned_by_me(path):
            os.chmod(path, mode & 0o700)
    else:
        os.close(fd)


def normalize_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` and use the psycopg 3 driver."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


class Store:
    """A database holding lumen-jupyter's state."""

    def __init__(self, url: str, *, pool_size: int = 5) -> None:
        self.url = normalize_url(url)
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            database = parsed.database or ""
            if database and database != ":memory:":
                make_private_file(Path(database))
            self.engine: Engine = create_engine(
                self.url,
                connect_args={"check_same_thread": False, "timeout": 30},
                # one shared connection, else each connection sees its own empty database
                poolclass=StaticPool if database in ("", ":memory:") else None,
            )
            _configure_sqlite(self.engine)
        elif self.dialect == "postgresql":
            self.engine = create_engine(
                self.url, pool_size=pool_size, max_overflow=10, pool_pre_ping=True
            )
            end_pipeline_before_sqlalchemy(self.engine)
        else:
            raise ValueError(f"unsupported database {self.dialect!r}: use sqlite or postgresql")
        # statements built once per Store, compiled once per dialect
        self._upserts: dict[
            tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...]], HotStatement
        ] = {}
        self._ignores: dict[str, HotStatement] = {}

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction: commits on success, rolls back on error."""
        with self.write_connection() as conn, conn.begin():
            yield conn

    def write_connection(self) -> Connection:
        """A connection whose transactions are write transactions (``BEGIN IMMEDIATE``
        on SQLite), for a caller that keeps it across transactions and closes it."""
        return self.engine.connect().execution_options(lumen_write=True)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction."""
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def _migration_transaction(self) -> Iterator[Connection]:
        """A write transaction that other migrating servers wait for.

        SQLite's BEGIN IMMEDIATE already queues them; PostgreSQL needs a lock, else
        servers starting at once on a fresh database race to CREATE the same tables.
        """
        with self.write() as conn:
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
            yield conn

    def migrate(self) -> int:
        """Apply pending migrations; returns the schema version."""
        with self._migration_transaction() as conn:
            schema.meta.create(conn, checkfirst=True)
        version = 0
        for number, _title, step in MIGRATIONS:
            with self._migration_transaction() as conn:
                done = conn.execute(
                    select(schema.meta.c.version).where(schema.meta.c.version == number)
                ).first()
                if done is None:
                    step(conn)
                    conn.execute(
                        schema.meta.insert().values(
                            version=number, applied_at=datetime.now(timezone.utc)
                        )
                    )
            version = number
        return version

    def upsert(
        self,
        conn: Connection,
        table: Table,
        values: Mapping[str, Any],
        keys: Sequence[str],
        increments: Sequence[str] = (),
        replace: Sequence[str] = (),
    ) -> None:
        """Insert a row, or add ``increments`` to it and overwrite ``replace``.

        The statement is built once per (table, keys, increments, replace) and runs as
        a :class:`HotStatement` with ``values`` as parameters.
        """
        cache_key = (table.name, tuple(keys), tuple(increments), tuple(replace))
        stmt = self._upserts.get(cache_key)
        if stmt is None:
            base = self._insert(table)
            updates: dict[str, Any] = {c: table.c[c] + base.excluded[c] for c in increments}
            updates.update({c: base.excluded[c] for c in replace})
            stmt = HotStatement(base.on_conflict_do_update(index_elements=list(keys), set_=updates))
            self._upserts[cache_key] = stmt
        stmt.run(conn, values)

    def insert_ignore(self, conn: Connection, table: Table, values: Mapping[str, Any]) -> bool:
        """Insert a row unless its primary key exists; ``True`` when inserted.

        Told by RETURNING, not ``rowcount``: an INSERT's rowcount is -1 on psycopg 3.
        """
        stmt = self._ignores.get(table.name)
        if stmt is None:
            stmt = HotStatement(
                self._insert(table).on_conflict_do_nothing().returning(*table.primary_key.columns)
            )
            self._ignores[table.name] = stmt
        return stmt.run(conn, values).first() is not None

    def _insert(self, table: Table) -> Any:
        """The dialect's INSERT (with ON CONFLICT support) of ``table``."""
        return postgresql.insert(table) if self.dialect == "postgresql" else sqlite.insert(table)

    def dispose(self) -> None:
        self.engine.dispose()


_BUSY_TIMEOUT_MS = 30_000


def _enable_wal(cursor: Any) -> None:
    """Switch the database file to WAL, waiting for other connections if need be.

    Turning a fresh file into WAL takes an exclusive lock, and SQLite answers
    "database is locked" at once instead of calling the busy handler when another
    server holds the file at that moment (several servers starting together on a
    new database). Once the file is in WAL the pragma is a no-op, so we retry.
    """
    deadline = time.monotonic() + _BUSY_TIMEOUT_MS / 1000
    pause = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        _enable_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        writing = conn.get_execution_options().get("lumen_write", False)
        # on the driver's connection: through exec_driver_sql this cost ~50 µs a transaction
        driver = conn.connection.dbapi_connection
        assert driver is not None
        driver.execute("BEGIN IMMEDIATE" if writing else "BEGIN")
