"""Hot statements write and read exactly what SQLAlchemy's own execution does."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
from sqlalchemy import bindparam, select, update

from lumen_jupyter.store import Store
from lumen_jupyter.store.prepared import HotStatement
from lumen_jupyter.store.schema import accounts, api_keys, requests_log, usage_daily

WHEN = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=timezone.utc)

INSERT_REQUEST = HotStatement(requests_log.insert().returning(requests_log.c.id))
READ_REQUEST = HotStatement(
    select(
        requests_log.c.id,
        requests_log.c.created_at,
        requests_log.c.finished_at,
        requests_log.c.estimated,
        requests_log.c.metered,
        requests_log.c.input_tokens,
    ).where(requests_log.c.id == bindparam("p_id"))
)
FINISH_PENDING = HotStatement(
    update(requests_log)
    .where(requests_log.c.id == bindparam("p_id"), requests_log.c.status == "pending")
    .values(status=bindparam("p_status"), finished_at=bindparam("p_now"))
)


def _account(store: Store) -> int:
    with store.write() as conn:
        return int(
            conn.execute(
                accounts.insert().values(username="alice", created_at=WHEN).returning(accounts.c.id)
            ).scalar_one()
        )


def _open_request(store: Store, account: int, **extra: object) -> int:
    values = {
        "account_id": account,
        "created_at": WHEN,
        "model": "demo-free",
        "endpoint": "chat",
        "source": "api",
        "status": "pending",
        **extra,
    }
    with store.write() as conn:
        return int(INSERT_REQUEST.run(conn, values).scalar())


def test_an_insert_stores_what_sqlalchemy_reads_back(store: Store) -> None:
    account = _account(store)
    request_id = _open_request(store, account)
    with store.read() as conn:
        row = conn.execute(select(requests_log).where(requests_log.c.id == request_id)).one()
    assert row.created_at == WHEN and row.created_at.tzinfo is not None
    # columns left out take their Python-side defaults, as with Connection.execute
    assert (row.input_tokens, row.reserved_micro, row.estimated, row.metered) == (0, 0, False, True)
    assert row.finished_at is None


def test_a_select_reads_what_sqlalchemy_wrote(store: Store) -> None:
    account = _account(store)
    other_zone = WHEN.astimezone(timezone(timedelta(hours=-7)))
    with store.write() as conn:
        request_id = conn.execute(
            requests_log.insert()
            .values(
                account_id=account,
                created_at=other_zone,
                model="demo-pro",
                endpoint="chat",
                source="kernel",
                status="ok",
                estimated=True,
                metered=False,
                input_tokens=12,
            )
            .returning(requests_log.c.id)
        ).scalar_one()
    with store.read() as conn:
        row = READ_REQUEST.run(conn, {"p_id": request_id}).first()
        assert READ_REQUEST.run(conn, {"p_id": request_id + 1}).first() is None
    assert row.id == request_id and row[0] == request_id
    assert row.created_at == WHEN and row.created_at.tzinfo == timezone.utc
    assert (row.finished_at, row.estimated, row.metered, row.input_tokens) == (
        None,
        True,
        False,
        12,
    )


def test_an_update_counts_its_rows_and_literals_stay_in_force(store: Store) -> None:
    account = _account(store)
    request_id = _open_request(store, account)
    later = WHEN + timedelta(seconds=3)
    with store.write() as conn:
        first = FINISH_PENDING.run(conn, {"p_id": request_id, "p_status": "ok", "p_now": later})
        again = FINISH_PENDING.run(conn, {"p_id": request_id, "p_status": "ok", "p_now": later})
    assert (first.rowcount, again.rowcount) == (1, 0)  # "pending" is a literal of the statement
    with store.read() as conn:
        row = conn.execute(select(requests_log).where(requests_log.c.id == request_id)).one()
    assert (row.status, row.finished_at) == ("ok", later)


def test_upserts_and_dates_match_on_both_paths(store: Store) -> None:
    account = _account(store)
    values = {
        "account_id": account,
        "day": date(2026, 3, 4),
        "model": "demo-free",
        "source": "api",
        "key_id": 0,
        "notebook": "",
        "requests": 1,
        "input_tokens": 5,
        "output_tokens": 7,
        "coins_micro": 11,
    }
    counts = ("requests", "input_tokens", "output_tokens", "coins_micro")
    keys = ("account_id", "day", "model", "source", "key_id", "notebook")
    with store.write() as conn:
        store.upsert(conn, usage_daily, values, keys=keys, increments=counts)
        store.upsert(conn, usage_daily, values, keys=keys, increments=counts)
    with store.read() as conn:
        rows = conn.execute(select(usage_daily)).all()
    assert len(rows) == 1
    assert rows[0].day == date(2026, 3, 4)
    assert (rows[0].requests, rows[0].coins_micro) == (2, 22)


def test_insert_ignore_tells_whether_it_inserted(store: Store) -> None:
    account = _account(store)
    row = {
        "account_id": account,
        "name": "k",
        "key_hash": "h" * 64,
        "hint": "sk_…abcd",
        "status": "active",
        "created_at": WHEN,
    }
    with store.write() as conn:
        assert store.insert_ignore(conn, api_keys, {"id": 7, **row}) is True
        assert store.insert_ignore(conn, api_keys, {"id": 7, **row}) is False


def test_a_missing_parameter_is_named(store: Store) -> None:
    with store.read() as conn, pytest.raises(KeyError, match="p_id"):
        READ_REQUEST.run(conn, {})


def test_a_computed_default_must_be_passed(store: Store) -> None:
    from sqlalchemy import Column, Integer, MetaData, Table

    table = Table(
        "t",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("n", Integer, default=lambda: 1),
    )
    with store.read() as conn, pytest.raises(ValueError, match=r"t\.n has a computed default"):
        HotStatement(table.insert()).run(conn, {"id": 1})
