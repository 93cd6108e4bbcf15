"""The body of the rate-limit tests, importable by spawned processes (no pytest here).

:func:`rated_call` is one admission as the gateway makes it once wired: in one write
transaction, the key's rate slot, then the admission that writes the request row.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from lumen_jupyter.core.accounts import Identity
from lumen_jupyter.core.billing import CallContext
from lumen_jupyter.core.catalog import Catalog, ModelSpec, PoolSpec, Rule
from lumen_jupyter.core.clock import FakeClock
from lumen_jupyter.core.money import MICRO
from lumen_jupyter.core.rate_limit import take_account_rate_slot_in, take_rate_slot_in
from lumen_jupyter.core.service import LumenService
from lumen_jupyter.store import Store

USER = "hammer"
SECRET = b"0123456789abcdef0123456789abcdef-rate"
PER_MINUTE = 20


def rate_catalog(pool: PoolSpec | None = None, **models: ModelSpec) -> Catalog:
    """A priced model ``paid`` (1.1 coins worst case at 100 in, 500 out) and a large pool."""
    models.setdefault(
        "paid",
        ModelSpec(name="paid", input_price_micro=1000 * MICRO, output_price_micro=2000 * MICRO),
    )
    return Catalog(
        models=models,
        default_pool=pool or PoolSpec(max_micro=10**12, refresh_micro=0, starting_micro=10**12),
        default_rule=Rule.ALLOWED,
    )


def rated_call(
    service: LumenService,
    key_id: int | None,
    per_minute: int,
    *,
    username: str = USER,
    model: str = "paid",
) -> float | None:
    """One call: ``None`` when admitted, else the seconds to wait.  A refusal after
    the rate check (coins, consent, access) raises, as the gateway answers it."""
    who = Identity(username=username, display_name=username)
    ctx = CallContext(account_id=service.account(username), source="api", key_id=key_id)
    with service.store.write() as conn:
        now = service.clock.now()
        if key_id is not None:
            wait = take_rate_slot_in(conn, key_id, per_minute, now)
        else:
            wait = take_account_rate_slot_in(conn, ctx.account_id, per_minute, now)
        if wait is not None:
            return wait
        outcome = service.calls.open_call_in(
            conn, who, ctx, model, endpoint="chat", input_tokens=100, max_output_tokens=500
        )
    service.calls.admission_or_raise(outcome)
    return None


def hammer(service: LumenService, key_id: int, attempts: int) -> tuple[int, int]:
    """``attempts`` calls on one key; returns (admitted, limited)."""
    admitted = limited = 0
    for _ in range(attempts):
        if rated_call(service, key_id, PER_MINUTE) is None:
            admitted += 1
        else:
            limited += 1
    return admitted, limited


def process_main(
    url: str, now: str, key_id: int, attempts: int, barrier: Any, results: Any
) -> None:
    """Entry point of one spawned process; puts (admitted, limited) or an error text."""
    store = Store(url)
    try:
        service = LumenService(
            store, rate_catalog(), SECRET, clock=FakeClock(datetime.fromisoformat(now))
        )
        service.account(USER)
        barrier.wait(timeout=60)
        results.put(hammer(service, key_id, attempts))
    except BaseException as exc:
        results.put(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        store.dispose()
