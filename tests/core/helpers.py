"""Helpers for the accounting tests: identities, a priced catalog, the ledger invariant."""

from __future__ import annotations

import multiprocessing
import queue
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select

from lumen_jupyter.core.accounts import Identity
from lumen_jupyter.core.billing import CallContext
from lumen_jupyter.core.calls import Admission
from lumen_jupyter.core.catalog import Catalog, EndpointSpec, ModelSpec, PoolSpec, Rule
from lumen_jupyter.core.money import MICRO
from lumen_jupyter.core.service import LumenService
from lumen_jupyter.store import Store
from lumen_jupyter.store.schema import accounts, balances, ledger, requests_log

MakeService = Callable[..., LumenService]
"""The type of the ``make_service`` fixture: ``make_service(catalog, **options)``."""

SECRET = b"0123456789abcdef0123456789abcdef-test-secret"

# "paid": 1000 coins per million in, 2000 per million out, i.e. 1000 and 2000 micro-coins a
# token.  A worst case of 100 tokens in and 500 out costs 100_000 + 1_000_000 = 1.1 coins.
PAID_IN = 1000 * MICRO
PAID_OUT = 2000 * MICRO
WORST_IN = 100
WORST_OUT = 500
WORST = WORST_IN * 1000 + WORST_OUT * 2000  # 1_100_000 micro-coins


def who(username: str = "alice", groups: tuple[str, ...] = ()) -> Identity:
    return Identity(username=username, display_name=username.title(), groups=frozenset(groups))


def model(name: str, price_in: int = PAID_IN, price_out: int = PAID_OUT, **kw: Any) -> ModelSpec:
    return ModelSpec(
        name=name,
        input_price_micro=price_in,
        output_price_micro=price_out,
        endpoints=(EndpointSpec(url="http://127.0.0.1:9/v1", model=name),),
        **kw,
    )


def catalog(pool: PoolSpec | None = None, **kw: Any) -> Catalog:
    """Two models (``paid`` and ``free``), all allowed, one default pool."""
    models = kw.pop("models", None) or {
        "paid": model("paid"),
        "free": model("free", 0, 0),
    }
    return Catalog(
        models=models,
        default_pool=pool,
        default_rule=kw.pop("default_rule", Rule.ALLOWED),
        **kw,
    )


def pool(max_coins: float | None, refresh: float = 0, starting: float | None = None) -> PoolSpec:
    """A pool in coins (``None`` max = unlimited); ``starting`` defaults to ``max``."""
    if starting is None:
        starting = 0 if max_coins is None else max_coins
    return PoolSpec(
        max_micro=None if max_coins is None else round(max_coins * MICRO),
        refresh_micro=round(refresh * MICRO),
        starting_micro=round(starting * MICRO),
    )


def admit(
    service: LumenService,
    username: str = "alice",
    name: str = "paid",
    worst: int = WORST,
    **ctx: Any,
) -> Admission:
    identity = who(username, tuple(ctx.pop("groups", ())))
    spec = service.catalog.models[name]
    context = CallContext(
        account_id=service.account(username), source=ctx.pop("source", "api"), **ctx
    )
    return service.calls.admit(identity, context, spec, worst, "chat")


def balance(store: Store, username: str = "alice") -> int | None:
    with store.read() as conn:
        row = conn.execute(
            select(balances.c.balance_micro)
            .select_from(balances.join(accounts, accounts.c.id == balances.c.account_id))
            .where(accounts.c.username == username)
        ).first()
    return None if row is None else int(row[0])


def ledger_rows(store: Store, username: str = "alice") -> list[tuple[str, int]]:
    with store.read() as conn:
        rows = conn.execute(
            select(ledger.c.kind, ledger.c.amount_micro)
            .select_from(ledger.join(accounts, accounts.c.id == ledger.c.account_id))
            .where(accounts.c.username == username)
            .order_by(ledger.c.id)
        ).all()
    return [(str(k), int(a)) for k, a in rows]


def count(store: Store, table: Any) -> int:
    with store.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def assert_ledger_invariant(store: Store) -> None:
    """For every account ``balance == sum(ledger)``; for every request, its ledger rows
    add up to what it holds: minus the reservation while pending, minus the cost once
    settled, nothing once released; unmetered requests have no ledger rows."""
    with store.read() as conn:
        sums = dict(
            conn.execute(
                select(ledger.c.account_id, func.sum(ledger.c.amount_micro)).group_by(
                    ledger.c.account_id
                )
            ).all()
        )
        held = dict(conn.execute(select(balances.c.account_id, balances.c.balance_micro)).all())
        for (acct,) in conn.execute(select(accounts.c.id)).all():
            assert int(sums.get(acct) or 0) == int(held.get(acct) or 0), (
                f"account {acct}: balance {held.get(acct)} != sum(ledger) {sums.get(acct)}"
            )
        per_request = dict(
            conn.execute(
                select(ledger.c.request_id, func.sum(ledger.c.amount_micro))
                .where(ledger.c.request_id.is_not(None))
                .group_by(ledger.c.request_id)
            ).all()
        )
        for row in conn.execute(select(requests_log)).all():
            moved = int(per_request.get(row.id) or 0)
            if not row.metered:
                expected = 0
            elif row.status == "pending":
                expected = -int(row.reserved_micro)
            else:  # settled for its cost, or released (cost 0)
                expected = -int(row.coins_micro)
            assert moved == expected, (
                f"request {row.id} ({row.status}): ledger moved {moved}, expected {expected}"
            )


def run_threads_together(work: Callable[[], Any], threads_n: int) -> list[Any]:
    """``work()`` in ``threads_n`` threads that start at once (a barrier); their outcomes.
    An exception in any thread fails the test."""
    start = threading.Barrier(threads_n)
    results: list[Any] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run() -> None:
        try:
            start.wait(timeout=30)
            outcome = work()
            with lock:
                results.append(outcome)
        except BaseException as exc:
            with lock:
                errors.append(exc)

    workers = [threading.Thread(target=run) for _ in range(threads_n)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert errors == []
    assert len(results) == threads_n
    return results


def run_together(target: Callable[..., None], args: tuple[Any, ...], processes_n: int) -> list[Any]:
    """``target(*args, barrier, results)`` in ``processes_n`` spawned processes that start
    their work at once (the barrier); each puts one outcome in ``results``.  A process
    that fails or hangs fails the test (an outcome that is a string is an error)."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes_n)
    results = context.Queue()
    procs = [
        context.Process(target=target, args=(*args, barrier, results)) for _ in range(processes_n)
    ]
    for proc in procs:
        proc.start()
    outcomes = []
    try:
        for _ in procs:
            outcomes.append(results.get(timeout=90))
    except queue.Empty:  # pragma: no cover - a hung worker
        outcomes.append("timed out waiting for a worker")
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():  # pragma: no cover
                proc.kill()
    assert [o for o in outcomes if isinstance(o, str)] == []
    assert all(proc.exitcode == 0 for proc in procs)
    return outcomes
