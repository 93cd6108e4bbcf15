"""A personal key's own budget and expiry, on SQLite and PostgreSQL.

The budget is a reservation like the pool's: a call reserves its worst case on the
key, so ``spent + reserved <= budget`` at every moment, however calls interleave;
ending a call (settle, release, or recovery after a crash) gives the reservation
back and counts the charge as spent.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from lumen_jupyter.core import key_limits, keyring, recovery
from lumen_jupyter.core.billing import CallContext
from lumen_jupyter.core.clock import FakeClock, isoformat_z
from lumen_jupyter.core.errors import AuthenticationFailed, BadRequest, BudgetExhausted
from lumen_jupyter.core.money import MICRO
from lumen_jupyter.core.service import LumenService
from lumen_jupyter.store import Store
from lumen_jupyter.store.schema import api_keys, requests_log
from tests.core.helpers import (
    WORST,
    MakeService,
    assert_ledger_invariant,
    catalog,
    pool,
    who,
)

ALICE = who("alice")


@pytest.fixture
def service(make_service: MakeService) -> LumenService:
    return make_service(catalog(pool(100)))


def keyed(service: LumenService, key_id: int) -> CallContext:
    return CallContext(account_id=service.account("alice"), source="api", key_id=key_id)


def call(service: LumenService, key_id: int, worst: int = WORST) -> Any:
    return service.calls.admit(
        ALICE, keyed(service, key_id), service.catalog.models["paid"], worst, "chat"
    )


def key_row(store: Store, key_id: int) -> Any:
    with store.read() as conn:
        return conn.execute(select(api_keys).where(api_keys.c.id == key_id)).one()


def assert_key_books(store: Store) -> None:
    """Each key's reservation is what its pending calls reserved; spent + reserved <= budget."""
    with store.read() as conn:
        keys = conn.execute(select(api_keys)).all()
        pending = conn.execute(
            select(requests_log.c.key_id, requests_log.c.key_reserved_micro).where(
                requests_log.c.status == "pending"
            )
        ).all()
        charged = conn.execute(
            select(requests_log.c.key_id, requests_log.c.coins_micro).where(
                requests_log.c.status != "pending"
            )
        ).all()
    for key in keys:
        held = sum(int(r) for k, r in pending if k == key.id)
        assert int(key.reserved_micro) == held, f"key {key.id}: {key.reserved_micro} != {held}"
        assert int(key.coins_micro) == sum(int(c) for k, c in charged if k == key.id)
        if key.budget_micro is not None:
            assert int(key.coins_micro) + int(key.reserved_micro) <= int(key.budget_micro)


def test_create_with_budget_and_expiry(service: LumenService, clock: FakeClock) -> None:
    made = service.create_key(ALICE, "workshop", budget="2.5", expires_in="7d")
    assert made["budget_micro"] == 2_500_000
    assert made["budget"] == "2.5"
    assert made["expires_at"] == isoformat_z(clock.now() + timedelta(days=7))
    assert made["expired"] is False
    listed = service.list_keys(ALICE)
    assert [(k["name"], k["budget"], k["reserved_micro"]) for k in listed] == [
        ("workshop", "2.5", 0)
    ]
    plain = service.create_key(ALICE, "plain")
    assert plain["budget_micro"] is None and plain["budget"] is None
    assert plain["expires_at"] is None


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"budget": 0}, "budget"),
        ({"budget": -1}, "budget"),
        ({"budget": "lots"}, "budget"),
        ({"budget": True}, "budget"),
        ({"budget": [5]}, "budget"),
        ({"expires_in": "7 days"}, "expires_in"),
        ({"expires_in": "0d"}, "expires_in"),
        ({"expires_in": "99999w"}, "expires_in"),
        ({"expires_in": 1.5}, "expires_in"),
        ({"expires_at": "tomorrow"}, "expires_at"),
        ({"expires_at": "2020-01-01T00:00:00Z"}, "expires_at"),
        ({"expires_at": "2099-01-01", "expires_in": "1d"}, "expires_in"),
    ],
)
def test_bad_limits_are_refused_and_nothing_is_made(
    service: LumenService, fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        service.create_key(ALICE, "bad", **fields)
    assert caught.value.details["param"] == param
    assert service.list_keys(ALICE) == []


def test_lifetimes() -> None:
    assert key_limits.parse_lifetime("7d") == timedelta(days=7)
    assert key_limits.parse_lifetime("12h") == timedelta(hours=12)
    assert key_limits.parse_lifetime("30m") == timedelta(minutes=30)
    assert key_limits.parse_lifetime("2w") == timedelta(weeks=2)
    assert key_limits.parse_lifetime(90) == timedelta(seconds=90)
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert key_limits.parse_expiry("2030-01-02T00:00:00Z", None, now) == now + timedelta(days=1)
    assert key_limits.parse_expiry("2030-01-02T01:00:00+01:00", None, now) == now + timedelta(
        days=1
    )


def test_budget_is_reserved_and_spent(service: LumenService, store: Store) -> None:
    key_id = service.create_key(ALICE, "k", budget=2 * WORST / MICRO)["id"]
    first = call(service, key_id)
    assert int(key_row(store, key_id).reserved_micro) == WORST
    second = call(service, key_id)
    assert int(key_row(store, key_id).reserved_micro) == 2 * WORST
    with pytest.raises(BudgetExhausted) as caught:
        call(service, key_id)  # both worst cases are held: no room for a third
    assert caught.value.code == "key_budget_exhausted"
    assert caught.value.status == 429 and not caught.value.retryable
    assert "may cost up to 1.1" in caught.value.message
    service.calls.settle(first, 100, 100)  # 100_000 + 200_000 micro
    service.calls.release(second, status="error", http_status=502)
    row = key_row(store, key_id)
    assert (int(row.coins_micro), int(row.reserved_micro)) == (300_000, 0)
    assert_key_books(store)
    assert_ledger_invariant(store)
    third = call(service, key_id)  # 1.9 left: one more worst case fits
    service.calls.settle(third, 100, 500)
    row = key_row(store, key_id)
    assert int(row.coins_micro) == 300_000 + WORST
    with pytest.raises(BudgetExhausted):
        call(service, key_id)
    smaller = call(service, key_id, worst=500_000)  # 0.8 left: a smaller call fits
    service.calls.settle(smaller, 500, 0)
    assert_key_books(store)
    assert_ledger_invariant(store)


def test_spent_budget_message(service: LumenService, store: Store) -> None:
    key_id = service.create_key(ALICE, "k", budget="1.1")["id"]
    service.calls.settle(call(service, key_id), 100, 500)
    with pytest.raises(BudgetExhausted) as caught:
        call(service, key_id, worst=1)
    assert "budget of API key 'k' is spent (1.1 of 1.1 coins)" in caught.value.message
    body = caught.value.to_json()["error"]
    assert body["type"] == "insufficient_quota"
    assert body["key_budget"] == "1.1" and body["key_spent"] == "1.1"


def test_a_pool_refusal_gives_the_key_reservation_back(
    make_service: MakeService, store: Store
) -> None:
    service = make_service(catalog(pool(1)))  # the pool cannot cover a 1.1 worst case
    key_id = service.create_key(ALICE, "k", budget=5)["id"]
    with pytest.raises(BudgetExhausted) as caught:
        call(service, key_id)
    assert caught.value.code == "coins_exhausted"
    assert int(key_row(store, key_id).reserved_micro) == 0
    assert_key_books(store)
    assert_ledger_invariant(store)


def test_key_budget_holds_in_soft_billing_and_unlimited_pools(
    make_service: MakeService, store: Store
) -> None:
    for service in (
        make_service(catalog(pool(100)), strict_billing=False),
        make_service(catalog(pool(None))),
    ):
        key_id = service.create_key(ALICE, f"k{id(service)}", budget="1.1")["id"]
        admitted = call(service, key_id)
        with pytest.raises(BudgetExhausted):
            call(service, key_id)
        service.calls.settle(admitted, 100, 500)
        assert int(key_row(store, key_id).coins_micro) == WORST
    assert_key_books(store)
    assert_ledger_invariant(store)


def test_expired_key_is_refused(service: LumenService, store: Store, clock: FakeClock) -> None:
    key_id = service.create_key(ALICE, "short", expires_in="1h")["id"]
    service.calls.settle(call(service, key_id), 1, 1)
    clock.advance(timedelta(hours=1))
    with pytest.raises(AuthenticationFailed) as caught:
        call(service, key_id)
    assert caught.value.code == "key_expired"
    assert caught.value.status == 401
    assert "expired at" in caught.value.message
    listed = service.list_keys(ALICE)
    assert listed[0]["expired"] is True
    assert_key_books(store)


def test_expiry_checked_by_the_reservation_itself(
    service: LumenService, store: Store, clock: FakeClock
) -> None:
    """The conditional UPDATE refuses an expired key even if the earlier check passed."""
    key_id = service.create_key(ALICE, "k", budget=5)["id"]
    with store.write() as conn:
        conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(expires_at=clock.now()))
        assert not keyring.reserve_on_key(conn, key_id, 1, clock.now())
        assert isinstance(keyring.refusal_for(conn, key_id, 1, clock.now()), AuthenticationFailed)


def test_recovery_settles_and_releases_on_the_key(make_service: MakeService, store: Store) -> None:
    cat = catalog(pool(100))
    dead = make_service(cat)
    dead.register_instance(recovery.Instance("dead", socket.gethostname(), exited_pid()))
    key_id = dead.create_key(ALICE, "k", budget=5)["id"]
    streaming = call(dead, key_id)
    call(dead, key_id)  # delivered nothing
    with store.write() as conn:
        assert dead.calls.record_progress_in(conn, streaming, 120) is None
    assert int(key_row(store, key_id).reserved_micro) == 2 * WORST
    survivor = make_service(cat)
    survivor.register_instance(recovery.Instance("survivor", socket.gethostname(), os.getpid()))
    assert survivor.recover() == recovery.Recovered(instances=1, settled=1, released=1)
    row = key_row(store, key_id)
    assert (int(row.coins_micro), int(row.reserved_micro)) == (240_000, 0)
    assert_key_books(store)
    assert_ledger_invariant(store)


def exited_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_threads_never_overspend_a_key(make_service: MakeService, store: Store) -> None:
    """24 threads, 3 calls each, against a key that affords exactly 4 worst cases."""
    service = make_service(catalog(pool(1000)))
    key_id = service.create_key(ALICE, "shared", budget=4 * WORST / MICRO)["id"]
    start = threading.Barrier(24)
    outcomes: list[str] = []
    lock = threading.Lock()

    def run() -> None:
        start.wait(timeout=30)
        for _ in range(3):
            try:
                admitted = call(service, key_id)
            except BudgetExhausted:
                outcome = "refused"
            else:
                service.calls.settle(admitted, 100, 500)  # the whole worst case
                outcome = "ok"
            with lock:
                outcomes.append(outcome)

    threads = [threading.Thread(target=run) for _ in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(outcomes) == 72
    assert outcomes.count("ok") == 4
    row = key_row(store, key_id)
    assert (int(row.coins_micro), int(row.reserved_micro)) == (4 * WORST, 0)
    assert_key_books(store)
    assert_ledger_invariant(store)
