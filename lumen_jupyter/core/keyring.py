"""A user's personal API keys: create (shown once), save, rename, revoke, look up.

The raw key exists only in the return value of :func:`create_key`.  A key is
created as a *draft* (unusable, unlisted) so the seed's dialog works - show the
key, let the user name it, then Save (activate) or Discard (delete).  Revoking
keeps the row and its counters; the key stops working at once.

A key may carry its own limits, set when it is made: a coin *budget* and an
*expiry*.  The budget is enforced like the pool's balance: each call reserves its
worst case on the key with one conditional UPDATE (:func:`reserve_on_key`), so
``spent + reserved <= budget`` holds however many calls run at once, and a call
ending hands its reservation back (:func:`return_key_reservation`) while its
charge, never above that reservation, is counted as spent.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, delete, or_, select, update

from ..store.prepared import HotStatement
from ..store.schema import api_keys
from . import paging
from .errors import AuthenticationFailed, BadRequest, BudgetExhausted, Conflict, NotFound
from .keys import generate_key, hash_key, key_hint, looks_like_key
from .money import format_coins

DRAFT_LIFETIME = timedelta(hours=1)
MAX_NAME_LENGTH = 100

# Statements of every keyed call, built once (SQLAlchemy caches their compiled form).
_FIND_BY_HASH = HotStatement(
    select(
        api_keys.c.id,
        api_keys.c.account_id,
        api_keys.c.name,
        api_keys.c.status,
        api_keys.c.expires_at,
    ).where(api_keys.c.key_hash == bindparam("p_hash"))
)
_KEY_STATUS = HotStatement(select(api_keys.c.status).where(api_keys.c.id == bindparam("p_id")))
_EXPIRY_OK = or_(api_keys.c.expires_at.is_(None), api_keys.c.expires_at > bindparam("p_now"))
_KEY_USABLE = HotStatement(
    select(api_keys.c.status, api_keys.c.expires_at).where(api_keys.c.id == bindparam("p_id"))
)
_RESERVE = HotStatement(
    update(api_keys)
    .where(
        api_keys.c.id == bindparam("p_id"),
        api_keys.c.status == "active",
        _EXPIRY_OK,
        or_(
            api_keys.c.budget_micro.is_(None),
            api_keys.c.coins_micro + api_keys.c.reserved_micro + bindparam("p_amount")
            <= api_keys.c.budget_micro,
        ),
    )
    .values(reserved_micro=api_keys.c.reserved_micro + bindparam("p_amount"))
)
_UNRESERVE = HotStatement(
    update(api_keys)
    .where(api_keys.c.id == bindparam("p_id"))
    .values(reserved_micro=api_keys.c.reserved_micro - bindparam("p_amount"))
)
_KEY_BUDGET = HotStatement(
    select(
        api_keys.c.name,
        api_keys.c.status,
        api_keys.c.expires_at,
        api_keys.c.budget_micro,
        api_keys.c.coins_micro,
        api_keys.c.reserved_micro,
    ).where(api_keys.c.id == bindparam("p_id"))
)
_COUNT_USE = HotStatement(
    update(api_keys)
    .where(api_keys.c.id == bindparam("p_id"))
    .values(
        requests=api_keys.c.requests + 1,
        input_tokens=api_keys.c.input_tokens + bindparam("p_input"),
        output_tokens=api_keys.c.output_tokens + bindparam("p_output"),
        coins_micro=api_keys.c.coins_micro + bindparam("p_coins"),
        last_used_at=bindparam("p_now"),
    )
)


@dataclass(frozen=True)
class KeyOwner:
    """What a valid key resolves to."""

    key_id: int
    account_id: int
    name: str
    expires_at: datetime | None = None


def clean_name(name: Any) -> str:
    if not isinstance(name, str):
        raise BadRequest("a key name must be a string", param="name")
    text = name.strip()
    if not text:
        raise BadRequest("a key name must not be empty", param="name")
    if len(text) > MAX_NAME_LENGTH:
        raise BadRequest(f"a key name has at most {MAX_NAME_LENGTH} characters", param="name")
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in text):
        raise BadRequest("a key name must not contain control characters", param="name")
    return text


def create_key(
    conn: Connection,
    account_id: int,
    secret: bytes,
    now: datetime,
    name: str | None,
    *,
    budget_micro: int | None = None,
    expires_at: datetime | None = None,
) -> tuple[int, str]:
    """Make a new key; active when named, else a draft. Returns (id, raw key).

    ``budget_micro`` (at least one micro-coin) and ``expires_at`` (in the future)
    are the key's own limits; ``None`` leaves it limited only by the pool."""
    if budget_micro is not None and budget_micro <= 0:
        raise BadRequest("a key's budget must be more than 0 coins", param="budget")
    if expires_at is not None and expires_at <= now:
        raise BadRequest("a key's expiry must be in the future", param="expires_at")
    raw = generate_key()
    values = {
        "account_id": account_id,
        "name": clean_name(name) if name is not None else "",
        "key_hash": hash_key(raw, secret),
        "hint": key_hint(raw),
        "status": "active" if name is not None else "draft",
        "created_at": now,
        "requests": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "coins_micro": 0,
        "budget_micro": budget_micro,
        "reserved_micro": 0,
        "expires_at": expires_at,
    }
    result = conn.execute(api_keys.insert().values(**values))
    key_id = result.inserted_primary_key
    assert key_id is not None
    return int(key_id[0]), raw


def _key_row(conn: Connection, account_id: int, key_id: int) -> Any:
    row = conn.execute(
        select(api_keys).where(api_keys.c.id == key_id, api_keys.c.account_id == account_id)
    ).first()
    if row is None:
        raise NotFound(f"no key with id {key_id}")
    return row


def save_key(
    conn: Connection,
    account_id: int,
    key_id: int,
    name: Any,
    now: datetime,
    limits: dict[str, Any] | None = None,
) -> None:
    """Name a key; a draft becomes active (the dialog's Save Key).

    ``limits`` (``budget_micro``, ``expires_at``) may be given while the key is a
    draft, i.e. as it is made; a key in use keeps the limits it was made with."""
    text = clean_name(name)
    row = _key_row(conn, account_id, key_id)
    if row.status == "draft" and row.created_at < now - DRAFT_LIFETIME:
        conn.execute(delete(api_keys).where(api_keys.c.id == key_id))
        raise NotFound("this new key was never saved and has expired; create another one")
    values: dict[str, Any] = {"name": text}
    if limits:
        if row.status != "draft":
            raise Conflict(
                "a key's budget and expiry are set when it is made; "
                "revoke this key and create another one"
            )
        values.update(limits)
    values["status"] = "active" if row.status == "draft" else row.status
    conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(**values))


def revoke_key(conn: Connection, account_id: int, key_id: int, now: datetime) -> str:
    """Revoke an active key (kept, struck through) or discard a draft (deleted).

    Returns what happened: ``revoked``, ``discarded`` or ``already revoked``.
    """
    row = _key_row(conn, account_id, key_id)
    if row.status == "draft":
        conn.execute(delete(api_keys).where(api_keys.c.id == key_id))
        return "discarded"
    if row.status == "revoked":
        return "already revoked"
    conn.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.status == "active")
        .values(status="revoked", revoked_at=now)
    )
    return "revoked"


def _listed(account_id: int, include_revoked: bool) -> tuple[Any, ...]:
    statuses = ["active", "revoked"] if include_revoked else ["active"]
    return (api_keys.c.account_id == account_id, api_keys.c.status.in_(statuses))


def list_keys(conn: Connection, account_id: int, include_revoked: bool) -> list[Any]:
    return list(
        conn.execute(
            select(api_keys)
            .where(*_listed(account_id, include_revoked))
            .order_by(api_keys.c.name, api_keys.c.id)
        )
    )


def list_keys_page(
    conn: Connection, account_id: int, include_revoked: bool, page: paging.Page
) -> tuple[list[Any], int]:
    """A page of the account's keys in the profile's order (by name as
    :func:`~.paging.name_order` compares names, then by id), and how many there are.

    A part of the list costs a read of every key's id and name (to order them) and of
    the page's rows only."""
    where = _listed(account_id, include_revoked)
    if page.everything:
        rows = paging.in_name_order(
            list(conn.execute(select(api_keys).where(*where))),
            name=lambda row: str(row.name),
            tie=lambda row: int(row.id),
        )
        return rows, len(rows)
    order = paging.in_name_order(
        list(conn.execute(select(api_keys.c.id, api_keys.c.name).where(*where))),
        name=lambda row: str(row.name),
        tie=lambda row: int(row.id),
    )
    wanted = [int(row.id) for row in page.of(order)]
    if not wanted:
        return [], len(order)
    found = {
        int(row.id): row for row in conn.execute(select(api_keys).where(api_keys.c.id.in_(wanted)))
    }
    return [found[key_id] for key_id in wanted], len(order)


def find_active_key(conn: Connection, raw: str, secret: bytes) -> KeyOwner | None:
    """Resolve a presented key. The lookup is by HMAC digest (an index seek on a
    random value), so its timing reveals nothing useful about stored keys."""
    if not looks_like_key(raw):
        return None
    return find_active_digest(conn, hash_key(raw, secret))


def find_active_digest(conn: Connection, digest: str) -> KeyOwner | None:
    """:func:`find_active_key` for a key already hashed."""
    row = _FIND_BY_HASH.run(conn, {"p_hash": digest}).first()
    if row is None or row.status != "active":
        return None
    return KeyOwner(
        key_id=int(row.id),
        account_id=int(row.account_id),
        name=str(row.name),
        expires_at=row.expires_at,
    )


def is_active(conn: Connection, key_id: int) -> bool:
    """Whether the key may still be used (checked again as each call is admitted)."""
    return bool(_KEY_STATUS.run(conn, {"p_id": key_id}).scalar() == "active")


def check_usable(conn: Connection, key_id: int, now: datetime) -> None:
    """Raise the answer to a call made with a key that is revoked, unknown or expired."""
    row = _KEY_USABLE.run(conn, {"p_id": key_id}).first()
    if row is None or row.status != "active":
        raise AuthenticationFailed(
            "Invalid API key: it is unknown or has been revoked", code="invalid_api_key"
        )
    if row.expires_at is not None and row.expires_at <= now:
        raise key_expired(row.expires_at)


def key_expired(expires_at: datetime) -> AuthenticationFailed:
    return AuthenticationFailed(
        f"This API key expired at {expires_at.strftime('%Y-%m-%dT%H:%M:%SZ')}; "
        "create a new key (`%lumen keys new NAME`, or the Keys section of the Profile page)",
        code="key_expired",
    )


def reserve_on_key(conn: Connection, key_id: int, amount_micro: int, now: datetime) -> bool:
    """Reserve ``amount_micro`` on a key's budget: one conditional UPDATE that also
    requires the key active and unexpired.  ``False`` when refused (see
    :func:`refusal_for`); a key without a budget always has room."""
    result = _RESERVE.run(conn, {"p_id": key_id, "p_amount": amount_micro, "p_now": now})
    return bool(result.rowcount == 1)


def return_key_reservation(conn: Connection, key_id: int, amount_micro: int) -> None:
    """Hand back what a call reserved on its key (its charge is counted by :func:`count_use`).

    Runs even for nothing reserved: it locks the key's row before the balance's, in the
    order admission locks them, so concurrent calls on PostgreSQL never deadlock."""
    _UNRESERVE.run(conn, {"p_id": key_id, "p_amount": amount_micro})


def refusal_for(conn: Connection, key_id: int, amount_micro: int, now: datetime) -> Exception:
    """Why :func:`reserve_on_key` refused: revoked or expired (401), budget spent (429)."""
    row = _KEY_BUDGET.run(conn, {"p_id": key_id}).first()
    if row is None or row.status != "active":
        return AuthenticationFailed(
            "Invalid API key: it is unknown or has been revoked", code="invalid_api_key"
        )
    if row.expires_at is not None and row.expires_at <= now:
        return key_expired(row.expires_at)
    budget = int(row.budget_micro or 0)
    spent = int(row.coins_micro)
    left = max(0, budget - spent - int(row.reserved_micro))
    if budget - spent <= 0:
        message = (
            f"The budget of API key '{row.name}' is spent ({format_coins(spent)} of "
            f"{format_coins(budget)} coins); create a new key with a budget of its own"
        )
    else:
        message = (
            f"API key '{row.name}' has {format_coins(left)} of its {format_coins(budget)} "
            f"coins left (calls in flight count at their worst case) and this request may "
            f"cost up to {format_coins(amount_micro)}; lower max_tokens or wait for them to end"
        )
    return BudgetExhausted(
        message,
        code="key_budget_exhausted",
        key_budget=format_coins(budget),
        key_spent=format_coins(spent),
    )


def count_use(
    conn: Connection,
    key_id: int,
    input_tokens: int,
    output_tokens: int,
    coins_micro: int,
    now: datetime,
) -> None:
    """Add one call to a key's counters (inside the caller's transaction)."""
    _COUNT_USE.run(
        conn,
        {
            "p_id": key_id,
            "p_input": input_tokens,
            "p_output": output_tokens,
            "p_coins": coins_micro,
            "p_now": now,
        },
    )


def purge_stale_drafts(conn: Connection, now: datetime) -> int:
    """Delete drafts nobody saved; a dialog left open for an hour is abandoned."""
    result = conn.execute(
        delete(api_keys).where(
            api_keys.c.status == "draft", api_keys.c.created_at < now - DRAFT_LIFETIME
        )
    )
    return int(result.rowcount)
