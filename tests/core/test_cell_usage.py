"""Usage by cell of one notebook, from the request log, on SQLite and PostgreSQL.

Seeded: calls from three cells of ``a.ipynb`` over five weeks, one from ``a.ipynb``
without a cell, the same cell id in ``b.ipynb``, another user in ``a.ipynb``, a failed
and a pending call - only alice's settled calls from ``a.ipynb`` count.
"""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest
from sqlalchemy import text

from lumen_jupyter.core.billing import CallContext
from lumen_jupyter.core.clock import FakeClock
from lumen_jupyter.core.errors import BadRequest
from lumen_jupyter.core.money import MICRO
from lumen_jupyter.core.service import LumenService
from tests.core.helpers import MakeService, catalog, model, pool, who

TODAY = date(2026, 3, 4)  # a Wednesday


def at(day: date, hour: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=timezone.utc)


# (when, user, notebook, cell, input tokens, output tokens); "paid" costs 1000/2000 micro a token
CALLS = [
    (at(date(2026, 1, 20), 9), "alice", "a.ipynb", "c1", 100, 100),  # outside "month"
    (at(date(2026, 2, 27), 9), "alice", "a.ipynb", "c1", 1000, 0),
    (at(date(2026, 3, 2), 9), "alice", "a.ipynb", "c2", 0, 1000),
    (at(TODAY, 8), "alice", "a.ipynb", "c1", 10, 10),
    (at(TODAY, 9), "alice", "a.ipynb", None, 1, 1),
    (at(TODAY, 10), "alice", "b.ipynb", "c1", 500, 500),
    (at(TODAY, 10), "bob", "a.ipynb", "c1", 700, 700),
]


@pytest.fixture
def seeded(make_service: MakeService) -> LumenService:
    clock = FakeClock(CALLS[0][0])
    service = make_service(catalog(pool(1000), models={"paid": model("paid")}), clock=clock)
    paid = service.catalog.models["paid"]
    for when, user, notebook, cell, tin, tout in CALLS:
        clock.advance(when - clock.now())
        context = CallContext(
            account_id=service.account(user), source="kernel", notebook=notebook, cell=cell
        )
        service.calls.settle(
            service.calls.admit(who(user), context, paid, 50 * MICRO, "chat"), tin, tout
        )
    alice = CallContext(
        account_id=service.account("alice"), source="kernel", notebook="a.ipynb", cell="c3"
    )
    failed = service.calls.admit(who(), alice, paid, 10 * MICRO, "chat")
    service.calls.release(failed, status="error", http_status=502)
    service.calls.admit(who(), alice, paid, 10 * MICRO, "chat")  # still in flight
    clock.advance(at(TODAY, 12) - clock.now())
    return service


def counters(requests: int, tin: int, tout: int) -> dict[str, int | str]:
    coins = tin * 1000 + tout * 2000
    text = f"{coins / MICRO:.6f}".rstrip("0").rstrip(".")
    return {
        "requests": requests,
        "input_tokens": tin,
        "output_tokens": tout,
        "tokens": tin + tout,
        "coins_micro": coins,
        "coins": text,
    }


def test_month_by_day(seeded: LumenService) -> None:
    h = seeded.usage_history(who(), "month", None, "cell", "a.ipynb")
    assert (h["group_by"], h["notebook"], h["bucket"]) == ("cell", "a.ipynb", "day")
    assert (h["start"], h["end"], len(h["buckets"])) == ("2026-02-03", "2026-03-04", 30)
    values = {b["start"]: b["values"] for b in h["buckets"] if b["values"]}
    assert values == {
        "2026-02-27": {"c1": counters(1, 1000, 0)},
        "2026-03-02": {"c2": counters(1, 0, 1000)},
        "2026-03-04": {"c1": counters(1, 10, 10), "(unknown cell)": counters(1, 1, 1)},
    }
    assert h["series"] == ["c2", "c1", "(unknown cell)"]  # most coins first
    assert h["totals"]["c1"] == counters(2, 1010, 10)


def test_all_by_week_and_month(seeded: LumenService) -> None:
    weeks = seeded.usage_history(who(), "all", "week", "cell", "a.ipynb")
    assert weeks["start"] == "2026-01-20"
    assert weeks["buckets"][0] == {"start": "2026-01-19", "values": {"c1": counters(1, 100, 100)}}
    assert weeks["totals"]["c1"] == counters(3, 1110, 110)
    months = seeded.usage_history(who(), "all", None, "cell", "a.ipynb")
    assert [b["start"] for b in months["buckets"]] == ["2026-01-01", "2026-02-01", "2026-03-01"]
    assert months["buckets"][2]["values"]["c2"] == counters(1, 0, 1000)
    # the cells of the notebook add up to the notebook's own line in the daily counters
    by_notebook = seeded.usage_history(who(), "all", None, "notebook")["totals"]["a.ipynb"]
    coins = sum(v["coins_micro"] for v in months["totals"].values())
    requests = sum(v["requests"] for v in months["totals"].values())
    assert (coins, requests) == (by_notebook["coins_micro"], by_notebook["requests"])


def test_another_notebook_and_nothing(seeded: LumenService) -> None:
    b = seeded.usage_history(who(), "week", None, "cell", "b.ipynb")
    assert b["totals"] == {"c1": counters(1, 500, 500)}
    nothing = seeded.usage_history(who(), "week", None, "cell", "nope.ipynb")
    assert (nothing["series"], len(nothing["buckets"])) == ([], 7)
    assert len(seeded.usage_history(who(), "all", None, "cell", "nope.ipynb")["buckets"]) == 1


def test_cell_needs_a_notebook(seeded: LumenService) -> None:
    for notebook in (None, ""):
        with pytest.raises(BadRequest, match="group_by=cell needs notebook") as err:
            seeded.usage_history(who(), "week", None, "cell", notebook)
        assert err.value.details["param"] == "notebook"
    with pytest.raises(BadRequest) as err:
        seeded.usage_history(who(), "decade", None, "cell", "a.ipynb")
    assert err.value.details["param"] == "period"


def test_the_query_uses_the_notebook_index(seeded: LumenService) -> None:
    sql = (
        "SELECT count(*) FROM lumen_requests WHERE account_id = 1 AND notebook = 'a.ipynb' "
        "AND finished_at >= '2026-02-01'"
    )
    with seeded.store.read() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL enable_seqscan = off"))
            plan = " ".join(str(r[0]) for r in conn.execute(text("EXPLAIN " + sql)))
        else:
            plan = " ".join(str(r[-1]) for r in conn.execute(text("EXPLAIN QUERY PLAN " + sql)))
    assert "ix_lumen_requests_notebook" in plan
