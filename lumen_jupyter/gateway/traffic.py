"""The model calls of the last day, read back from the request log at start-up.

``/v1/models`` reports each model's requests in the last minute, hour and day.  The
gateway counts them in memory as calls come (cheap on the hot path); the request log
already holds every admitted call with its time, so a restarted server reads the
last day back from it once instead of starting from zero.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select

from ..store import Store
from ..store.schema import requests_log

DAY = timedelta(days=1)
BATCH = 2000
SLACK = timedelta(hours=1)
"""Ids follow admission order closely but not exactly (servers sharing a store); reading
back this far past the day makes sure no call of the day is missed."""


def recent_calls(store: Store, now: datetime) -> list[tuple[str, float]]:
    """``(model, seconds ago)`` of every call admitted in the day before ``now``, oldest
    first, by every server on this store.

    Read newest first along the primary key and stopped once past the day, so a long
    log costs no more than its last day (no index on the time alone is needed)."""
    log = requests_log
    since = now - DAY
    calls: list[tuple[str, float]] = []
    before: int | None = None
    with store.read() as conn:
        while True:
            query = select(log.c.id, log.c.model, log.c.created_at)
            if before is not None:
                query = query.where(log.c.id < before)
            rows = conn.execute(query.order_by(log.c.id.desc()).limit(BATCH)).all()
            for _id, model, created_at in rows:
                if since < created_at <= now:
                    calls.append((str(model), (now - created_at).total_seconds()))
            if len(rows) < BATCH or rows[-1].created_at < since - SLACK:
                break
            before = int(rows[-1].id)
    calls.sort(key=lambda call: -call[1])
    return calls
