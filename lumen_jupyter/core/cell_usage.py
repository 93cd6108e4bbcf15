"""Spending per cell of one notebook, read from the request log.

The daily counters stop at the notebook: a row per cell per day would make them
nearly as large as the log itself.  One notebook's calls in a period are few, and
the log's index on (account, notebook, finished_at) - migration 5 - finds them
without scanning anyone else's calls, so the log answers this directly.  A call
counts on the day it was settled, as in the daily counters.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from sqlalchemy import ColumnElement, Connection, Date, and_, cast, func, select

from ..store.schema import requests_log
from . import wire
from .errors import BadRequest
from .usage import PERIODS, bucket_start, shape_history, validate_history_args

SETTLED = ("ok", "aborted", "partial", "interrupted")
"""The statuses of calls that were charged; released calls (error, abandoned) used nothing."""

NO_CELL = "(unknown cell)"
"""The series of calls that named the notebook but no cell (a script, a terminal)."""


def cell_history(
    conn: Connection,
    account_id: int,
    *,
    notebook: str | None,
    period: str,
    bucket: str | None,
    today: date,
) -> wire.UsageHistory:
    """Like :func:`~.usage.history` split by cell, for the calls from ``notebook``
    (its path as the kernel reports it).  The document also names the notebook."""
    bucket = validate_history_args(period, bucket, "cell")
    if not notebook:
        raise BadRequest(
            "group_by=cell needs notebook: the path of the notebook to split", param="notebook"
        )
    log = requests_log
    days = PERIODS[period]
    conditions = [
        log.c.account_id == account_id,
        log.c.notebook == notebook,
        log.c.status.in_(SETTLED),
    ]
    if days is not None:
        start_day = today - timedelta(days=days - 1)
        conditions.append(
            log.c.finished_at >= datetime.combine(start_day, time(), tzinfo=timezone.utc)
        )
    day = _day_sql(conn.dialect.name).label("day")
    rows = conn.execute(
        select(
            day,
            log.c.cell,
            func.count().label("requests"),
            func.sum(log.c.input_tokens).label("input_tokens"),
            func.sum(log.c.output_tokens).label("output_tokens"),
            func.sum(log.c.coins_micro).label("coins_micro"),
        )
        .where(and_(*conditions))
        .group_by(day, log.c.cell)
    ).all()
    by_day = [(_as_date(row.day), row) for row in rows]
    if days is None:
        start_day = min((d for d, _ in by_day), default=today)
    result = shape_history(
        ((bucket_start(d, bucket), str(row.cell or NO_CELL), row) for d, row in by_day),
        period=period,
        bucket=bucket,
        group_by="cell",
        start_day=start_day,
        today=today,
    )
    result["notebook"] = notebook
    return result


def _day_sql(dialect: str) -> ColumnElement[Any]:
    if dialect == "postgresql":
        return cast(requests_log.c.finished_at, Date)
    return func.date(requests_log.c.finished_at)


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value))
