"""Refill against the real store and a fake clock: lazy opening, hourly credit, idempotence."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from lumen_jupyter.core.catalog import PoolSpec
from lumen_jupyter.core.clock import FakeClock, isoformat_z
from lumen_jupyter.core.ledger import (
    add_to_balance,
    ensure_balance,
    read_balance,
    refill_if_due,
)
from lumen_jupyter.core.money import MICRO
from lumen_jupyter.core.service import LumenService
from lumen_jupyter.store import Store
from lumen_jupyter.store.schema import balances
from tests.core.helpers import (
    MakeService,
    admit,
    assert_ledger_invariant,
    balance,
    catalog,
    count,
    ledger_rows,
    pool,
    who,
)

REFILLS = [
    # (id, pool, balance to set, elapsed, expected balance, whether last_refill_at moves)
    ("nothing-before-1h", pool(20, 2, 5), 5, timedelta(minutes=59), 5, False),
    ("one-hour", pool(20, 2, 5), 5, timedelta(hours=1), 7, True),
    ("90-min-at-2-per-hour-is-3", pool(20, 2, 5), 5, timedelta(minutes=90), 8, True),
    ("cap-at-max", pool(20, 2, 5), 5, timedelta(hours=9), 20, True),
    ("above-max-kept-refill-never-lowers", pool(20, 1, 30), 30, timedelta(hours=1), 30, True),
    ("full-stays-full", pool(20, 1, 20), 20, timedelta(hours=2), 20, True),
    ("debt-carried", pool(20, 1, 0), -3, timedelta(hours=2), -1, True),
    ("unlimited-untouched", pool(None, 5), 4, timedelta(hours=3), 4, False),
    ("refresh-0-untouched", pool(20, 0, 5), 5, timedelta(hours=3), 5, False),
    ("refresh-negative-untouched", pool(20, -2, 5), 5, timedelta(hours=3), 5, False),
]


@pytest.mark.parametrize(
    ("spec", "start", "elapsed", "expected", "moves"),
    [pytest.param(*case[1:], id=case[0]) for case in REFILLS],
)
def test_refill_table(
    store: Store,
    clock: FakeClock,
    spec: PoolSpec,
    start: int,
    elapsed: timedelta,
    expected: int,
    moves: bool,
) -> None:
    service = LumenService(store, catalog(None), b"x" * 32, clock=clock)
    acct = service.account("alice")
    t0 = clock.now()
    with store.write() as conn:
        ensure_balance(store, conn, acct, spec, t0)
        current = read_balance(conn, acct)
        assert current is not None
        add_to_balance(conn, acct, start * MICRO - current.balance_micro, "adjust", t0)
    now = clock.advance(elapsed)
    with store.write() as conn:
        credit = refill_if_due(conn, acct, spec, now)
        after = read_balance(conn, acct)
    assert after is not None
    assert after.balance_micro == expected * MICRO
    assert credit == (expected - start) * MICRO
    assert after.last_refill_at == (now if moves else t0)
    refills = [amount for kind, amount in ledger_rows(store) if kind == "refill"]
    assert refills == ([credit] if credit else [])
    assert_ledger_invariant(store)


def test_lazy_balance_opens_at_starting_with_a_grant(
    make_service: MakeService, clock: FakeClock
) -> None:
    service = make_service(catalog(pool(20, 1, starting=12)))
    service.account("alice")
    assert balance(service.store) is None  # nothing until first view or call
    state = service.pool_state(who())
    assert state["state"] == "limited"
    assert state["balance"]["micro"] == 12 * MICRO
    assert state["max"]["micro"] == 20 * MICRO
    assert state["refresh_per_hour"]["text"] == "1"
    assert state["last_refill_at"] == isoformat_z(clock.now())
    assert ledger_rows(service.store) == [("grant", 12 * MICRO)]
    service.pool_state(who())  # a second view opens nothing more
    assert ledger_rows(service.store) == [("grant", 12 * MICRO)]
    assert_ledger_invariant(service.store)


def test_starting_zero_opens_without_a_ledger_row(make_service: MakeService) -> None:
    service = make_service(catalog(pool(20, 1, starting=0)))
    state = service.pool_state(who())
    assert state["balance"]["micro"] == 0
    assert state["exhausted"] is True
    assert ledger_rows(service.store) == []
    assert_ledger_invariant(service.store)


def test_unlimited_users_have_no_balance_row(make_service: MakeService) -> None:
    service = make_service(catalog(pool(None, 5)))
    assert service.pool_state(who()) == {"state": "unlimited", "source": "default"}
    assert count(service.store, balances) == 0


def test_next_refill_is_last_refill_plus_one_hour(
    make_service: MakeService, clock: FakeClock
) -> None:
    service = make_service(catalog(pool(20, 2, starting=5)))
    t0 = clock.now()
    assert service.pool_state(who())["next_refill_at"] == isoformat_z(t0 + timedelta(hours=1))
    clock.advance(minutes=30)
    state = service.pool_state(who())
    assert state["next_refill_at"] == isoformat_z(t0 + timedelta(hours=1))
    assert state["balance"]["micro"] == 5 * MICRO
    t1 = clock.advance(minutes=60)  # 90 minutes after t0: +3 coins
    state = service.pool_state(who())
    assert state["balance"]["micro"] == 8 * MICRO
    assert state["last_refill_at"] == isoformat_z(t1)
    assert state["next_refill_at"] == isoformat_z(t1 + timedelta(hours=1))
    assert_ledger_invariant(service.store)


def test_no_refill_countdown_without_refresh(make_service: MakeService) -> None:
    service = make_service(catalog(pool(20, 0)))
    assert service.pool_state(who())["next_refill_at"] is None


def test_two_refills_at_the_same_instant_credit_once(store: Store, clock: FakeClock) -> None:
    spec = pool(20, 2, starting=5)
    service = LumenService(store, catalog(spec), b"x" * 32, clock=clock)
    acct = service.account("alice")
    with store.write() as conn:
        ensure_balance(store, conn, acct, spec, clock.now())
    now = clock.advance(hours=2)
    with store.write() as conn:
        assert refill_if_due(conn, acct, spec, now) == 4 * MICRO
    with store.write() as conn:
        assert refill_if_due(conn, acct, spec, now) == 0
    assert balance(store) == 9 * MICRO
    assert [k for k, _ in ledger_rows(store)] == ["grant", "refill"]
    assert_ledger_invariant(store)


def test_concurrent_refillers_credit_once(store: Store, clock: FakeClock) -> None:
    """Many viewers at the same instant, an hour later: one refill, one ledger row."""
    spec = pool(20, 2, starting=5)
    service = LumenService(store, catalog(spec), b"x" * 32, clock=clock)
    service.pool_state(who())
    clock.advance(hours=1)
    start = threading.Barrier(12)
    errors: list[BaseException] = []

    def view() -> None:
        try:
            start.wait()
            service.pool_state(who())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=view) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert balance(store) == 7 * MICRO
    assert [k for k, _ in ledger_rows(store)] == ["grant", "refill"]
    assert_ledger_invariant(store)


def test_refill_happens_before_a_charge(make_service: MakeService, clock: FakeClock) -> None:
    """A call after an empty hour sees the refill first (admission applies it)."""
    service = make_service(catalog(pool(20, 2, starting=0)))
    service.pool_state(who())
    clock.advance(hours=1)
    admission = admit(service, name="paid", worst=MICRO)
    service.calls.settle(admission, 500, 0)  # 500 tokens in at 1000 micro = 0.5 coin
    assert balance(service.store) == 1_500_000
    assert [k for k, _ in ledger_rows(service.store)] == ["refill", "reserve", "settle"]
    assert_ledger_invariant(service.store)


def test_pool_spec_without_store_account_is_untouched(store: Store, clock: FakeClock) -> None:
    """refill_if_due on an account without a balance row does nothing."""
    service = LumenService(store, catalog(None), b"x" * 32, clock=clock)
    acct = service.account("nobody")
    with store.write() as conn:
        assert refill_if_due(conn, acct, pool(20, 1), clock.now() + timedelta(hours=5)) == 0
    assert count(store, balances) == 0
