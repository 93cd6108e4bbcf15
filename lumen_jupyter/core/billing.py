"""Charging a model call: reserve the worst case, settle to the real cost, or release.

A call is admitted only when its worst-case cost is reserved atomically (or, in
Lumen's soft mode, when the balance is positive), so concurrent calls can never
overspend a pool.  The worst case is also the call's *cap*: whatever an upstream
reports, a call is charged at most its cap, and anything above it is recorded as
an overrun for the admin instead of being billed to the user.  Every path ends in
:func:`settle` or :func:`release`; a stream records what it has delivered as it
goes (:func:`record_progress`), so the calls of a server that died are settled
for what they delivered by :mod:`lumen_jupyter.core.recovery`.  A call made with a
personal key reserves the same worst case on the key's own budget (see
:mod:`lumen_jupyter.core.keyring`), given back when the call ends.  The request row,
the ledger rows, the usage counters and the key counters of one call commit
together.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, select, update

from ..store import Store
from ..store.prepared import HotStatement
from ..store.schema import requests_log
from . import keyring
from .catalog import ModelSpec, PoolSpec
from .ledger import (
    add_to_balance,
    prepare_balance,
    read_balance,
    take_from_balance,
    write_ledger,
)
from .money import call_cost, token_cost
from .pools import next_refill_at
from .usage import Usage, record_usage

DEFAULT_OUTPUT_CAP = 4096
"""Output tokens assumed when a caller sets no ``max_tokens`` and the model has no limit."""

OUTPUT_CEILING = 1_000_000
"""Most output tokens a call may ask for from a model that declares no limit at all."""

# The statements of every model call: compiled once, run on the DB-API connection.
_INSERT_REQUEST = HotStatement(requests_log.insert().returning(requests_log.c.id))
_READ_FACTS = HotStatement(
    select(
        requests_log.c.status,
        requests_log.c.account_id,
        requests_log.c.reserved_micro,
        requests_log.c.metered,
        requests_log.c.model,
        requests_log.c.source,
        requests_log.c.key_id,
        requests_log.c.notebook,
        requests_log.c.conversation,
        requests_log.c.created_at,
        requests_log.c.cap_micro,
        requests_log.c.key_reserved_micro,
    ).where(requests_log.c.id == bindparam("p_id"))
)
_PENDING = (requests_log.c.id == bindparam("p_id"), requests_log.c.status == "pending")
_CLAIM_SETTLE = HotStatement(
    update(requests_log)
    .where(*_PENDING)
    .values(
        status=bindparam("p_status"),
        finished_at=bindparam("p_now"),
        input_tokens=bindparam("p_input"),
        output_tokens=bindparam("p_output"),
        coins_micro=bindparam("p_coins"),
        overrun_micro=bindparam("p_overrun"),
        estimated=bindparam("p_estimated"),
        http_status=bindparam("p_http"),
        duration_ms=bindparam("p_duration"),
    )
)
_PROGRESS = HotStatement(
    update(requests_log).where(*_PENDING).values(output_tokens=bindparam("p_output"))
)
_CLAIM_RELEASE = HotStatement(
    update(requests_log)
    .where(*_PENDING)
    .values(
        status=bindparam("p_status"),
        finished_at=bindparam("p_now"),
        http_status=bindparam("p_http"),
        duration_ms=bindparam("p_duration"),
        # a released call used nothing: clear the estimate and progress it carried
        input_tokens=0,
        output_tokens=0,
    )
)


@dataclass(frozen=True)
class RequestFacts:
    """What settling or releasing a pending request needs to know of it: fixed when
    it is admitted, so the admitter can hand them on instead of reading them back."""

    request_id: int
    account_id: int
    reserved_micro: int
    metered: bool
    model: str
    source: str
    key_id: int | None
    notebook: str | None
    conversation: str | None
    created_at: datetime
    cap_micro: int = 0
    """The most the call may be charged: its worst-case cost."""
    key_reserved_micro: int = 0
    """What the call reserved on its personal key's budget."""


def _read_pending(conn: Connection, request_id: int) -> RequestFacts | None:
    row = _READ_FACTS.run(conn, {"p_id": request_id}).first()
    if row is None or row.status != "pending":
        return None
    return RequestFacts(
        request_id=request_id,
        account_id=int(row.account_id),
        reserved_micro=int(row.reserved_micro),
        metered=bool(row.metered),
        model=str(row.model),
        source=str(row.source),
        key_id=row.key_id,
        notebook=row.notebook,
        conversation=row.conversation,
        created_at=row.created_at,
        cap_micro=int(row.cap_micro or 0),
        key_reserved_micro=int(row.key_reserved_micro or 0),
    )


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
    """Why a call was not admitted: ``no_pool``, ``pool_blocked``, ``exhausted`` or
    ``key`` (its personal key is expired, revoked or out of budget: see ``error``)."""

    reason: str
    balance_micro: int | None = None
    needed_micro: int | None = None
    next_refill_at: datetime | None = None
    error: Exception | None = None


def output_budget(
    model: ModelSpec, requested: int | None, default_cap: int = DEFAULT_OUTPUT_CAP
) -> int:
    """The most output tokens a call may produce: reserved, and forwarded upstream as
    the call's ``max_tokens``, so the reservation bounds what the upstream may bill.

    The caller's ``max_tokens`` when given, never above the model's own limit (or,
    for a model that declares none, its context length or :data:`OUTPUT_CEILING`);
    without one, the model's limit, else ``default_cap`` (within the context length).
    """
    limit = model.max_output_tokens or model.max_model_len or OUTPUT_CEILING
    if requested is None or requested <= 0:
        return model.max_output_tokens or min(default_cap, limit)
    return min(requested, limit)


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
    input_tokens: int = 0,
    instance_id: str | None = None,
) -> RequestFacts | Refusal:
    """Reserve and open a pending request; returns its facts (``request_id`` and what
    :func:`settle` and :func:`release` need), or why it was refused.

    The request row holds the input estimate (billed with the delivered output if
    the server dies mid-call) and the instance serving it (see ``recovery``)."""
    if pool is None:
        return Refusal("no_pool")
    if pool.blocked:
        return Refusal("pool_blocked")
    key_reserved = 0
    if ctx.key_id is not None:
        # the key's budget is hard in both billing modes: it is what its owner chose
        if not keyring.reserve_on_key(conn, ctx.key_id, worst_case_micro, now):
            return Refusal(
                "key", error=keyring.refusal_for(conn, ctx.key_id, worst_case_micro, now)
            )
        key_reserved = worst_case_micro
    metered = not pool.unlimited
    reserved = 0
    if metered:
        prepare_balance(store, conn, ctx.account_id, pool, now)
        reserved = worst_case_micro if strict else 0
        if not take_from_balance(conn, ctx.account_id, reserved, now, strict=strict):
            if ctx.key_id is not None:
                keyring.return_key_reservation(conn, ctx.key_id, key_reserved)
            current = read_balance(conn, ctx.account_id)
            return Refusal(
                "exhausted",
                balance_micro=current.balance_micro if current else 0,
                needed_micro=worst_case_micro,
                next_refill_at=next_refill_at(current.last_refill_at if current else None, pool),
            )
    request_id = _INSERT_REQUEST.run(
        conn,
        {
            "account_id": ctx.account_id,
            "created_at": now,
            "model": model,
            "endpoint": endpoint,
            "key_id": ctx.key_id,
            "source": ctx.source,
            "notebook": ctx.notebook,
            "cell": ctx.cell,
            "conversation": ctx.conversation,
            "reserved_micro": reserved,
            "cap_micro": worst_case_micro,
            "overrun_micro": 0,
            "key_reserved_micro": key_reserved,
            "instance_id": instance_id,
            "status": "pending",
            "metered": metered,
            "estimated": False,
            "input_tokens": input_tokens,
            "output_tokens": 0,
            "coins_micro": 0,
        },
    ).scalar()
    if reserved:
        write_ledger(conn, ctx.account_id, "reserve", -reserved, now, request_id=request_id)
    return RequestFacts(
        request_id=request_id,
        account_id=ctx.account_id,
        reserved_micro=reserved,
        metered=metered,
        model=model,
        source=ctx.source,
        key_id=ctx.key_id,
        notebook=ctx.notebook,
        conversation=ctx.conversation,
        created_at=now,
        cap_micro=worst_case_micro,
        key_reserved_micro=key_reserved,
    )


@dataclass(frozen=True)
class Settled:
    request_id: int
    coins_micro: int
    input_tokens: int
    output_tokens: int
    overrun_micro: int = 0
    """What the reported usage would have cost above the call's cap (not billed)."""


def record_progress(conn: Connection, request_id: int, output_tokens: int) -> bool:
    """Note the output a pending call has delivered so far (billed if its server dies).

    Returns ``False`` when the call is no longer pending."""
    result = _PROGRESS.run(conn, {"p_id": request_id, "p_output": output_tokens})
    return result.rowcount == 1


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
    facts: RequestFacts | None = None,
) -> Settled | None:
    """Charge the real cost of a pending call, never above its cap, and count its usage.

    ``status`` is ``ok`` or ``aborted`` (a stream cut short, billed for what was
    delivered).  A cost above the cap is charged as the cap, and the difference is
    recorded on the request as its overrun.  Returns ``None`` when the call was
    already settled or released.
    ``facts``, as :func:`admit` returned them, spare reading the request back; the
    claim is still one conditional UPDATE on its ``pending`` status.
    """
    row = facts if facts is not None else _read_pending(conn, request_id)
    if row is None:
        return None
    charged = min(usage.coins_micro, row.cap_micro)
    overrun = usage.coins_micro - charged
    usage = Usage(usage.input_tokens, usage.output_tokens, charged)
    claimed = _CLAIM_SETTLE.run(
        conn,
        {
            "p_id": request_id,
            "p_status": status,
            "p_now": now,
            "p_input": usage.input_tokens,
            "p_output": usage.output_tokens,
            "p_coins": charged,
            "p_overrun": overrun,
            "p_estimated": estimated,
            "p_http": http_status,
            "p_duration": _duration_ms(row.created_at, now),
        },
    )
    if claimed.rowcount != 1:
        return None
    if row.key_id is not None:
        # the charge (at most this reservation) is counted as spent by record_usage; the
        # key's row is locked before the balance's, in the order admit locks them
        keyring.return_key_reservation(conn, row.key_id, row.key_reserved_micro)
    if row.metered:
        refund = row.reserved_micro - usage.coins_micro
        add_to_balance(conn, row.account_id, refund, "settle", now, request_id=request_id)
    record_usage(
        store,
        conn,
        row.account_id,
        model=row.model,
        source=row.source,
        key_id=row.key_id,
        notebook=row.notebook,
        usage=usage,
        now=now,
        conversation=row.conversation,
    )
    return Settled(request_id, charged, usage.input_tokens, usage.output_tokens, overrun)


def release(
    conn: Connection,
    request_id: int,
    *,
    status: str,
    http_status: int | None,
    now: datetime,
    facts: RequestFacts | None = None,
) -> bool:
    """Give back a pending call's reservation (the call failed, nothing delivered).

    ``facts``, as :func:`admit` returned them, spare reading the request back."""
    row = facts if facts is not None else _read_pending(conn, request_id)
    if row is None:
        return False
    claimed = _CLAIM_RELEASE.run(
        conn,
        {
            "p_id": request_id,
            "p_status": status,
            "p_now": now,
            "p_http": http_status,
            "p_duration": _duration_ms(row.created_at, now),
        },
    )
    if claimed.rowcount != 1:
        return False
    if row.key_id is not None:
        keyring.return_key_reservation(conn, row.key_id, row.key_reserved_micro)
    if row.metered and row.reserved_micro:
        add_to_balance(
            conn,
            row.account_id,
            row.reserved_micro,
            "release",
            now,
            request_id=request_id,
        )
    return True


def _duration_ms(started: datetime, now: datetime) -> int:
    return max(0, int((now - started).total_seconds() * 1000))
