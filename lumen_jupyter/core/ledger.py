"""Balances and their ledger: every change to a balance is a ledger row.

Each function runs inside the caller's write transaction, so the balance
update and its ledger row commit together, and ``balance == sum(ledger)``
holds for every account at every commit.  Updates are single conditional
statements, safe against concurrent writers on SQLite and PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, func, select, update

from ..store import Store
from ..store.prepared import HotStatement
from ..store.schema import balances, ledger
from .catalog import PoolSpec
from .pools import compute_refill

_REFILL_ATTEMPTS = 8

# The statements of every model call: compiled once, run on the DB-API connection.
_INSERT_LEDGER = HotStatement(ledger.insert())
_BALANCE = select(balances.c.balance_micro, balances.c.last_refill_at).where(
    balances.c.account_id == bindparam("p_account")
)
_READ_BALANCE = HotStatement(_BALANCE)
_READ_BALANCE_FOR_UPDATE = HotStatement(_BALANCE.with_for_update())
_REFILL = HotStatement(
    update(balances)
    .where(
        balances.c.account_id == bindparam("p_account"),
        balances.c.balance_micro == bindparam("p_seen_balance"),
        balances.c.last_refill_at == bindparam("p_seen_refill"),
    )
    .values(balance_micro=bindparam("p_balance"), last_refill_at=bindparam("p_now"))
)
_ADD = HotStatement(
    update(balances)
    .where(balances.c.account_id == bindparam("p_account"))
    .values(balance_micro=balances.c.balance_micro + bindparam("p_amount"))
)
_TAKE = HotStatement(
    update(balances)
    .where(balances.c.account_id == bindparam("p_account"), balances.c.balance_micro > 0)
    .values(balance_micro=balances.c.balance_micro - bindparam("p_amount"))
)
_TAKE_STRICT = HotStatement(
    update(balances)
    .where(
        balances.c.account_id == bindparam("p_account"),
        balances.c.balance_micro > 0,
        balances.c.balance_micro >= bindparam("p_needed"),
    )
    .values(balance_micro=balances.c.balance_micro - bindparam("p_amount"))
)


@dataclass(frozen=True)
class BalanceRow:
    balance_micro: int
    last_refill_at: datetime


def write_ledger(
    conn: Connection,
    account_id: int,
    kind: str,
    amount: int,
    now: datetime,
    *,
    request_id: int | None = None,
    note: str | None = None,
) -> None:
    _INSERT_LEDGER.run(
        conn,
        {
            "account_id": account_id,
            "kind": kind,
            "amount_micro": amount,
            "request_id": request_id,
            "note": note,
            "created_at": now,
        },
    )


def read_balance(
    conn: Connection, account_id: int, *, for_update: bool = False
) -> BalanceRow | None:
    """The balance row; ``for_update`` locks it on PostgreSQL until the transaction ends
    (SQLite's write transactions are already exclusive)."""
    query = _READ_BALANCE_FOR_UPDATE if for_update else _READ_BALANCE
    row = query.run(conn, {"p_account": account_id}).first()
    return None if row is None else BalanceRow(int(row[0]), row[1])


def ensure_balance(
    store: Store, conn: Connection, account_id: int, pool: PoolSpec, now: datetime
) -> None:
    """Open the balance lazily at the pool's ``starting`` value (a ``grant`` row)."""
    opened = store.insert_ignore(
        conn,
        balances,
        {
            "account_id": account_id,
            "balance_micro": pool.starting_micro,
            "last_refill_at": now,
        },
    )
    if opened and pool.starting_micro:
        write_ledger(conn, account_id, "grant", pool.starting_micro, now, note="starting balance")


def prepare_balance(
    store: Store, conn: Connection, account_id: int, pool: PoolSpec, now: datetime
) -> int:
    """:func:`ensure_balance` then :func:`refill_if_due`, in fewer statements: the
    locked read of the refill tells whether the row exists, so the INSERT of a new
    balance is only tried when it does not.  Returns the refill credit."""
    current = read_balance(conn, account_id, for_update=True)
    if current is None:
        ensure_balance(store, conn, account_id, pool, now)
    return refill_if_due(conn, account_id, pool, now, current=current)


def refill_if_due(
    conn: Connection,
    account_id: int,
    pool: PoolSpec,
    now: datetime,
    *,
    current: BalanceRow | None = None,
) -> int:
    """Apply a due refill; returns the credit (0 when none was due).

    The row is locked while the refill is computed, and the UPDATE is still
    conditional on the balance and refill time it was computed from, so two
    refillers can never both credit the same hour.  ``current``: the row as just
    read (and locked) in this transaction, to skip the first read.
    """
    for _ in range(_REFILL_ATTEMPTS):
        if current is None:
            current = read_balance(conn, account_id, for_update=True)
        if current is None:
            return 0
        outcome = compute_refill(current.balance_micro, current.last_refill_at, now, pool)
        if outcome is None:
            return 0
        result = _REFILL.run(
            conn,
            {
                "p_account": account_id,
                "p_seen_balance": current.balance_micro,
                "p_seen_refill": current.last_refill_at,
                "p_balance": outcome.new_balance,
                "p_now": now,
            },
        )
        if result.rowcount == 1:
            if outcome.credit:
                write_ledger(conn, account_id, "refill", outcome.credit, now)
            return outcome.credit
        current = None
    return 0


def add_to_balance(
    conn: Connection,
    account_id: int,
    amount: int,
    kind: str,
    now: datetime,
    *,
    request_id: int | None = None,
    note: str | None = None,
) -> bool:
    """Add ``amount`` (may be negative) unconditionally; ``False`` if there is no balance."""
    result = _ADD.run(conn, {"p_account": account_id, "p_amount": amount})
    if result.rowcount != 1:
        return False
    if amount:
        write_ledger(conn, account_id, kind, amount, now, request_id=request_id, note=note)
    return True


def take_from_balance(
    conn: Connection, account_id: int, amount: int, now: datetime, *, strict: bool
) -> bool:
    """Reserve ``amount`` if the balance is positive (and, when strict, covers it)."""
    if strict:
        params = {"p_account": account_id, "p_amount": amount, "p_needed": amount}
        result = _TAKE_STRICT.run(conn, params)
    else:
        result = _TAKE.run(conn, {"p_account": account_id, "p_amount": amount})
    return result.rowcount == 1


def ledger_sum(conn: Connection, account_id: int) -> int:
    total = conn.execute(
        select(func.coalesce(func.sum(ledger.c.amount_micro), 0)).where(
            ledger.c.account_id == account_id
        )
    ).scalar_one()
    return int(total)


def ledger_matches_balance(conn: Connection, account_id: int) -> bool:
    """The invariant ``balance == sum(ledger)`` (no balance row counts as 0)."""
    current = read_balance(conn, account_id)
    return ledger_sum(conn, account_id) == (current.balance_micro if current else 0)
