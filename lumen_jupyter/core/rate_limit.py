"""Rate limits (calls per minute) that hold across every process on one database.

A limit kept in each process's memory lets N processes admit N times the limit.
Here the window is the request log itself: a call counts from the moment its
admission writes its request row, so a call refused later in the same admission
(no consent, no coins, a spent key budget) writes no row and never counts, and
nothing has to be given back.

Two admissions for the same key must not both see 19 calls and both write the
20th.  On PostgreSQL the key's row is locked first (``FOR NO KEY UPDATE``, the lock
the key budget's reservation takes anyway, so the lock order key row, then balance,
is unchanged) and only then is the log read: under READ COMMITTED that read takes a
fresh snapshot and sees the rows of the transaction that held the lock before.
SQLite needs no lock: its write transactions (``BEGIN IMMEDIATE``) run one at a time.
Either way the lock lasts until the admission commits, so the caller must write the
request row in the same transaction, after this check.

The read is one index range scan on the newest rows of the key
(``ix_lumen_requests_key_time``): it looks at ``per_minute`` entries at most.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, bindparam, select

from ..store.prepared import HotStatement
from ..store.schema import accounts, api_keys, requests_log

WINDOW = timedelta(seconds=60)
"""A limit counts the calls started within the last minute (a sliding window)."""

_LOCK_KEY = HotStatement(
    select(api_keys.c.id)
    .where(api_keys.c.id == bindparam("p_id"))
    .with_for_update(key_share=True)  # FOR NO KEY UPDATE
)
_LOCK_ACCOUNT = HotStatement(
    # NO KEY UPDATE: the foreign keys of the rows an admission inserts take KEY SHARE
    # locks on the account, which this does not block
    select(accounts.c.id).where(accounts.c.id == bindparam("p_id")).with_for_update(key_share=True)
)
_NTH_NEWEST_OF_KEY = HotStatement(
    select(requests_log.c.created_at)
    .where(
        requests_log.c.key_id == bindparam("p_id"),
        requests_log.c.created_at > bindparam("p_since"),
    )
    .order_by(requests_log.c.created_at.desc())
    .limit(1)
    .offset(bindparam("p_skip"))
)
_NTH_NEWEST_WITHOUT_KEY = HotStatement(
    select(requests_log.c.created_at)
    .where(
        requests_log.c.account_id == bindparam("p_id"),
        requests_log.c.created_at > bindparam("p_since"),
        requests_log.c.key_id.is_(None),
    )
    .order_by(requests_log.c.created_at.desc())
    .limit(1)
    .offset(bindparam("p_skip"))
)


def take_rate_slot_in(
    conn: Connection, key_id: int, per_minute: int, now: datetime
) -> float | None:
    """Whether a call made with personal key ``key_id`` may start at ``now``.

    ``None``: allowed; the slot is this transaction's until it commits, and is taken
    for good by the request row the admission then writes (no row, no slot).
    Otherwise the seconds until a slot frees.  ``per_minute`` <= 0 means no limit.
    Runs in the admission's write transaction, before its request row is written."""
    return _take(conn, _LOCK_KEY, _NTH_NEWEST_OF_KEY, key_id, per_minute, now)


def take_account_rate_slot_in(
    conn: Connection, account_id: int, per_minute: int, now: datetime
) -> float | None:
    """:func:`take_rate_slot_in` for the calls a user makes without a personal key
    (Jupyter session, kernels, chat): one window per account, shared by all of them."""
    return _take(conn, _LOCK_ACCOUNT, _NTH_NEWEST_WITHOUT_KEY, account_id, per_minute, now)


def _take(
    conn: Connection,
    lock: HotStatement,
    nth_newest: HotStatement,
    owner: int,
    per_minute: int,
    now: datetime,
) -> float | None:
    if per_minute <= 0:
        return None
    if conn.dialect.name == "postgresql":
        lock.run(conn, {"p_id": owner})
    # The per_minute-th newest call of the window: when there is one, the window is
    # full, and it is the call whose leaving the window frees a slot.
    oldest_needed: datetime | None = nth_newest.run(
        conn, {"p_id": owner, "p_since": now - WINDOW, "p_skip": per_minute - 1}
    ).scalar()
    if oldest_needed is None:
        return None
    return float(max(0.0, (oldest_needed + WINDOW - now).total_seconds()))
