"""Which pool applies (Lumen's resolution order) and what an hourly refill adds."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from lumen_jupyter.core.catalog import GroupSpec, PoolSpec, UserSpec
from lumen_jupyter.core.errors import PermissionDenied
from lumen_jupyter.core.money import MICRO
from lumen_jupyter.core.pools import compute_refill, next_refill_at, refill_due, resolve_pool
from tests.core.helpers import MakeService, admit, assert_ledger_invariant, catalog, pool, who

UNLIMITED = pool(None)
BLOCKED = pool(0)


def group(name: str, spec: PoolSpec | None, active: bool = True) -> GroupSpec:
    return GroupSpec(name=name, pool=spec, active=active)


SMALL_USER = pool(5, refresh=1)
BIG = pool(100, refresh=2, starting=10)
MID = pool(50, refresh=0.5, starting=40)
DEFAULT = pool(20, refresh=1)

RESOLUTION = [
    # (id, user pool, groups, default pool, expected spec, expected source)
    ("user-wins-even-when-smaller", SMALL_USER, [group("big", BIG)], DEFAULT, SMALL_USER, "user"),
    ("user-max-0-blocks", BLOCKED, [group("big", BIG)], DEFAULT, BLOCKED, "user"),
    ("user-unlimited", UNLIMITED, [group("mid", MID)], DEFAULT, UNLIMITED, "user"),
    (
        "group-max-0-skipped",
        None,
        [group("a-blocked", BLOCKED), group("mid", MID)],
        DEFAULT,
        MID,
        "group:mid",
    ),
    (
        "only-blocked-groups-fall-to-default",
        None,
        [group("b", BLOCKED)],
        DEFAULT,
        DEFAULT,
        "default",
    ),
    ("only-blocked-groups-no-default", None, [group("b", BLOCKED)], None, None, None),
    (
        "any-unlimited-group-wins",
        None,
        [group("big", BIG), group("mid", MID), group("z-unl", UNLIMITED)],
        DEFAULT,
        UNLIMITED,
        "group:z-unl",
    ),
    (
        "highest-max-wins-with-its-own-refresh-and-starting",
        None,
        [group("mid", MID), group("big", BIG), group("small", pool(10, 5, 10))],
        DEFAULT,
        BIG,
        "group:big",
    ),
    ("group-without-pool-ignored", None, [group("nopool", None)], DEFAULT, DEFAULT, "default"),
    (
        "inactive-group-ignored",
        None,
        [group("big", BIG, active=False)],
        DEFAULT,
        DEFAULT,
        "default",
    ),
    ("global-default", None, [], DEFAULT, DEFAULT, "default"),
    ("global-default-unlimited", None, [], UNLIMITED, UNLIMITED, "default"),
    ("global-default-max-0-is-no-pool", None, [], BLOCKED, None, None),
    ("nothing-is-no-pool", None, [], None, None, None),
]


@pytest.mark.parametrize(
    ("user_pool", "groups", "default", "spec", "source"),
    [pytest.param(*case[1:], id=case[0]) for case in RESOLUTION],
)
def test_resolve_pool(
    user_pool: PoolSpec | None,
    groups: list[GroupSpec],
    default: PoolSpec | None,
    spec: PoolSpec | None,
    source: str | None,
) -> None:
    resolved = resolve_pool(user_pool, groups, default)
    if spec is None:
        assert resolved is None
    else:
        assert resolved is not None
        assert (resolved.spec, resolved.source) == (spec, source)


def test_resolution_through_the_service(make_service: MakeService) -> None:
    """Catalog users and groups, Jupyter groups, and a per-user pool set by an admin."""
    cat = catalog(
        DEFAULT,
        groups={
            "staff": GroupSpec(name="staff", pool=BIG, members=frozenset({"bob"})),
            "frozen": GroupSpec(name="frozen", pool=BLOCKED),
            "students": GroupSpec(name="students", pool=MID),
        },
        users={"carol": UserSpec(name="carol", pool=SMALL_USER, groups=frozenset({"staff"}))},
    )
    service = make_service(cat)
    assert service.pool_state(who("alice"))["source"] == "default"
    assert service.pool_state(who("bob"))["source"] == "group:staff"
    # Jupyter-supplied groups count like configured ones; max-0 groups are skipped.
    assert service.pool_state(who("dave", ("frozen", "students")))["source"] == "group:students"
    assert service.pool_state(who("erin", ("frozen",)))["source"] == "default"
    carol = service.pool_state(who("carol"))
    assert carol["source"] == "user"
    assert carol["max"]["micro"] == 5 * MICRO

    # An admin's per-user pool beats the configured one; max 0 blocks the user outright.
    service.set_user_pool("carol", BLOCKED)
    assert service.pool_state(who("carol"))["state"] == "blocked"
    with pytest.raises(PermissionDenied) as err:
        admit(service, "carol")
    assert err.value.code == "pool_blocked"
    service.set_user_pool("carol", UNLIMITED)
    assert service.pool_state(who("carol")) == {"state": "unlimited", "source": "user"}
    service.set_user_pool("carol", None)
    assert service.pool_state(who("carol"))["source"] == "user"
    assert service.pool_state(who("carol"))["max"]["micro"] == 5 * MICRO
    assert_ledger_invariant(service.store)


def test_no_pool_refuses_every_call(make_service: MakeService) -> None:
    service = make_service(catalog(None))
    assert service.pool_state(who()) == {"state": "none", "source": None}
    with pytest.raises(PermissionDenied) as err:
        admit(service)
    assert err.value.code == "no_pool"
    with pytest.raises(PermissionDenied):
        admit(service, name="free", worst=0)
    assert_ledger_invariant(service.store)


T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)

REFILLS = [
    # (id, pool, balance, elapsed, expected new balance or None for "no refill")
    ("nothing-before-an-hour", pool(20, 2), 5 * MICRO, timedelta(minutes=59, seconds=59), None),
    ("exactly-an-hour", pool(20, 2), 5 * MICRO, timedelta(hours=1), 7 * MICRO),
    ("fractional-90-min-at-2", pool(20, 2), 5 * MICRO, timedelta(minutes=90), 8 * MICRO),
    ("fractional-61-min-at-1", pool(20, 1), 0, timedelta(minutes=61), 1_016_666),
    ("capped-at-max", pool(20, 2), 5 * MICRO, timedelta(hours=10), 20 * MICRO),
    ("at-max-stays", pool(20, 2), 20 * MICRO, timedelta(hours=3), 20 * MICRO),
    ("above-max-kept", pool(20, 1, 30), 30 * MICRO, timedelta(hours=1), 30 * MICRO),
    ("debt-is-paid-down-not-forgiven", pool(20, 2), -5 * MICRO, timedelta(hours=2), -1 * MICRO),
    ("unlimited-never", pool(None, 5), 0, timedelta(hours=5), None),
    ("refresh-0-never", pool(20, 0), 5 * MICRO, timedelta(hours=5), None),
    ("refresh-negative-never", pool(20, -1), 5 * MICRO, timedelta(hours=5), None),
]


@pytest.mark.parametrize(
    ("spec", "balance", "elapsed", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in REFILLS],
)
def test_compute_refill(
    spec: PoolSpec, balance: int, elapsed: timedelta, expected: int | None
) -> None:
    outcome = compute_refill(balance, T0, T0 + elapsed, spec)
    if expected is None:
        assert outcome is None
    else:
        assert outcome is not None
        assert outcome.new_balance == expected
        assert outcome.credit == expected - balance


def test_refill_due_and_next_refill() -> None:
    assert not refill_due(T0, T0 + timedelta(minutes=59))
    assert refill_due(T0, T0 + timedelta(hours=1))
    assert next_refill_at(T0, pool(20, 1)) == T0 + timedelta(hours=1)
    assert next_refill_at(T0, pool(20, 0)) is None
    assert next_refill_at(T0, pool(None, 1)) is None
    assert next_refill_at(None, pool(20, 1)) is None
    assert next_refill_at(T0, None) is None
