"""Pool changes told to every process on one PostgreSQL database, as they commit.

With several worker processes, a call settled by one worker must move the coin meter
held open by another, and so must a grant made with ``jupyter lumen`` (a process of
its own).  Rather than have every writer remember to say so, the database says it:
a trigger on the balances (and on users' own pools) sends ``NOTIFY lumen_pool`` with
the account id whenever a balance, its last refill or a user's pool changes.
PostgreSQL delivers it when the transaction commits, only then, and once per account
per transaction.  SQLite is one process: its event streams are woken in memory.

The notification has a price on the hot path: PostgreSQL queues notifications under
one lock per database held across the commit, so notifying commits take turns, flush
to disk included (no group commit).  A writer that changes balances many times a
second (the accountant of a busy worker) may switch the trigger off for its own
transactions (:func:`defer_pool_notifications`) and tell the accounts it changed a
few times a second instead (:func:`notify_pool_changes`, in a short transaction of
its own); everyone else (the command line, admin pages, other tools) keeps notifying.

:class:`PoolListener` holds one connection per process that ``LISTEN``\\ s on the
channel, hands each account id to a callback, and reconnects (with backoff) when the
connection is lost; notifications sent while it was away are lost, so it then calls
``on_reconnect`` for a re-read of everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import make_url

log = logging.getLogger("lumen_jupyter.notify")

CHANNEL = "lumen_pool"
DEFER_SETTING = "lumen.pool_notify"
"""Set to ``off`` in a transaction (or a session), the balance triggers stay silent."""
CONNECT_TIMEOUT = 10
"""Seconds a connection attempt may take, unless the URL says otherwise."""

_TRIGGER_DDL = (
    f"""
    CREATE OR REPLACE FUNCTION lumen_notify_pool() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'DELETE' THEN
            PERFORM pg_notify('{CHANNEL}', OLD.account_id::text);
        ELSE
            PERFORM pg_notify('{CHANNEL}', NEW.account_id::text);
        END IF;
        RETURN NULL;
    END
    $$
    """,
    "DROP TRIGGER IF EXISTS lumen_balances_notify_insert ON lumen_balances",
    """
    CREATE TRIGGER lumen_balances_notify_insert AFTER INSERT ON lumen_balances
    FOR EACH ROW WHEN (current_setting('lumen.pool_notify', true) IS DISTINCT FROM 'off')
    EXECUTE FUNCTION lumen_notify_pool()
    """,
    "DROP TRIGGER IF EXISTS lumen_balances_notify_update ON lumen_balances",
    # WHEN: an update that leaves the pool as it was (a settle at exactly the amount
    # reserved) neither runs the function nor notifies
    """
    CREATE TRIGGER lumen_balances_notify_update AFTER UPDATE ON lumen_balances
    FOR EACH ROW WHEN (
        (
            OLD.balance_micro IS DISTINCT FROM NEW.balance_micro
            OR OLD.last_refill_at IS DISTINCT FROM NEW.last_refill_at
        )
        AND current_setting('lumen.pool_notify', true) IS DISTINCT FROM 'off'
    ) EXECUTE FUNCTION lumen_notify_pool()
    """,
    "DROP TRIGGER IF EXISTS lumen_user_pools_notify ON lumen_user_pools",
    """
    CREATE TRIGGER lumen_user_pools_notify AFTER INSERT OR UPDATE OR DELETE
    ON lumen_user_pools FOR EACH ROW EXECUTE FUNCTION lumen_notify_pool()
    """,
)


def install_pool_trigger(conn: Connection) -> None:
    """The migration: the triggers that notify pool changes (PostgreSQL; else nothing)."""
    if conn.dialect.name != "postgresql":
        return
    for statement in _TRIGGER_DDL:
        conn.exec_driver_sql(statement)


def defer_pool_notifications(conn: Connection) -> None:
    """Silence the balance triggers for the rest of this transaction (PostgreSQL): the
    caller promises :func:`notify_pool_changes` for the accounts it changes, after the
    commit."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SET LOCAL {DEFER_SETTING} = 'off'")


def notify_pool_changes(conn: Connection, account_ids: Iterable[int]) -> None:
    """Tell every listener that these accounts' pools changed (PostgreSQL; delivered
    when ``conn``'s transaction commits: keep it short)."""
    ids = sorted(set(account_ids))
    if conn.dialect.name == "postgresql" and ids:
        conn.exec_driver_sql(
            "SELECT pg_notify(%(channel)s, id::text) FROM unnest(%(ids)s::integer[]) AS id",
            {"channel": CHANNEL, "ids": ids},
        )


def conninfo_from_url(url: str, **extra: str) -> str:
    """A libpq connection string for the store's SQLAlchemy URL (``postgresql+psycopg://``
    or ``postgresql://``); query options such as ``options`` or ``sslmode`` are kept."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"pool changes are notified on PostgreSQL only, not {parsed.drivername}")
    params: dict[str, Any] = {
        "host": parsed.host,
        "port": parsed.port,
        "user": parsed.username,
        "password": parsed.password,
        "dbname": parsed.database,
    }
    for name, value in parsed.query.items():
        params[name] = ",".join(value) if isinstance(value, tuple) else value
    params.update(extra)
    from psycopg.conninfo import make_conninfo  # the postgres extra: SQLite needs none

    return make_conninfo(**{k: v for k, v in params.items() if v is not None})


def describe_url(url: str) -> str:
    """The URL as it may be logged: the password masked."""
    return make_url(url).render_as_string(hide_password=True)


class _ConnectionLost(Exception):
    pass


class PoolListener:
    """``LISTEN lumen_pool`` on a connection of its own; ``on_change(account_id)`` for
    each account whose pool changed, on the event loop that ran :meth:`start`.

    The first notification after a quiet spell is handed over at once; after each, the
    listener reads nothing for ``coalesce`` seconds and then takes everything that came
    meanwhile in one go, each account once.  Each wake-up of the event loop costs tens
    of microseconds of CPU, whatever it carries: without this a busy database (two
    notifications a call, for every call of every process) would wake the loop of
    every process thousands of times a second.

    The connection is pinged every ``ping_interval`` seconds, so one that died
    silently is noticed; a lost connection is opened again after ``min_backoff``
    seconds, doubling up to ``max_backoff`` while it keeps failing.
    """

    def __init__(
        self,
        url: str,
        on_change: Callable[[int], None],
        *,
        on_reconnect: Callable[[], None] | None = None,
        channel: str = CHANNEL,
        coalesce: float = 0.1,
        ping_interval: float = 30.0,
        ping_timeout: float = 10.0,
        min_backoff: float = 0.1,
        max_backoff: float = 10.0,
        application_name: str = "lumen-pool-listener",
    ) -> None:
        self.where = describe_url(url)
        extra = {"application_name": application_name}
        if "connect_timeout" not in make_url(url).query:  # a silent network is given up on
            extra["connect_timeout"] = str(CONNECT_TIMEOUT)
        self._conninfo = conninfo_from_url(url, **extra)
        self.on_change = on_change
        self.on_reconnect = on_reconnect
        self.channel = channel
        self.coalesce = coalesce
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.backend_pid: int | None = None
        """The server process of the current connection (``None`` while not listening)."""
        self.connections = 0
        """How many times a connection was opened and listening."""
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self._pending: set[int] = set()
        self._flush_scheduled = False

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Connect and listen in the background (a failing database is retried)."""
        if self._task is None or self._task.done():
            self._listening = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="lumen-pool-listener"
            )

    async def wait_listening(self, timeout: float) -> int:
        """Wait until the channel is listened to; returns the connection's server pid."""
        await asyncio.wait_for(self._listening.wait(), timeout)
        assert self.backend_pid is not None
        return self.backend_pid

    async def stop(self) -> None:
        """Stop listening and close the connection."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    # -- the task ---------------------------------------------------------------------

    async def _run(self) -> None:
        import psycopg  # the postgres extra: SQLite needs none

        backoff = self.min_backoff
        while True:
            opened = time.monotonic()
            try:
                await self._session()
            except (psycopg.Error, OSError, _ConnectionLost) as exc:
                if time.monotonic() - opened > self.max_backoff:
                    backoff = self.min_backoff  # it had worked for a while
                log.warning(
                    "lumen: listening for pool changes on %s: %s; again in %.1f s",
                    self.where,
                    _first_line(exc),
                    backoff,
                )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    async def _session(self) -> None:
        """One connection: listen until it is lost (raises) or the task is cancelled."""
        import psycopg
        from psycopg import sql

        conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        try:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            self.backend_pid = conn.info.backend_pid
            self.connections += 1
            self._listening.set()
            if self.connections > 1:
                log.info("lumen: listening for pool changes again on %s", self.where)
                if self.on_reconnect is not None:
                    self._call(self.on_reconnect)
            next_ping = time.monotonic() + self.ping_interval
            while True:
                remaining = next_ping - time.monotonic()
                if remaining <= 0:
                    try:
                        await asyncio.wait_for(conn.execute("SELECT 1"), self.ping_timeout)
                    except asyncio.TimeoutError:
                        raise _ConnectionLost("no answer to a ping") from None
                    next_ping = time.monotonic() + self.ping_interval
                    continue
                heard = False
                async for notify in conn.notifies(timeout=remaining, stop_after=1):
                    self._received(notify.payload)  # the whole packet, then out
                    heard = True
                if heard and self.coalesce > 0:
                    # what comes meanwhile waits in the socket, to be read in one go
                    await asyncio.sleep(self.coalesce)
        finally:
            self._listening.clear()
            self.backend_pid = None
            await conn.close()

    def _received(self, payload: str) -> None:
        try:
            account_id = int(payload)
        except ValueError:
            log.debug("lumen: ignored a pool notification %r", payload[:40])
            return
        self._pending.add(account_id)
        if not self._flush_scheduled:  # after the notifications already read
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        accounts, self._pending = self._pending, set()
        if self._task is None:  # stopped meanwhile
            return
        for account_id in sorted(accounts):
            self._call(self.on_change, account_id)

    @staticmethod
    def _call(callback: Callable[..., None], *args: int) -> None:
        try:
            callback(*args)
        except Exception:
            log.exception("lumen: a pool change callback failed")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
