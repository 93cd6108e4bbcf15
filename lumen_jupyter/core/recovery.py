"""Which server process holds a pending call, and settling the calls of one that died.

Several servers may share one store (a user's named servers, two servers started
by hand, a shared database).  A pending call is not abandoned just because it is
old: it may be a long stream another server is still relaying.  So every server
registers as an *instance* with a heartbeat, each call it admits carries its
instance id, and only the calls of a dead instance are reconciled: its heartbeat
is older than ``stale_after``, or it ran on this host under a process id that no
longer exists (a server killed with ``kill -9`` and started again is recognised
at once, not after the stale time).

A dead instance's streams have recorded the output they delivered, at least once
a second (:func:`billing.record_progress`); such a call is settled for its input
estimate and that output (``interrupted``), capped as always, and a call that
delivered nothing is released (``abandoned``).  The claim on each call is the
same conditional UPDATE as a normal settle, so two servers reconciling at once,
or a server that was only slow, can never bill a call twice.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, select, update

from ..store import Store
from ..store.schema import instances, requests_log
from . import billing
from .catalog import Catalog
from .usage import Usage

HEARTBEAT_SECONDS = 5.0
"""How often a live server says so."""

STALE_AFTER_SECONDS = 30.0
"""A server silent this long is taken for dead (six missed heartbeats)."""


@dataclass(frozen=True)
class Instance:
    """This server process, as the store knows it."""

    id: str
    host: str
    pid: int


@dataclass(frozen=True)
class Recovered:
    """What reconciling dead instances did."""

    instances: int = 0
    settled: int = 0
    released: int = 0


def this_host() -> str:
    """Where this process's id means something: the host name and, where Linux tells,
    the PID namespace (containers that share a host name, e.g. with host networking,
    each have their own process ids, so one must not judge another's by its pid)."""
    name = socket.gethostname()
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return name
    return f"{name}/pid:{namespace}"


def process_exists(pid: int) -> bool:
    """Whether a process with this id runs on this host (signal 0 checks, sends nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, as another user's process
    except OSError:
        return False
    return True


def register(conn: Connection, me: Instance, now: datetime) -> None:
    conn.execute(
        instances.insert().values(
            id=me.id, host=me.host, pid=me.pid, started_at=now, heartbeat_at=now
        )
    )


def heartbeat(conn: Connection, me: Instance, now: datetime) -> None:
    """Say this instance lives; registers it again if another took it for dead."""
    touched = conn.execute(
        update(instances).where(instances.c.id == me.id).values(heartbeat_at=now)
    ).rowcount
    if touched != 1:
        register(conn, me, now)


def dead_instances(
    conn: Connection,
    me: Instance,
    now: datetime,
    *,
    stale_after: float = STALE_AFTER_SECONDS,
    process_exists: Callable[[int], bool] = process_exists,
) -> list[str]:
    """Instances whose heartbeat is stale, or whose process on this host is gone."""
    stale_before = now - timedelta(seconds=stale_after)
    dead: list[str] = []
    for row in conn.execute(select(instances.c.id, instances.c.host, instances.c.pid)):
        if row.id == me.id:
            continue
        same_host = row.host == me.host
        gone = same_host and (row.pid == me.pid or not process_exists(int(row.pid)))
        if gone:
            dead.append(str(row.id))
    stale = conn.execute(
        select(instances.c.id).where(
            instances.c.heartbeat_at < stale_before, instances.c.id != me.id
        )
    ).scalars()
    dead.extend(str(each) for each in stale if each not in dead)
    # Calls whose instance is not registered at all (it was reconciled as dead while
    # still admitting, or removed by hand): nobody will settle them but us.
    known = select(instances.c.id)
    unowned = conn.execute(
        select(requests_log.c.instance_id)
        .where(
            requests_log.c.status == "pending",
            requests_log.c.instance_id.is_not(None),
            requests_log.c.instance_id.not_in(known),
            requests_log.c.created_at < stale_before,
        )
        .distinct()
    ).scalars()
    dead.extend(str(each) for each in unowned if each not in dead)
    return dead


def reconcile(
    store: Store,
    conn: Connection,
    catalog: Catalog,
    instance_id: str | None,
    now: datetime,
    *,
    started_before: datetime | None = None,
) -> tuple[int, int]:
    """Settle or release the pending calls of a dead instance; returns (settled, released).

    ``instance_id`` ``None`` means calls admitted before instances existed; only those
    created before ``started_before`` are taken.
    """
    query = select(requests_log.c.id).where(requests_log.c.status == "pending")
    if instance_id is None:
        query = query.where(requests_log.c.instance_id.is_(None))
        if started_before is not None:
            query = query.where(requests_log.c.created_at < started_before)
    else:
        query = query.where(requests_log.c.instance_id == instance_id)
    settled = released = 0
    for request_id in conn.execute(query).scalars().all():
        row = conn.execute(
            select(
                requests_log.c.model, requests_log.c.input_tokens, requests_log.c.output_tokens
            ).where(requests_log.c.id == request_id)
        ).one()
        model = catalog.models.get(str(row.model))
        delivered = int(row.output_tokens or 0)
        if delivered > 0 and model is not None:
            used_in = int(row.input_tokens or 0)
            cost = billing.actual_cost(model, used_in, delivered)
            done = billing.settle(
                store,
                conn,
                int(request_id),
                usage=Usage(used_in, delivered, cost),
                status="interrupted",
                estimated=True,
                http_status=None,
                now=now,
            )
            settled += done is not None
        elif billing.release(conn, int(request_id), status="abandoned", http_status=None, now=now):
            released += 1
    if instance_id is not None:
        conn.execute(delete(instances).where(instances.c.id == instance_id))
    return settled, released
