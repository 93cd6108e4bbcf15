"""Rate limits kept in the request log, on SQLite and PostgreSQL.

Each call goes as the gateway makes it: the rate slot, then the real admission that
writes the request row, in one transaction (``tests/core/rate_limit_worker.py``).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from lumen_jupyter.core import keyring
from lumen_jupyter.core.billing import CallContext
from lumen_jupyter.core.clock import FakeClock
from lumen_jupyter.core.errors import BudgetExhausted, PermissionDenied
from lumen_jupyter.core.money import MICRO
from lumen_jupyter.core.rate_limit import take_rate_slot_in
from lumen_jupyter.core.service import LumenService
from lumen_jupyter.store import Store
from lumen_jupyter.store.schema import requests_log
from tests import pg
from tests.core.helpers import model, pool, run_threads_together, run_together, who
from tests.core.rate_limit_worker import (
    PER_MINUTE,
    SECRET,
    USER,
    hammer,
    process_main,
    rate_catalog,
    rated_call,
)


def new_key(service: LumenService, username: str = USER) -> int:
    acct = service.account(username)
    with service.store.write() as conn:
        key_id, _raw = keyring.create_key(conn, acct, SECRET, service.clock.now(), "k")
    return key_id


def calls_logged(store: Store, key_id: int | None = None) -> int:
    query = select(func.count()).select_from(requests_log)
    if key_id is not None:
        query = query.where(requests_log.c.key_id == key_id)
    with store.read() as conn:
        return int(conn.execute(query).scalar_one())


@pytest.fixture
def service(store: Store, clock: FakeClock) -> LumenService:
    return LumenService(store, rate_catalog(), SECRET, clock=clock)


def test_the_limit_is_honoured(service: LumenService, clock: FakeClock) -> None:
    key = new_key(service)
    for _ in range(3):
        assert rated_call(service, key, 3) is None
        clock.advance(seconds=1)
    # the first of the three leaves the window 60 s after it started, 57 s from now
    assert rated_call(service, key, 3) == pytest.approx(57.0)
    assert rated_call(service, key, 3) == pytest.approx(57.0)
    assert calls_logged(service.store, key) == 3


def test_the_window_slides(service: LumenService, clock: FakeClock) -> None:
    key = new_key(service)
    start = clock.now()
    for offset in (0, 10, 20):  # calls at t, t+10, t+20
        clock.advance(start + timedelta(seconds=offset) - clock.now())
        assert rated_call(service, key, 3) is None
    clock.advance(seconds=39.5)  # t+59.5: the window still holds all three
    assert rated_call(service, key, 3) == pytest.approx(0.5)
    clock.advance(seconds=0.5)  # t+60: the call at t has left it
    assert rated_call(service, key, 3) is None
    # now t+10, t+20 and t+60: the next slot frees when t+10 leaves, in 10 s
    assert rated_call(service, key, 3) == pytest.approx(10.0)
    clock.advance(seconds=10)
    assert rated_call(service, key, 3) is None
    assert calls_logged(service.store, key) == 5


def test_a_lowered_limit_waits_for_enough_calls_to_leave(
    service: LumenService, clock: FakeClock
) -> None:
    key = new_key(service)
    for _ in range(4):  # t, t+1, t+2, t+3 under a limit of 10
        assert rated_call(service, key, 10) is None
        clock.advance(seconds=1)
    # a limit of 2 at t+4: a call may start once only one is left in the window, i.e.
    # when t, t+1 and t+2 have left: at t+62, 58 s from now
    assert rated_call(service, key, 2) == pytest.approx(58.0)


def test_calls_refused_after_the_check_do_not_count(store: Store, clock: FakeClock) -> None:
    careful = model("careful", needs_consent=True, notice="Prompts leave the campus.")
    service = LumenService(
        store, rate_catalog(pool(max_coins=2.5), careful=careful), SECRET, clock=clock
    )
    key = new_key(service)
    assert rated_call(service, key, 3) is None
    assert rated_call(service, key, 3) is None  # 2.2 of the 2.5 coins reserved
    with pytest.raises(BudgetExhausted):
        rated_call(service, key, 3)
    with pytest.raises(PermissionDenied):  # no consent yet
        rated_call(service, key, 3, model="careful")
    service.grant(who(USER), 10 * MICRO)
    # two refusals did not count: the third slot is still free
    assert rated_call(service, key, 3) is None
    assert rated_call(service, key, 3) == pytest.approx(60.0)
    assert calls_logged(store, key) == 3


def test_each_key_and_keyless_calls_have_their_own_window(
    service: LumenService, clock: FakeClock
) -> None:
    first, second = new_key(service), new_key(service)
    other_user = new_key(service, "bob")
    for _ in range(2):
        assert rated_call(service, first, 2) is None
    assert rated_call(service, first, 2) is not None
    assert rated_call(service, second, 2) is None
    assert rated_call(service, other_user, 2, username="bob") is None
    # calls without a key: one window per account, which keyed calls do not fill
    assert rated_call(service, None, 2) is None
    assert rated_call(service, None, 2) is None
    assert rated_call(service, None, 2) == pytest.approx(60.0)
    assert rated_call(service, None, 2, username="bob") is None


def test_no_limit(service: LumenService) -> None:
    key = new_key(service)
    for _ in range(5):
        assert rated_call(service, key, 0) is None
    assert calls_logged(service.store, key) == 5


def test_admissions_batched_in_one_transaction_see_each_other(service: LumenService) -> None:
    """The accountant runs many admissions in one transaction: the second sees the first's row."""
    key = new_key(service)
    ctx = CallContext(account_id=service.account(USER), source="api", key_id=key)
    waits = []
    with service.store.write() as conn:
        for _ in range(3):
            wait = take_rate_slot_in(conn, key, 2, service.clock.now())
            waits.append(wait)
            if wait is None:
                service.calls.open_call_in(
                    conn,
                    who(USER),
                    ctx,
                    "paid",
                    endpoint="chat",
                    input_tokens=1,
                    max_output_tokens=1,
                )
    assert waits[:2] == [None, None]
    assert waits[2] == pytest.approx(60.0)


def test_threads_on_one_key_admit_exactly_the_limit(service: LumenService) -> None:
    key = new_key(service)
    threads_n, attempts = 12, 4
    results = run_threads_together(lambda: hammer(service, key, attempts), threads_n)
    assert sum(a for a, _ in results) == PER_MINUTE
    assert sum(limited for _, limited in results) == threads_n * attempts - PER_MINUTE
    assert calls_logged(service.store, key) == PER_MINUTE


@pytest.mark.postgres
def test_processes_on_one_key_admit_exactly_the_limit(
    postgres_server: pg.PostgresServer, clock: FakeClock
) -> None:
    """Several processes on one PostgreSQL database (SQLite serves one process)."""
    with postgres_server.database(migrated=True) as url:
        store = Store(url)
        try:
            service = LumenService(store, rate_catalog(), SECRET, clock=clock)
            key = new_key(service)
            outcomes = run_processes(url, clock, key, processes_n=4, attempts=12)
            assert sum(a for a, _ in outcomes) == PER_MINUTE
            assert sum(limited for _, limited in outcomes) == 4 * 12 - PER_MINUTE
            assert calls_logged(store, key) == PER_MINUTE
        finally:
            store.dispose()


def run_processes(
    url: str, clock: FakeClock, key: int, processes_n: int, attempts: int
) -> list[tuple[int, int]]:
    return run_together(process_main, (url, clock.now().isoformat(), key, attempts), processes_n)
