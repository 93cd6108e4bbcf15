"""A user's personal API keys: create (shown once), save, rename, revoke, look up.

The raw key exists only in the return value of :func:`create_key`.  A key is
created as a *draft* (unusable, unlisted) so the seed's dialog works - show the
key, let the user name it, then Save (activate) or Discard (delete).  Revoking
keeps the row and its counters; the key stops working at once.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, delete, select, update

from ..store.prepared import HotStatement
from ..store.schema import api_keys
from .errors import BadRequest, NotFound
from .keys import generate_key, hash_key, key_hint, looks_like_key

DRAFT_LIFETIME = timedelta(hours=1)
MAX_NAME_LENGTH = 100

# Statements of every keyed call, built once (SQLAlchemy caches their compiled form).
_FIND_BY_HASH = HotStatement(
    select(api_keys.c.id, api_keys.c.account_id, api_keys.c.name, api_keys.c.status).where(
        api_keys.c.key_hash == bindparam("p_hash")
    )
)
_KEY_STATUS = HotStatement(select(api_keys.c.status).where(api_keys.c.id == bindparam("p_id")))
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
    conn: Connection, account_id: int, secret: bytes, now: datetime, name: str | None
) -> tuple[int, str]:
    """Make a new key; active when named, else a draft. Returns (id, raw key)."""
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


def save_key(conn: Connection, account_id: int, key_id: int, name: Any, now: datetime) -> None:
    """Name a key; a draft becomes active (the dialog's Save Key)."""
    text = clean_name(name)
    row = _key_row(conn, account_id, key_id)
    if row.status == "draft" and row.created_at < now - DRAFT_LIFETIME:
        conn.execute(delete(api_keys).where(api_keys.c.id == key_id))
        raise NotFound("this new key was never saved and has expired; create another one")
    status = "active" if row.status == "draft" else row.status
    conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(name=text, status=status))


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


def list_keys(conn: Connection, account_id: int, include_revoked: bool) -> list[Any]:
    statuses = ["active", "revoked"] if include_revoked else ["active"]
    return list(
        conn.execute(
            select(api_keys)
            .where(api_keys.c.account_id == account_id, api_keys.c.status.in_(statuses))
            .order_by(api_keys.c.name, api_keys.c.id)
        )
    )


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
    return KeyOwner(key_id=int(row.id), account_id=int(row.account_id), name=str(row.name))


def is_active(conn: Connection, key_id: int) -> bool:
    """Whether the key may still be used (checked again as each call is admitted)."""
    return bool(_KEY_STATUS.run(conn, {"p_id": key_id}).scalar() == "active")


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
