"""The body of the concurrency tests, importable by spawned processes (no pytest here).

Each worker opens its own ``Store`` on the shared URL (as another Jupyter server on the same
database would), then makes ``attempts`` calls for one user: admit the worst case and, when
admitted, settle at exactly that cost (so no coins come back and the number of admissions
the pool allows is fixed).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from lumen_jupyter.core.billing import CallContext
from lumen_jupyter.core.catalog import Catalog, ModelSpec, PoolSpec, Rule
from lumen_jupyter.core.clock import FakeClock
from lumen_jupyter.core.errors import BudgetExhausted
from lumen_jupyter.core.money import MICRO
from lumen_jupyter.core.service import LumenService
from lumen_jupyter.store import Store

USER = "racer"
PRICE_IN = 1000 * MICRO  # 1000 micro-coins a token
PRICE_OUT = 2000 * MICRO
WORST_IN, WORST_OUT = 100, 500
WORST = WORST_IN * 1000 + WORST_OUT * 2000  # 1.1 coins
AFFORDABLE = 10
POOL = PoolSpec(max_micro=AFFORDABLE * WORST, refresh_micro=0, starting_micro=AFFORDABLE * WORST)


def race_catalog() -> Catalog:
    return Catalog(
        models={
            "paid": ModelSpec(name="paid", input_price_micro=PRICE_IN, output_price_micro=PRICE_OUT)
        },
        default_pool=POOL,
        default_rule=Rule.ALLOWED,
    )


def attempt_calls(service: LumenService, attempts: int) -> tuple[int, int]:
    """Make ``attempts`` calls; returns (admitted, refused)."""
    from lumen_jupyter.core.accounts import Identity

    who = Identity(username=USER, display_name=USER)
    model = service.catalog.models["paid"]
    admitted = refused = 0
    for _ in range(attempts):
        ctx = CallContext(account_id=service.account(USER), source="api")
        try:
            admission = service.calls.admit(who, ctx, model, WORST, "chat")
        except BudgetExhausted:
            refused += 1
            continue
        admitted += 1
        settled = service.calls.settle(admission, WORST_IN, WORST_OUT)
        assert settled is not None and settled.coins_micro == WORST
    return admitted, refused


def process_main(url: str, now: str, attempts: int, barrier: Any, results: Any) -> None:
    """Entry point of one spawned process; puts (admitted, refused) or an error text."""
    store = Store(url)
    try:
        service = LumenService(
            store, race_catalog(), b"s" * 32, clock=FakeClock(datetime.fromisoformat(now))
        )
        service.account(USER)
        barrier.wait(timeout=60)
        results.put(attempt_calls(service, attempts))
    except BaseException as exc:
        results.put(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        store.dispose()
