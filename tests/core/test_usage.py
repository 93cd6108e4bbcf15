"""Profile tiles, the Web Chat Usage row, pool states and the spending history.

One seeded history (nine settled calls over fourteen months, three models, four sources,
two keys, two notebooks, plus a failed and a pending call) and exact expected numbers.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any

import pytest

from lumen_jupyter.core.accounts import Identity
from lumen_jupyter.core.billing import CallContext
from lumen_jupyter.core.catalog import Catalog, GroupSpec
from lumen_jupyter.core.clock import FakeClock
from lumen_jupyter.core.errors import BadRequest
from lumen_jupyter.core.money import MICRO, format_coins
from lumen_jupyter.core.service import LumenService
from lumen_jupyter.core.usage import validate_history_args
from tests.core.helpers import MakeService, assert_ledger_invariant, catalog, model, pool, who

D0 = datetime(2025, 1, 15, 9, 0, tzinfo=timezone.utc)  # outside "year"
TODAY = date(2026, 3, 4)  # a Wednesday


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=timezone.utc)


def usage_catalog() -> Catalog:
    return catalog(
        pool(1000),
        models={
            "alpha": model("alpha", 1000 * MICRO, 2000 * MICRO),  # 1000 / 2000 micro a token
            "beta": model("beta", 500 * MICRO, 1000 * MICRO),
            "gamma": model("gamma", 0, 0),
        },
        groups={
            "default": GroupSpec(name="default"),
            "physics": GroupSpec(name="physics"),
        },
    )


# (when, model, source, key, notebook, conversation, input tokens, output tokens, coins)
CALLS: list[tuple[datetime, str, str, str | None, str | None, str | None, int, int, int]] = [
    (D0, "alpha", "api", "laptop", None, None, 1000, 500, 2_000_000),
    (at(date(2025, 12, 20), 10), "beta", "kernel", None, "a.ipynb", None, 2000, 1000, 2_000_000),
    (at(date(2026, 2, 10), 11), "alpha", "chat", None, None, "c1", 100, 100, 300_000),
    (at(date(2026, 2, 10), 11, 5), "alpha", "chat", None, None, "c1", 200, 100, 400_000),
    (at(date(2026, 3, 2), 8), "beta", "chat", None, None, "c2", 1000, 0, 500_000),
    (at(date(2026, 3, 2), 9), "gamma", "kernel", None, "a.ipynb", None, 5000, 5000, 0),
    (at(TODAY, 10), "beta", "api", "ci", None, None, 0, 100, 100_000),
    (at(TODAY, 11), "gamma", "api", "laptop", None, None, 10, 10, 0),
    (at(TODAY, 11, 30), "alpha", "chat", None, None, "c2", 100, 0, 100_000),
]
LAST_CHAT = "2026-03-04T11:30:00.000Z"


UNCAPPED = 50_000_000
"""A worst case (50 coins) above what any call here costs, so no charge is capped."""


def ctx(service: LumenService, source: str, key: int | None, **kw: Any) -> CallContext:
    return CallContext(account_id=service.account("alice"), source=source, key_id=key, **kw)


@pytest.fixture
def seeded(make_service: MakeService) -> LumenService:
    clock = FakeClock(D0)
    service = make_service(usage_catalog(), clock=clock)
    alice = who("alice", ("default", "physics"))
    keys = {name: service.create_key(alice, name)["id"] for name in ("laptop", "ci")}
    for when, name, source, key, notebook, conversation, tin, tout, coins in CALLS:
        clock.advance(when - clock.now())
        context = ctx(
            service,
            source,
            keys[key] if key else None,
            notebook=notebook,
            conversation=conversation,
        )
        admission = service.calls.admit(
            alice, context, service.catalog.models[name], UNCAPPED, "chat"
        )
        settled = service.calls.settle(admission, tin, tout)
        assert settled is not None and settled.coins_micro == coins
    # a failed call and one still in flight count nowhere
    failed = service.calls.admit(
        alice, ctx(service, "api", keys["ci"]), service.catalog.models["alpha"], 0, "chat"
    )
    service.calls.release(failed, status="error", http_status=502)
    service.calls.admit(
        alice,
        ctx(service, "chat", None, conversation="c9"),
        service.catalog.models["alpha"],
        0,
        "chat",
    )
    clock.advance(at(TODAY, 12) - clock.now())
    return service


def test_profile_tiles_and_web_chat_row(seeded: LumenService) -> None:
    profile = seeded.profile(who("alice", ("default", "physics")))
    tiles = profile["tiles"]
    assert tiles["groups"] == ["physics"]
    assert tiles["coins_used"] == {"micro": 5_400_000, "text": "5.4"}
    assert tiles["tokens_used"] == 16_220
    assert tiles["favorite_model"] == "alpha"
    assert profile["web_chat"] == {
        "conversations": 2,
        "requests": 4,
        "input_tokens": 1400,
        "output_tokens": 200,
        "tokens": 1600,
        "coins_micro": 1_300_000,
        "coins": "1.3",
        "last_used_at": LAST_CHAT,
    }
    assert profile["pool"]["state"] == "limited"
    assert profile["pool"]["balance"]["micro"] == 1000 * MICRO - 5_400_000
    keys = {k["name"]: k for k in seeded.list_keys(who())}
    assert (keys["laptop"]["requests"], keys["laptop"]["tokens"]) == (2, 1520)
    assert keys["laptop"]["coins_micro"] == 2_000_000
    assert (keys["ci"]["requests"], keys["ci"]["coins_micro"]) == (1, 100_000)
    by_model = {m["name"]: m["usage"] for m in seeded.list_models(who())}
    assert {n: u["requests"] for n, u in by_model.items()} == {"alpha": 4, "beta": 3, "gamma": 2}
    assert by_model["beta"]["coins_micro"] == 2_600_000
    assert by_model["alpha"]["last_used_at"] == LAST_CHAT
    assert_ledger_invariant(seeded.store)


def counters(requests: int, tin: int, tout: int, coins: int) -> dict[str, int | str]:
    return {
        "requests": requests,
        "input_tokens": tin,
        "output_tokens": tout,
        "tokens": tin + tout,
        "coins_micro": coins,
        "coins": format_coins(coins),
    }


def test_history_week_by_day_and_model(seeded: LumenService) -> None:
    h = seeded.usage_history(who(), "week", None, "model")
    assert (h["bucket"], h["start"], h["end"]) == ("day", "2026-02-26", "2026-03-04")
    assert [b["start"] for b in h["buckets"]] == [
        "2026-02-26",
        "2026-02-27",
        "2026-02-28",
        "2026-03-01",
        "2026-03-02",
        "2026-03-03",
        "2026-03-04",
    ]
    values = {b["start"]: b["values"] for b in h["buckets"]}
    assert values["2026-02-26"] == values["2026-03-03"] == {}
    assert values["2026-03-02"] == {
        "beta": counters(1, 1000, 0, 500_000),
        "gamma": counters(1, 5000, 5000, 0),
    }
    assert values["2026-03-04"] == {
        "alpha": counters(1, 100, 0, 100_000),
        "beta": counters(1, 0, 100, 100_000),
        "gamma": counters(1, 10, 10, 0),
    }
    assert h["series"] == ["beta", "alpha", "gamma"]
    assert h["totals"] == {
        "beta": counters(2, 1000, 100, 600_000),
        "alpha": counters(1, 100, 0, 100_000),
        "gamma": counters(2, 5010, 5010, 0),
    }


def test_history_month_by_week_and_source(seeded: LumenService) -> None:
    h = seeded.usage_history(who(), "month", "week", "source")
    assert (h["start"], h["end"]) == ("2026-02-03", "2026-03-04")
    assert [b["start"] for b in h["buckets"]] == [
        "2026-02-02",
        "2026-02-09",
        "2026-02-16",
        "2026-02-23",
        "2026-03-02",
    ]
    values = [b["values"] for b in h["buckets"]]
    assert values[0] == values[2] == values[3] == {}
    assert values[1] == {"chat": counters(2, 300, 200, 700_000)}
    assert values[4] == {
        "api": counters(2, 10, 110, 100_000),
        "chat": counters(2, 1100, 0, 600_000),
        "kernel": counters(1, 5000, 5000, 0),
    }
    assert h["series"] == ["chat", "api", "kernel"]
    assert h["totals"]["chat"] == counters(4, 1400, 200, 1_300_000)


def test_history_year_by_month_and_key(seeded: LumenService) -> None:
    h = seeded.usage_history(who(), "year", None, "key")
    assert (h["bucket"], h["start"]) == ("month", "2025-03-05")
    starts = [b["start"] for b in h["buckets"]]
    assert starts == [f"2025-{m:02d}-01" for m in range(3, 13)] + [
        "2026-01-01",
        "2026-02-01",
        "2026-03-01",
    ]
    values = {b["start"]: b["values"] for b in h["buckets"]}
    assert sum(1 for v in values.values() if v) == 3
    assert values["2025-12-01"] == {"(no key)": counters(1, 2000, 1000, 2_000_000)}
    assert values["2026-02-01"] == {"(no key)": counters(2, 300, 200, 700_000)}
    assert values["2026-03-01"] == {
        "(no key)": counters(3, 6100, 5000, 600_000),
        "ci": counters(1, 0, 100, 100_000),
        "laptop": counters(1, 10, 10, 0),
    }
    assert h["series"] == ["(no key)", "ci", "laptop"]
    assert h["totals"]["(no key)"] == counters(6, 8400, 6200, 3_300_000)


def test_history_all_by_month_and_notebook(seeded: LumenService) -> None:
    h = seeded.usage_history(who(), "all", None, "notebook")
    assert (h["bucket"], h["start"], h["end"]) == ("month", "2025-01-15", "2026-03-04")
    assert len(h["buckets"]) == 15  # January 2025 to March 2026, empty months included
    values = {b["start"]: b["values"] for b in h["buckets"]}
    assert values["2025-01-01"] == {"(unknown)": counters(1, 1000, 500, 2_000_000)}
    assert values["2025-12-01"] == {"a.ipynb": counters(1, 2000, 1000, 2_000_000)}
    assert values["2026-03-01"] == {
        "(unknown)": counters(4, 1110, 110, 700_000),
        "a.ipynb": counters(1, 5000, 5000, 0),
    }
    assert h["series"] == ["(unknown)", "a.ipynb"]
    assert h["totals"] == {
        "(unknown)": counters(7, 2410, 810, 3_400_000),
        "a.ipynb": counters(2, 7000, 6000, 2_000_000),
    }


def test_history_all_by_day_covers_every_day(seeded: LumenService) -> None:
    h = seeded.usage_history(who(), "all", "day", "model")
    assert len(h["buckets"]) == (TODAY - D0.date()).days + 1
    grand = sum(v["coins_micro"] for b in h["buckets"] for v in b["values"].values())
    assert grand == 5_400_000


def test_history_without_usage(make_service: MakeService) -> None:
    service = make_service(usage_catalog())
    h = service.usage_history(who(), "week", None, "model")
    assert len(h["buckets"]) == 7
    assert all(b["values"] == {} for b in h["buckets"])
    assert (h["series"], h["totals"]) == ([], {})
    assert len(service.usage_history(who(), "all", None, "model")["buckets"]) == 1


@pytest.mark.parametrize(
    ("period", "bucket", "group_by", "param"),
    [
        ("decade", None, "model", "period"),
        ("week", "hour", "model", "bucket"),
        ("week", None, "colour", "group_by"),
        ("", None, "model", "period"),
    ],
)
def test_history_rejects_bad_arguments(
    period: str, bucket: str | None, group_by: str, param: str
) -> None:
    with pytest.raises(BadRequest) as err:
        validate_history_args(period, bucket, group_by)
    assert err.value.details["param"] == param


def test_service_history_rejects_bad_arguments(make_service: MakeService) -> None:
    service = make_service(usage_catalog())
    for args in (("decade", None, "model"), ("week", "hour", "model"), ("week", None, "x")):
        with pytest.raises(BadRequest):
            service.usage_history(who(), *args)


def test_favorite_model_ties_go_alphabetical(make_service: MakeService) -> None:
    service = make_service(usage_catalog())
    assert service.profile(who())["tiles"]["favorite_model"] is None
    for name in ("gamma", "beta", "gamma", "beta"):
        admission = service.calls.admit(
            who(), ctx(service, "api", None), service.catalog.models[name], UNCAPPED, "chat"
        )
        service.calls.settle(admission, 1, 1)
    assert service.profile(who())["tiles"]["favorite_model"] == "beta"
    admission = service.calls.admit(
        who(), ctx(service, "api", None), service.catalog.models["gamma"], UNCAPPED, "chat"
    )
    service.calls.settle(admission, 1, 1)
    assert service.profile(who())["tiles"]["favorite_model"] == "gamma"
    assert_ledger_invariant(service.store)


def test_pool_states_on_the_profile(make_service: MakeService) -> None:
    assert make_service(catalog(None)).profile(who())["pool"] == {"state": "none", "source": None}
    unlimited = make_service(catalog(pool(None))).profile(who("u"))["pool"]
    assert unlimited == {"state": "unlimited", "source": "default"}

    limited = make_service(catalog(pool(10, refresh=1, starting=2)))
    state = limited.profile(who("l"))["pool"]
    assert state["state"] == "limited"
    assert (state["balance"]["text"], state["max"]["text"]) == ("2", "10")
    assert state["refresh_per_hour"]["text"] == "1"
    assert state["exhausted"] is False
    assert state["next_refill_at"] is not None

    limited.grant(who("l"), -2 * MICRO)
    state = limited.profile(who("l"))["pool"]
    assert (state["state"], state["exhausted"], state["balance"]["micro"]) == ("limited", True, 0)
    assert_ledger_invariant(limited.store)


def test_profile_card(make_service: MakeService) -> None:
    service = make_service(usage_catalog())
    card = service.profile(Identity("ada", "Ada Lovelace", email=" Ada@Example.org "))["user"]
    assert card["initials"] == "AL"
    assert card["avatar_url"].startswith("https://www.gravatar.com/avatar/")
    assert card["avatar_url"].endswith("?d=mp&s=160")
    same = service.profile(Identity("ada", "Ada Lovelace", email="ada@example.org"))["user"]
    assert same["avatar_url"] == card["avatar_url"]
    assert service.profile(Identity("bob", "Bob"))["user"]["avatar_url"] is None


def test_history_all_by_model_reads_the_monthly_rollup(seeded: LumenService) -> None:
    """All time by month and model comes from the monthly table: it must agree, month by
    month, with the daily counters and, in total, with the per-model counters."""
    monthly = seeded.usage_history(who(), "all", None, "model")
    by_day = seeded.usage_history(who(), "all", "day", "model")
    assert monthly["bucket"] == "month" and monthly["start"] == by_day["start"]
    folded: dict[str, dict[str, int]] = {}
    for bucket in by_day["buckets"]:
        month = bucket["start"][:8] + "01"
        for name, value in bucket["values"].items():
            into = folded.setdefault(f"{month} {name}", {"requests": 0, "coins_micro": 0})
            into["requests"] += value["requests"]
            into["coins_micro"] += value["coins_micro"]
    read = {
        f"{bucket['start']} {name}": {"requests": v["requests"], "coins_micro": v["coins_micro"]}
        for bucket in monthly["buckets"]
        for name, v in bucket["values"].items()
    }
    assert read == folded and read
    summary = seeded.summary(who())
    assert {n: t["coins_micro"] for n, t in monthly["totals"].items()} == {
        n: c.coins_micro for n, c in summary.by_model.items()
    }


def test_the_profile_sums_agree_with_the_counter_rows(seeded: LumenService) -> None:
    """The card's totals summed by the database equal the row-by-row summary."""
    from lumen_jupyter.core.usage import profile_summary, summarize

    acct = seeded.account(who("alice", ("default", "physics")).username)
    with seeded.store.read() as conn:
        rows = summarize(conn, acct)
        summed = profile_summary(conn, acct)
    assert rows.total.requests > 0 and rows.chat.requests > 0
    for part in ("requests", "input_tokens", "output_tokens", "coins_micro"):
        assert getattr(summed.total, part) == getattr(rows.total, part)
        assert getattr(summed.chat, part) == getattr(rows.chat, part)
    assert summed.chat.last_used_at == rows.chat.last_used_at is not None
    assert summed.total.last_used_at == rows.total.last_used_at
    assert summed.favorite_model == rows.favorite_model is not None
    assert summed.chat_conversations == rows.chat_conversations > 0


def test_model_counters_summed_by_the_database_agree_with_the_counter_rows(
    seeded: LumenService,
) -> None:
    """A page of the Model Access table reads its models' sums; they equal the
    row-by-row summary, for all models and for a few."""
    from lumen_jupyter.core.paging import Page
    from lumen_jupyter.core.usage import model_counters, summarize

    alice = who("alice", ("default", "physics"))
    acct = seeded.account(alice.username)
    with seeded.store.read() as conn:
        rows = summarize(conn, acct)
        every = model_counters(conn, acct)
        some = model_counters(conn, acct, ["beta", "unknown"])
        none = model_counters(conn, acct, [])
    assert set(every) == set(rows.by_model) == {"alpha", "beta", "gamma"}
    assert every == rows.by_model
    assert some == {"beta": rows.by_model["beta"]} and none == {}
    assert every["alpha"].last_used_at == at(TODAY, 11, 30)
    whole, total = seeded.list_models_page(alice, Page())
    assert whole == seeded.list_models(alice) and total == 3
    page, total = seeded.list_models_page(alice, Page(limit=1, offset=1))
    assert page == [whole[1]] and page[0]["name"] == "beta" and total == 3
    assert page[0]["usage"]["requests"] == 3
