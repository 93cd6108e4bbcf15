"""Usage: counters written with each settled call, and the queries behind the
profile tiles, the Web Chat Usage row, per-model stats and spending history.

Totals come from small counter tables (per user/model/source, per key, per
day), never from scanning the request log, so the profile stays fast with
millions of logged calls.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from typing import cast as typed

from sqlalchemy import ColumnElement, Connection, Date, and_, case, cast, desc, func, select

from ..store import Store
from ..store.schema import chat_conversations, usage_daily, usage_monthly, usage_stats
from . import wire
from .errors import BadRequest
from .money import format_coins

CHAT_SOURCE = "chat"
PERIODS = {"week": 7, "month": 30, "year": 365, "all": None}
DEFAULT_BUCKET = {"week": "day", "month": "day", "year": "month", "all": "month"}
BUCKETS = ("day", "week", "month")
GROUPINGS = ("model", "source", "key", "notebook", "cell")


@dataclass(frozen=True)
class Usage:
    """What one call consumed."""

    input_tokens: int
    output_tokens: int
    coins_micro: int

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def record_usage(
    store: Store,
    conn: Connection,
    account_id: int,
    *,
    model: str,
    source: str,
    key_id: int | None,
    notebook: str | None,
    usage: Usage,
    now: datetime,
    conversation: str | None = None,
) -> None:
    """Add one call to every counter, inside the caller's transaction."""
    counts = {
        "requests": 1,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "coins_micro": usage.coins_micro,
    }
    store.upsert(
        conn,
        usage_stats,
        {
            "account_id": account_id,
            "model": model,
            "source": source,
            "last_used_at": now,
            **counts,
        },
        keys=("account_id", "model", "source"),
        increments=tuple(counts),
        replace=("last_used_at",),
    )
    store.upsert(
        conn,
        usage_daily,
        {
            "account_id": account_id,
            "day": now.date(),
            "model": model,
            "source": source,
            "key_id": key_id or 0,
            "notebook": (notebook or "")[:1024],
            **counts,
        },
        keys=("account_id", "day", "model", "source", "key_id", "notebook"),
        increments=tuple(counts),
    )
    store.upsert(
        conn,
        usage_monthly,
        {"account_id": account_id, "month": now.date().replace(day=1), "model": model, **counts},
        keys=("account_id", "month", "model"),
        increments=tuple(counts),
    )
    if key_id is not None:
        from .keyring import count_use

        count_use(conn, key_id, usage.input_tokens, usage.output_tokens, usage.coins_micro, now)
    if source == CHAT_SOURCE and conversation:
        store.insert_ignore(
            conn,
            chat_conversations,
            {"account_id": account_id, "conversation": conversation, "started_at": now},
        )


@dataclass
class Counters:
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    coins_micro: int = 0
    last_used_at: datetime | None = None

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def add_counts(
        self, requests: int, input_tokens: int, output_tokens: int, coins_micro: int
    ) -> None:
        self.requests += int(requests)
        self.input_tokens += int(input_tokens)
        self.output_tokens += int(output_tokens)
        self.coins_micro += int(coins_micro)

    def add(self, row: Any) -> None:
        """Add a counter row that has ``last_used_at`` (``usage_stats``).

        Rows without it go through :meth:`add_counts`: a missing attribute on a
        SQLAlchemy Row raises inside ``getattr`` (~17 µs a row).
        """
        self.add_counts(row.requests, row.input_tokens, row.output_tokens, row.coins_micro)
        last = getattr(row, "last_used_at", None)
        if last is not None and (self.last_used_at is None or last > self.last_used_at):
            self.last_used_at = last


@dataclass
class Summary:
    """Everything the profile needs from the counters, read in one query."""

    total: Counters = field(default_factory=Counters)
    by_model: dict[str, Counters] = field(default_factory=dict)
    chat: Counters = field(default_factory=Counters)
    chat_conversations: int = 0

    @property
    def favorite_model(self) -> str | None:
        used = [(c.requests, name) for name, c in self.by_model.items() if c.requests > 0]
        if not used:
            return None
        return min(used, key=lambda item: (-item[0], item[1]))[1]


def summarize(conn: Connection, account_id: int, *, conversations: bool = True) -> Summary:
    summary = Summary()
    rows = conn.execute(select(usage_stats).where(usage_stats.c.account_id == account_id))
    for row in rows:
        summary.total.add(row)
        summary.by_model.setdefault(row.model, Counters()).add(row)
        if row.source == CHAT_SOURCE:
            summary.chat.add(row)
    if conversations:
        summary.chat_conversations = int(
            conn.execute(
                select(func.count()).where(chat_conversations.c.account_id == account_id)
            ).scalar_one()
        )
    return summary


def model_counters(
    conn: Connection, account_id: int, models: Sequence[str] | None = None
) -> dict[str, Counters]:
    """Each model's counters (of ``models``, or of all), summed by the database.

    What a page of the Model Access table needs: a few dozen rows of sums instead of
    every counter row of every model (:func:`summarize`)."""
    s = usage_stats.c
    query = select(
        s.model,
        func.sum(s.requests),
        func.sum(s.input_tokens),
        func.sum(s.output_tokens),
        func.sum(s.coins_micro),
        func.max(s.last_used_at),
    ).where(s.account_id == account_id)
    if models is not None:
        if not models:
            return {}
        query = query.where(s.model.in_(list(models)))
    found: dict[str, Counters] = {}
    for model, requests, input_tokens, output_tokens, coins_micro, last_used_at in conn.execute(
        query.group_by(s.model)
    ):
        counters = found[str(model)] = Counters(last_used_at=last_used_at)
        counters.add_counts(requests or 0, input_tokens or 0, output_tokens or 0, coins_micro or 0)
    return found


def profile_summary(conn: Connection, account_id: int) -> Summary:
    """The profile card's totals, summed by the database: all use, chat use, the
    favourite model (``by_model`` holds only it) and the chat conversations.

    :func:`summarize` turns every counter row (a model times a source: hundreds for a
    busy user) into Python objects, parsing each row's timestamp; the card needs three
    sums and one name, so the database does the adding up.
    """
    s = usage_stats.c
    summary = Summary()
    is_chat = case((s.source == CHAT_SOURCE, 1), else_=0).label("chat")
    sums = (
        func.sum(s.requests),
        func.sum(s.input_tokens),
        func.sum(s.output_tokens),
        func.sum(s.coins_micro),
    )
    latest = func.max(s.last_used_at)
    rows = conn.execute(
        select(is_chat, latest, *sums).where(s.account_id == account_id).group_by(is_chat)
    )
    for chat, last_used_at, requests, input_tokens, output_tokens, coins_micro in rows:
        counts = (requests or 0, input_tokens or 0, output_tokens or 0, coins_micro or 0)
        for counters in (summary.total, summary.chat) if chat else (summary.total,):
            counters.add_counts(*counts)
            if last_used_at is not None and (
                counters.last_used_at is None or last_used_at > counters.last_used_at
            ):
                counters.last_used_at = last_used_at
    used = func.sum(s.requests).label("used")
    top = conn.execute(
        select(s.model, used)
        .where(s.account_id == account_id)
        .group_by(s.model)
        .having(func.sum(s.requests) > 0)
        .order_by(desc(used), s.model)
        .limit(1)
    ).first()
    if top is not None:
        summary.by_model[str(top.model)] = Counters(requests=int(top.used))
    summary.chat_conversations = int(
        conn.execute(
            select(func.count()).where(chat_conversations.c.account_id == account_id)
        ).scalar_one()
    )
    return summary


def bucket_start(day: date, bucket: str) -> date:
    if bucket == "day":
        return day
    if bucket == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def _next_bucket(start: date, bucket: str) -> date:
    if bucket == "day":
        return start + timedelta(days=1)
    if bucket == "week":
        return start + timedelta(days=7)
    return (start.replace(day=28) + timedelta(days=4)).replace(day=1)


def validate_history_args(period: str, bucket: str | None, group_by: str) -> str:
    if period not in PERIODS:
        raise BadRequest(f"period must be one of {', '.join(PERIODS)}", param="period")
    if bucket is not None and bucket not in BUCKETS:
        raise BadRequest(f"bucket must be one of {', '.join(BUCKETS)}", param="bucket")
    if group_by not in GROUPINGS:
        raise BadRequest(f"group_by must be one of {', '.join(GROUPINGS)}", param="group_by")
    return bucket or DEFAULT_BUCKET[period]


def history(
    conn: Connection,
    account_id: int,
    *,
    period: str,
    bucket: str | None,
    group_by: str,
    today: date,
    key_names: dict[int, str] | None = None,
) -> wire.UsageHistory:
    """Spending over time: one entry per time bucket, split by ``group_by``.

    Buckets with no use are present (zeros), so a chart needs no gap logic.
    """
    bucket = validate_history_args(period, bucket, group_by)
    if group_by == "cell":
        raise BadRequest("group_by=cell is for one notebook: see cell_usage", param="group_by")
    days = PERIODS[period]
    conditions = [usage_daily.c.account_id == account_id]
    if days is not None:
        conditions.append(usage_daily.c.day > today - timedelta(days=days))
    column = {
        "model": usage_daily.c.model,
        "source": usage_daily.c.source,
        "key": usage_daily.c.key_id,
        "notebook": usage_daily.c.notebook,
    }[group_by]
    source: Any = usage_daily
    bucket_column = _bucket_sql(conn.dialect.name, bucket).label("bucket")
    if days is None and bucket == "month" and group_by == "model":
        # All time by month and model: the monthly roll-up has exactly that shape.
        source = usage_monthly
        conditions = [usage_monthly.c.account_id == account_id]
        column = usage_monthly.c.model
        bucket_column = usage_monthly.c.month.label("bucket")
    rows = conn.execute(
        select(
            bucket_column,
            column.label("series"),
            func.sum(source.c.requests).label("requests"),
            func.sum(source.c.input_tokens).label("input_tokens"),
            func.sum(source.c.output_tokens).label("output_tokens"),
            func.sum(source.c.coins_micro).label("coins_micro"),
        )
        .where(and_(*conditions))
        .group_by(bucket_column, column)
    ).all()
    names = key_names or {}

    def series_name(value: Any) -> str:
        if group_by == "key":
            return names.get(int(value), f"key {value}") if value else "(no key)"
        if group_by == "notebook":
            return str(value) or "(unknown)"
        return str(value)

    if days is not None:
        start_day = today - timedelta(days=days - 1)
    else:
        first = conn.execute(
            select(func.min(usage_daily.c.day)).where(usage_daily.c.account_id == account_id)
        ).scalar_one_or_none()
        start_day = _as_date(first) if first is not None else today
    return shape_history(
        ((_as_date(row.bucket), series_name(row.series), row) for row in rows),
        period=period,
        bucket=bucket,
        group_by=group_by,
        start_day=start_day,
        today=today,
    )


def shape_history(
    rows: Iterable[tuple[date, str, Any]],
    *,
    period: str,
    bucket: str,
    group_by: str,
    start_day: date,
    today: date,
) -> wire.UsageHistory:
    """The history document from ``(bucket start, series, counters row)`` triples; every
    bucket from ``start_day`` to ``today`` is present."""
    grid: dict[date, dict[str, Counters]] = {}
    cursor = bucket_start(start_day, bucket)
    while cursor <= today:
        grid[cursor] = {}
        cursor = _next_bucket(cursor, bucket)
    totals: dict[str, Counters] = defaultdict(Counters)
    for key, name, row in rows:
        counts = (row.requests, row.input_tokens, row.output_tokens, row.coins_micro)
        grid.setdefault(key, {}).setdefault(name, Counters()).add_counts(*counts)
        totals[name].add_counts(*counts)
    series = sorted(totals, key=lambda n: (-totals[n].coins_micro, -totals[n].tokens, n))
    return {
        "period": typed(wire.Period, period),
        "bucket": typed(wire.Bucket, bucket),
        "group_by": group_by,
        "start": start_day.isoformat(),
        "end": today.isoformat(),
        "series": series,
        "buckets": [
            {
                "start": day.isoformat(),
                "values": {name: _counters_json(c) for name, c in sorted(grid[day].items())},
            }
            for day in sorted(grid)
        ],
        "totals": {name: _counters_json(totals[name]) for name in series},
    }


def _bucket_sql(dialect: str, bucket: str) -> ColumnElement[Any]:
    """The first day of each row's bucket, computed by the database so that it groups
    days into weeks (Monday) or months itself and returns few rows."""
    day = usage_daily.c.day
    if bucket == "day":
        return day
    if dialect == "postgresql":
        return cast(func.date_trunc(bucket, day), Date)
    if bucket == "week":
        return func.date(day, "weekday 0", "-6 days")
    return func.strftime("%Y-%m-01", day)


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


def _counters_json(c: Counters) -> wire.UsageValues:
    return {
        "requests": c.requests,
        "input_tokens": c.input_tokens,
        "output_tokens": c.output_tokens,
        "tokens": c.tokens,
        "coins_micro": c.coins_micro,
        "coins": format_coins(c.coins_micro),
    }
