"""Reservations: reserve the worst case, settle to the real cost, release on failure.

Prices (see helpers): ``paid`` costs 1000 micro-coins a token in and 2000 out; the usual
worst case (100 in + 500 out) is 1.1 coins.  Every test ends with the ledger invariant.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from lumen_jupyter.core.clock import FakeClock
from lumen_jupyter.core.errors import BadRequest, BudgetExhausted
from lumen_jupyter.core.money import MICRO
from lumen_jupyter.core.service import LumenService
from lumen_jupyter.store.schema import balances, ledger, requests_log
from tests.core.helpers import (
    WORST,
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


def request_row(service: LumenService, request_id: int) -> object:
    with service.store.read() as conn:
        return conn.execute(select(requests_log).where(requests_log.c.id == request_id)).one()


@pytest.fixture
def service(make_service: MakeService) -> LumenService:
    """Alice has a pool of 11 coins (exactly ten worst cases) and no refill."""
    return make_service(catalog(pool(11)))


def test_reserve_then_settle_refunds_the_difference(service: LumenService) -> None:
    admission = admit(service)
    assert admission.reserved_micro == WORST
    assert balance(service.store) == 11 * MICRO - WORST
    row = request_row(service, admission.request_id)
    assert (row.status, row.reserved_micro, row.metered) == ("pending", WORST, True)
    assert_ledger_invariant(service.store)  # mid-flight too

    settled = service.calls.settle(admission, 100, 200)  # 100_000 + 400_000
    assert settled is not None
    assert settled.coins_micro == 500_000
    assert balance(service.store) == 11 * MICRO - 500_000
    assert ledger_rows(service.store) == [
        ("grant", 11 * MICRO),
        ("reserve", -WORST),
        ("settle", WORST - 500_000),
    ]
    row = request_row(service, admission.request_id)
    assert (row.status, row.coins_micro, row.input_tokens, row.output_tokens) == (
        "ok",
        500_000,
        100,
        200,
    )
    assert_ledger_invariant(service.store)


def test_release_gives_everything_back(service: LumenService) -> None:
    admission = admit(service)
    assert service.calls.release(admission, status="error", http_status=502) is True
    assert balance(service.store) == 11 * MICRO
    assert [k for k, _ in ledger_rows(service.store)] == ["grant", "reserve", "release"]
    row = request_row(service, admission.request_id)
    assert (row.status, row.http_status, row.coins_micro) == ("error", 502, 0)
    assert service.summary(who()).total.requests == 0  # a failed call is not usage
    assert_ledger_invariant(service.store)


def test_settle_twice_and_release_after_settle_are_no_ops(service: LumenService) -> None:
    admission = admit(service)
    assert service.calls.settle(admission, 100, 100) is not None
    after_first = balance(service.store)
    rows = len(ledger_rows(service.store))
    assert service.calls.settle(admission, 100, 100) is None
    assert service.calls.settle(admission, 1, 1) is None
    assert service.calls.release(admission, status="error", http_status=500) is False
    assert balance(service.store) == after_first
    assert len(ledger_rows(service.store)) == rows
    assert service.summary(who()).total.requests == 1
    assert_ledger_invariant(service.store)


def test_settle_after_release_is_a_no_op(service: LumenService) -> None:
    admission = admit(service)
    assert service.calls.release(admission, status="error", http_status=500) is True
    assert service.calls.release(admission, status="error", http_status=500) is False
    assert service.calls.settle(admission, 100, 100) is None
    assert balance(service.store) == 11 * MICRO
    assert_ledger_invariant(service.store)


def test_strict_refuses_when_the_worst_case_does_not_fit(
    service: LumenService, clock: FakeClock
) -> None:
    service.grant(who(), -10 * MICRO)  # 1 coin left; the worst case is 1.1
    before = count(service.store, requests_log)
    with pytest.raises(BudgetExhausted) as err:
        admit(service)
    assert err.value.status == 429
    assert err.value.code == "coins_exhausted"
    assert "may cost up to 1.1 coins" in err.value.message
    assert balance(service.store) == 1 * MICRO
    assert count(service.store, requests_log) == before  # no pending row left behind
    # a smaller worst case that fits is admitted, down to exactly zero
    admission = admit(service, worst=MICRO)
    assert balance(service.store) == 0
    service.calls.settle(admission, 1000, 0)
    assert balance(service.store) == 0
    assert_ledger_invariant(service.store)


def test_zero_balance_blocks_even_free_models(service: LumenService) -> None:
    service.grant(who(), -11 * MICRO)
    with pytest.raises(BudgetExhausted) as err:
        admit(service, name="free", worst=0)
    assert "balance is 0 coins" in err.value.message
    assert_ledger_invariant(service.store)


def test_free_model_with_positive_balance_costs_nothing(service: LumenService) -> None:
    admission = admit(service, name="free", worst=0)
    assert admission.reserved_micro == 0
    assert service.calls.settle(admission, 5000, 5000) is not None
    assert balance(service.store) == 11 * MICRO
    assert service.summary(who()).total.tokens == 10_000
    assert_ledger_invariant(service.store)


def test_exhausted_error_names_the_next_refill(make_service: MakeService, clock: FakeClock) -> None:
    service = make_service(catalog(pool(1, refresh=0.5)))
    with pytest.raises(BudgetExhausted) as err:
        admit(service)
    expected = (clock.now() + timedelta(hours=1)).isoformat(timespec="milliseconds")
    assert err.value.details["next_refill_at"] == expected.replace("+00:00", "Z")
    assert "+0.5 coins/hour" in err.value.message


def test_only_a_pool_that_refills_promises_a_refill(
    make_service: MakeService, clock: FakeClock
) -> None:
    refilling = make_service(catalog(pool(1, refresh=0.5)))
    with pytest.raises(BudgetExhausted) as err:
        admit(refilling)  # 1 coin, the worst case is 1.1
    assert "lower max_tokens or wait for the refill. The next refill" in err.value.message
    never = make_service(catalog(pool(1, refresh=0)), secret=b"x" * 40)
    never.grant(who("bob"), 0)
    with pytest.raises(BudgetExhausted) as err:
        admit(never, "bob")
    message = err.value.message
    assert "refill" not in message.replace("does not refill", "")
    assert message.endswith(
        "your balance is 1; lower max_tokens. "
        "This pool does not refill: ask an administrator to grant more coins"
    )
    assert err.value.details.get("next_refill_at") is None
    never.grant(who("bob"), -MICRO)
    with pytest.raises(BudgetExhausted) as err:
        admit(never, "bob", name="free", worst=0)
    assert err.value.message == (
        "Coin budget exhausted: your balance is 0 coins. "
        "This pool does not refill: ask an administrator to grant more coins"
    )


def test_unlimited_pool_reserves_nothing_and_keeps_no_balance(make_service: MakeService) -> None:
    service = make_service(catalog(pool(None)))
    admission = admit(service, worst=50 * MICRO)
    assert admission.reserved_micro == 0
    settled = service.calls.settle(admission, 1000, 1000)
    assert settled is not None and settled.coins_micro == 3 * MICRO
    assert count(service.store, balances) == 0
    assert count(service.store, ledger) == 0
    assert service.summary(who()).total.coins_micro == 3 * MICRO
    assert request_row(service, admission.request_id).metered is False
    assert_ledger_invariant(service.store)


def test_a_cost_above_the_reservation_is_capped_and_the_overrun_recorded(
    service: LumenService,
) -> None:
    """Strict mode, and the upstream reports more than the worst case: the call is
    charged its reservation, never more, and the difference is recorded for the admin."""
    service.grant(who(), -(11 * MICRO - 1_200_000))  # 1.2 coins
    admission = admit(service)  # reserves 1.1
    settled = service.calls.settle(admission, 100, 1000)  # would cost 0.1 + 2.0 = 2.1
    assert settled is not None
    assert (settled.coins_micro, settled.overrun_micro) == (WORST, 2_100_000 - WORST)
    assert balance(service.store) == 1_200_000 - WORST  # 0.1 left: never below zero
    row = request_row(service, admission.request_id)
    assert (row.coins_micro, row.overrun_micro, row.cap_micro) == (WORST, 1_000_000, WORST)
    with pytest.raises(BudgetExhausted):
        admit(service)  # 0.1 left does not cover another worst case
    assert_ledger_invariant(service.store)


def test_soft_mode_caps_the_charge_at_the_worst_case(make_service: MakeService) -> None:
    service = make_service(catalog(pool(11, starting=1)), strict_billing=False)
    admission = admit(service)  # nothing reserved in soft mode
    settled = service.calls.settle(admission, 10**9, 10**9)
    assert settled is not None and settled.coins_micro == WORST
    assert balance(service.store) == 1 * MICRO - WORST  # the debt is one worst case at most
    assert_ledger_invariant(service.store)


def test_soft_mode_admits_any_positive_balance_and_carries_debt(
    make_service: MakeService, clock: FakeClock
) -> None:
    service = make_service(catalog(pool(11, refresh=0.5, starting=0.5)), strict_billing=False)
    admission = admit(service)  # worst case 1.1 > balance 0.5: admitted anyway
    assert admission.reserved_micro == 0
    assert balance(service.store) == 500_000
    assert request_row(service, admission.request_id).reserved_micro == 0
    service.calls.settle(admission, 100, 500)  # 1.1 coins, the worst case
    assert balance(service.store) == -600_000
    with pytest.raises(BudgetExhausted) as err:
        admit(service)
    assert "balance is -0.6 coins" in err.value.message

    clock.advance(hours=1)  # +0.5: still in debt, never forgiven
    state = service.pool_state(who())
    assert state["balance"]["micro"] == -100_000
    assert state["exhausted"] is True
    with pytest.raises(BudgetExhausted):
        admit(service, name="free", worst=0)

    clock.advance(hours=2)  # +1.0
    assert service.pool_state(who())["balance"]["micro"] == 900_000
    admission = admit(service, name="free", worst=0)
    service.calls.settle(admission, 10, 10)
    service.grant(who(), 2 * MICRO, note="top-up")
    assert balance(service.store) == 2_900_000
    assert [k for k, _ in ledger_rows(service.store)] == [
        "grant",
        "settle",
        "refill",
        "refill",
        "adjust",
    ]
    assert_ledger_invariant(service.store)


def test_soft_mode_refuses_a_zero_balance(make_service: MakeService) -> None:
    service = make_service(catalog(pool(11, starting=0)), strict_billing=False)
    with pytest.raises(BudgetExhausted):
        admit(service)
    assert_ledger_invariant(service.store)


def test_grant_without_a_balance_is_refused(make_service: MakeService) -> None:
    with pytest.raises(BadRequest):
        make_service(catalog(pool(None))).grant(who(), MICRO)
    with pytest.raises(BadRequest):
        make_service(catalog(None)).grant(who(), MICRO)


def test_call_context_is_logged(service: LumenService) -> None:
    admission = admit(
        service, source="kernel", notebook="work/a.ipynb", cell="c1", conversation=None
    )
    row = request_row(service, admission.request_id)
    assert (row.source, row.notebook, row.cell, row.model, row.endpoint) == (
        "kernel",
        "work/a.ipynb",
        "c1",
        "paid",
        "chat",
    )
    service.calls.settle(admission, 1, 1)
    assert_ledger_invariant(service.store)
