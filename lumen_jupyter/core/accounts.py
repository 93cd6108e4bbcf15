"""Accounts: one row per Jupyter user, created on first sight."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select

from ..store import Store
from ..store.schema import accounts


@dataclass(frozen=True)
class Identity:
    """Who the user is, as Jupyter (or configuration) knows them."""

    username: str
    display_name: str
    email: str | None = None
    initials: str | None = None
    groups: frozenset[str] = frozenset()


def account_id(conn: Connection, username: str) -> int | None:
    row = conn.execute(select(accounts.c.id).where(accounts.c.username == username)).first()
    return None if row is None else int(row[0])


def ensure_account(store: Store, conn: Connection, username: str, now: datetime) -> int:
    """The account id of ``username``, creating the account on first use."""
    found = account_id(conn, username)
    if found is not None:
        return found
    store.insert_ignore(conn, accounts, {"username": username, "created_at": now})
    created = account_id(conn, username)
    assert created is not None
    return created
