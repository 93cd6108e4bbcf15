"""Many threads and many processes against one small pool, on SQLite and PostgreSQL.

The pool affords exactly ten worst cases.  However the attempts interleave, exactly ten
are admitted, nothing is overspent, the balance never dips below zero (checked on the
ledger's running sum, which is the balance's history), and ``balance == sum(ledger)``.
"""

from __future__ import annotations

from sqlalchemy import func, select

from lumen_jupyter.core.clock import FakeClock
from lumen_jupyter.core.service import LumenService
from lumen_jupyter.store import Store
from lumen_jupyter.store.schema import accounts, balances, ledger, requests_log
from tests.core.concurrency_worker import (
    AFFORDABLE,
    POOL,
    USER,
    WORST,
    attempt_calls,
    process_main,
    race_catalog,
)
from tests.core.helpers import assert_ledger_invariant, run_threads_together, run_together


def check_outcome(store: Store, admitted: int, refused: int, attempts: int) -> None:
    assert admitted == AFFORDABLE
    assert refused == attempts - AFFORDABLE
    assert POOL.starting_micro == AFFORDABLE * WORST
    with store.read() as conn:
        assert conn.execute(select(func.count()).select_from(accounts)).scalar_one() == 1
        rows = conn.execute(select(requests_log.c.status, requests_log.c.reserved_micro)).all()
        assert len(rows) == AFFORDABLE  # refused calls leave no request row
        assert {status for status, _ in rows} == {"ok"}
        assert sum(int(r) for _, r in rows) <= POOL.starting_micro
        assert conn.execute(select(balances.c.balance_micro)).scalar_one() == 0
        history = conn.execute(
            select(ledger.c.kind, ledger.c.amount_micro).order_by(ledger.c.id)
        ).all()
    kinds = [k for k, _ in history]
    assert kinds.count("grant") == 1  # the lazily opened balance was granted once
    assert kinds.count("reserve") == AFFORDABLE
    running = 0
    for kind, amount in history:
        running += int(amount)
        assert running >= 0, f"balance went negative ({running}) at a {kind} row"
    assert_ledger_invariant(store)


def test_threads_never_overspend(store: Store, clock: FakeClock) -> None:
    threads_n, attempts = 32, 3
    service = LumenService(store, race_catalog(), b"s" * 32, clock=clock)
    results = run_threads_together(lambda: attempt_calls(service, attempts), threads_n)
    check_outcome(
        store,
        admitted=sum(a for a, _ in results),
        refused=sum(r for _, r in results),
        attempts=threads_n * attempts,
    )


def test_processes_never_overspend(store: Store, store_url: str, clock: FakeClock) -> None:
    processes_n, attempts = 3, 8
    outcomes = run_together(
        process_main, (store_url, clock.now().isoformat(), attempts), processes_n
    )
    check_outcome(
        store,
        admitted=sum(a for a, _ in outcomes),
        refused=sum(r for _, r in outcomes),
        attempts=processes_n * attempts,
    )
    with store.read() as conn:
        assert conn.execute(select(accounts.c.username)).scalar_one() == USER
