"""Charging a model call: reserve the worst case, settle to the real cost, or release.

A call is admitted only when its worst-case cost is reserved atomically (or, in
Lumen's soft mode, when the balance is positive), so concurrent calls can never
overspend a pool.  Every path ends in :func:`settle` or :func:`release`; calls
left pending by a crash are released by :func:`reconcile` at start-up.  The
request row, the ledger rows, the usage counters and the key counters of one
call commit together.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select, update

from ..store import Store
from ..store.schema import requests_log
from .catalog import ModelSpec, PoolSpec
from .ledger import (
    add_to_balance,
    ensure_balance,
    read_balance,
    refill_if_due,
    take_from_balance,
    write_ledger,
)
from .money import call_cost, token_cost
from .pools import next_refill_at
from .usage import Usage, record_usage

DEFAULT_OUTPUT_CAP = 4096
"""Output tokens assumed when a caller sets no ``max_tokens`` and the model has no limit."""


@dataclass(frozen=True)
class CallContext:
    """Who made a call, from where."""

    account_id: int
    source: str  # api kernel chat session
    key_id: int | None = None
    notebook: str | None = None
    cell: str | None = None
    conversation: str | None = None


@dataclass(frozen=True)
class Refusal:
    """Why a call was not admitted: ``no_pool``, ``pool_blocked`` or ``exhausted``."""

    reason: str
    balance_micro: int | None = None
    needed_micro: int | None = None
    next_refill_at: datetime | None = None


def output_budget(
    model: ModelSpec, requested: int | None, default_cap: int = DEFAULT_OUTPUT_CAP
) -> int:
    """The most output tokens a call may produce, for the worst-case reservation.

    The caller's ``max_tokens`` when given (never above the model's own limit);
    else the model's limit; else ``default_cap``.  Without a cap, a call with no
    ``max_tokens`` would have to reserve a whole budget.
    """
    cap = model.max_output_tokens or default_cap
    if requested is None or requested <= 0:
        return cap
    return min(requested, cap) if model.max_output_tokens else requested


def worst_case_cost(model: ModelSpec, input_tokens: int, max_output_tokens: int) -> int:
    return call_cost(
        input_tokens,
        max_output_tokens,
        model.input_price_micro,
        model.output_price_micro,
    )


def actual_cost(model: ModelSpec, input_tokens: int, output_tokens: int) -> int:
    return token_cost(input_tokens, model.input_price_micro) + token_cost(
        output_tokens, model.output_price_micro
    )


def admit(
    store: Store,
    conn: Connection,
    ctx: CallContext,
    *,
    pool: PoolSpec | None,
    model: str,
    endpoint: str,
    worst_case_micro: int,
    strict: bool,
    now: datetime,
) -> int | Refusal:
    """Reserve and open a pending request; returns its id, or why it was refused."""
    if pool is None:
        return Refusal("no_pool")
    if pool.blocked:
        return Refusal("pool_blocked")
    metered = not pool.unlimited
    reserved = 0
    if metered:
        ensure_balance(store, conn, ctx.account_id, pool, now)
        refill_if_due(conn, ctx.account_id, pool, now)
        reserved = worst_case_micro if strict else 0
        if not take_from_balance(conn, ctx.account_id, reserved, now, strict=strict):
            current = read_balance(conn, ctx.account_id)
            return Refusal(
                "exhausted",
                balance_micro=current.balance_micro if current else 0,
                needed_micro=worst_case_micro,
                next_refill_at=next_refill_at(current.last_refill_at if current else None, pool),
            )
    result = conn.execute(
        requests_log.insert().values(
            account_id=ctx.account_id,
            created_at=now,
            model=model,
            endpoint=endpoint,
            key_id=ctx.key_id,
            source=ctx.source,
            notebook=ctx.notebook,
            cell=ctx.cell,
            conversation=ctx.conversation,
            reserved_micro=reserved,
            status="pending",
            metered=metered,
            estimated=False,
            input_tokens=0,
            output_tokens=0,
            coins_micro=0,
        )
    )
    primary = result.inserted_primary_key
    assert primary is not None
    request_id = int(primary[0])
    if reserved:
        write_ledger(conn, ctx.account_id, "reserve", -reserved, now, request_id=request_id)
    return request_id


@dataclass(frozen=True)
class Settled:
    request_id: int
    coins_micro: int
    input_tokens: int
    output_tokens: int


def settle(
    store: Store,
    conn: Connection,
    request_id: int,
    *,
    usage: Usage,
    status: str,
    estimated: bool,
    http_status: int | None,
    now: datetime,
) -> Settled | None:
    """Charge the real cost of a pending call and count its usage.

    ``status`` is ``ok`` or ``aborted`` (a stream cut short, billed for what was
    delivered).  Returns ``None`` when the call was already settled or released.
    """
    row = conn.execute(select(requests_log).where(requests_log.c.id == request_id)).first()
    if row is None or row.status != "pending":
        return None
    claimed = conn.execute(
        update(requests_log)
        .where(requests_log.c.id == request_id, requests_log.c.status == "pending")
        .values(
            status=status,
            finished_at=now,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            coins_micro=usage.coins_micro,
            estimated=estimated,
            http_status=http_status,
            duration_ms=_duration_ms(row.created_at, now),
        )
    )
    if claimed.rowcount != 1:
        return None
    if row.metered:
        refund = int(row.reserved_micro) - usage.coins_micro
        add_to_balance(conn, int(row.account_id), refund, "settle", now, request_id=request_id)
    record_usage(
        store,
        conn,
        int(row.account_id),
        model=str(row.model),
        source=str(row.source),
        key_id=row.key_id,
        notebook=row.notebook,
        usage=usage,
        now=now,
    )
    return Settled(request_id, usage.coins_micro, usage.input_tokens, usage.output_tokens)


def release(
    conn: Connection,
    request_id: int,
    *,
    status: str,
    http_status: int | None,
    now: datetime,
) -> bool:
    """Give back a pending call's reservation (the call failed, nothing delivered)."""
    row = conn.execute(select(requests_log).where(requests_log.c.id == request_id)).first()
    if row is None or row.status != "pending":
        return False
    claimed = conn.execute(
        update(requests_log)
        .where(requests_log.c.id == request_id, requests_log.c.status == "pending")
        .values(
            status=status,
            finished_at=now,
            http_status=http_status,
            duration_ms=_duration_ms(row.created_at, now),
        )
    )
    if claimed.rowcount != 1:
        return False
    if row.metered and row.reserved_micro:
        add_to_balance(
            conn,
            int(row.account_id),
            int(row.reserved_micro),
            "release",
            now,
            request_id=request_id,
        )
    return True


def reconcile(conn: Connection, account_id: int, started_before: datetime, now: datetime) -> int:
    """Release reservations a crash left open; returns how many."""
    pending = conn.execute(
        select(requests_log.c.id).where(
            requests_log.c.account_id == account_id,
            requests_log.c.status == "pending",
            requests_log.c.created_at < started_before,
        )
    ).all()
    released = 0
    for (request_id,) in pending:
        if release(conn, int(request_id), status="abandoned", http_status=None, now=now):
            released += 1
    return released


def _duration_ms(started: datetime, now: datetime) -> int:
    return max(0, int((now - started).total_seconds() * 1000))
