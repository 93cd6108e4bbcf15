"""Which coin pool applies to a user, and how much an hourly refill adds.

Both are pure functions; the store applies their results atomically in
:mod:`lumen_jupyter.core.ledger`.  The rules are Lumen's:

1. a per-user pool always wins, even a smaller one; per-user ``max 0`` blocks;
2. else the user's active groups: ``max 0`` groups are skipped, any unlimited
   group makes the user unlimited, else the group with the highest ``max``;
3. else the global default, if its ``max`` is not 0;
4. else no pool at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from .catalog import GroupSpec, PoolSpec

REFILL_PERIOD = timedelta(hours=1)
_PERIOD_US = 3_600_000_000


@dataclass(frozen=True)
class ResolvedPool:
    """The pool that applies and where it came from (``user``, ``group:NAME``, ``default``)."""

    spec: PoolSpec
    source: str


def resolve_pool(
    user_pool: PoolSpec | None,
    groups: Sequence[GroupSpec],
    default_pool: PoolSpec | None,
) -> ResolvedPool | None:
    """Apply the resolution order; ``None`` means the user has no pool."""
    if user_pool is not None:
        return ResolvedPool(user_pool, "user")
    candidates = [g for g in groups if g.active and g.pool is not None and not g.pool.blocked]
    for group in candidates:
        assert group.pool is not None
        if group.pool.unlimited:
            return ResolvedPool(group.pool, f"group:{group.name}")
    if candidates:
        best = max(candidates, key=lambda g: (g.pool.max_micro or 0) if g.pool else 0)
        assert best.pool is not None
        return ResolvedPool(best.pool, f"group:{best.name}")
    if default_pool is not None and not default_pool.blocked:
        return ResolvedPool(default_pool, "default")
    return None


@dataclass(frozen=True)
class Refill:
    """The outcome of one refill: the balance after it and the credit (may be negative)."""

    new_balance: int
    credit: int


def refill_due(last_refill_at: datetime, now: datetime) -> bool:
    return now - last_refill_at >= REFILL_PERIOD


def compute_refill(
    balance: int, last_refill_at: datetime, now: datetime, pool: PoolSpec
) -> Refill | None:
    """What a refill at ``now`` does, or ``None`` when none is due or the pool never refills.

    Fractional hours count: 90 minutes at 2 coins/hour add 3 coins.  The result
    is capped at ``max``, but a refill never lowers a balance: coins granted above
    ``max`` stay until they are spent (the refill only moves the clock on).
    """
    if not pool.refills or not refill_due(last_refill_at, now):
        return None
    assert pool.max_micro is not None
    elapsed_us = (now - last_refill_at) // timedelta(microseconds=1)
    credit = pool.refresh_micro * elapsed_us // _PERIOD_US
    new_balance = max(balance, min(pool.max_micro, balance + credit))
    return Refill(new_balance=new_balance, credit=new_balance - balance)


def next_refill_at(last_refill_at: datetime | None, pool: PoolSpec | None) -> datetime | None:
    """When the next refill lands, for the countdown; ``None`` when there is none."""
    if pool is None or not pool.refills or last_refill_at is None:
        return None
    return last_refill_at + REFILL_PERIOD
