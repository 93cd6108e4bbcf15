"""Recovery after a crash frees only dead servers' calls, and bills what they delivered.

Two services on one store stand for two server processes: each registers an
instance.  Process ids are chosen so that the rules can be told apart: a live
process (this one, or its parent), or one that has exited.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from sqlalchemy import select

from lumen_jupyter.core import recovery
from lumen_jupyter.core.catalog import Catalog
from lumen_jupyter.core.clock import FakeClock
from lumen_jupyter.core.money import MICRO
from lumen_jupyter.core.service import LumenService
from lumen_jupyter.store.schema import instances, requests_log
from tests.core.helpers import (
    WORST,
    MakeService,
    admit,
    assert_ledger_invariant,
    balance,
    catalog,
    pool,
)

HOST = recovery.this_host()


def exited_pid() -> int:
    """The id of a process that has already ended."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def server(make: MakeService, cat: Catalog, name: str, pid: int, host: str = HOST) -> LumenService:
    service = make(cat)
    service.register_instance(recovery.Instance(name, host, pid))
    return service


def status(service: LumenService, request_id: int) -> tuple[str, int, int]:
    with service.store.read() as conn:
        row = conn.execute(select(requests_log).where(requests_log.c.id == request_id)).one()
    return str(row.status), int(row.output_tokens), int(row.coins_micro)


@pytest.fixture
def cat() -> Catalog:
    return catalog(pool(11))


def test_a_second_server_never_frees_a_live_servers_calls(
    make_service: MakeService, cat: Catalog
) -> None:
    first = server(make_service, cat, "first", os.getpid())
    calls = [admit(first) for _ in range(5)]
    second = server(make_service, cat, "second", os.getppid())
    found = second.recover(started_before=second.clock.now())
    assert found == recovery.Recovered(0, 0, 0)
    assert all(status(first, c.request_id)[0] == "pending" for c in calls)
    for call in calls:  # the first server finishes its calls normally
        assert first.calls.settle(call, 10, 20) is not None
    assert balance(first.store) == 11 * MICRO - 5 * 50_000
    assert_ledger_invariant(first.store)


def test_a_dead_process_on_this_host_is_reconciled_at_once(
    make_service: MakeService, cat: Catalog
) -> None:
    dead = server(make_service, cat, "dead", exited_pid())
    streaming = admit(dead)
    waiting = admit(dead)
    with dead.store.write() as conn:  # the stream had delivered 120 tokens
        assert dead.calls.record_progress_in(conn, streaming, 120) is None
    survivor = server(make_service, cat, "survivor", os.getpid())
    found = survivor.recover()
    assert found == recovery.Recovered(instances=1, settled=1, released=1)
    # billed for the input estimate (0 here) and the delivered output: 120 x 2,000
    assert status(survivor, streaming.request_id) == ("interrupted", 120, 240_000)
    assert status(survivor, waiting.request_id) == ("abandoned", 0, 0)
    assert balance(survivor.store) == 11 * MICRO - 240_000
    with survivor.store.read() as conn:
        assert conn.execute(select(instances.c.id)).scalars().all() == ["survivor"]
    assert survivor.recover() == recovery.Recovered(0, 0, 0)  # nothing twice
    assert_ledger_invariant(survivor.store)


def test_a_server_elsewhere_is_dead_only_once_its_heartbeat_is_stale(
    make_service: MakeService, cat: Catalog, clock: FakeClock
) -> None:
    remote = server(make_service, cat, "remote", 1, host="another-host")
    call = admit(remote)
    local = server(make_service, cat, "local", os.getpid())
    clock.advance(seconds=recovery.STALE_AFTER_SECONDS - 1)
    assert local.recover().instances == 0
    with remote.store.write() as conn:
        remote.heartbeat_in(conn)  # it beats: fresh again
    clock.advance(seconds=recovery.STALE_AFTER_SECONDS - 1)
    assert local.recover().instances == 0
    clock.advance(seconds=2)
    assert local.recover() == recovery.Recovered(1, 0, 1)
    assert status(local, call.request_id)[0] == "abandoned"
    assert balance(local.store) == 11 * MICRO
    assert_ledger_invariant(local.store)


def test_a_server_taken_for_dead_registers_again_and_cannot_bill_twice(
    make_service: MakeService, cat: Catalog, clock: FakeClock
) -> None:
    slow = server(make_service, cat, "slow", 1, host="another-host")
    call = admit(slow)
    with slow.store.write() as conn:
        slow.calls.record_progress_in(conn, call, 50)
    judge = server(make_service, cat, "judge", os.getpid())
    clock.advance(seconds=recovery.STALE_AFTER_SECONDS + 1)
    assert judge.recover().settled == 1
    with slow.store.write() as conn:
        slow.heartbeat_in(conn)  # it was only slow: back in the register
        assert slow.calls.record_progress_in(conn, call, 60) == "ended"  # its stream must stop
    assert slow.calls.settle(call, 10, 60) is None  # already settled once, for 50 tokens
    assert status(judge, call.request_id) == ("interrupted", 50, 100_000)
    with judge.store.read() as conn:
        assert set(conn.execute(select(instances.c.id)).scalars()) == {"slow", "judge"}
    assert_ledger_invariant(judge.store)


def test_a_process_id_in_another_pid_namespace_is_not_judged_by_this_one(
    make_service: MakeService, cat: Catalog
) -> None:
    """Same host name, another PID namespace (a container with host networking): its pid
    says nothing here, so only its heartbeat can show it dead."""
    name = socket.gethostname()
    elsewhere = server(make_service, cat, "container", exited_pid(), host=f"{name}/pid:1")
    call = admit(elsewhere)
    local = server(make_service, cat, "local", os.getpid())
    assert local.recover().instances == 0
    assert status(local, call.request_id)[0] == "pending"
    elsewhere.calls.settle(call, 1, 1)
    assert_ledger_invariant(local.store)


def test_calls_from_before_instances_are_reconciled_at_start(
    make_service: MakeService, cat: Catalog, clock: FakeClock
) -> None:
    old = make_service(cat)  # no instance: a server of an older version
    call = admit(old)
    clock.advance(seconds=5)
    new = server(make_service, cat, "new", os.getpid())
    found = new.recover(started_before=clock.now())
    assert (found.settled, found.released) == (0, 1)
    assert status(new, call.request_id)[0] == "abandoned"
    assert_ledger_invariant(new.store)


def test_a_clean_stop_settles_its_own_open_calls(make_service: MakeService, cat: Catalog) -> None:
    me = server(make_service, cat, "me", os.getpid())
    delivered = admit(me)
    nothing = admit(me)
    with me.store.write() as conn:
        me.calls.record_progress_in(conn, delivered, 10)
    assert me.retire_instance() == (1, 1)
    assert status(me, delivered.request_id) == ("interrupted", 10, 20_000)
    assert status(me, nothing.request_id)[0] == "abandoned"
    assert balance(me.store) == 11 * MICRO - 20_000
    with me.store.read() as conn:
        assert conn.execute(select(instances.c.id)).scalars().all() == []
    assert_ledger_invariant(me.store)


def test_progress_says_stop_once_the_key_is_revoked(make_service: MakeService) -> None:
    from tests.core.helpers import who

    me = server(make_service, catalog(pool(11)), "me", os.getpid())
    created = me.create_key(who(), "script")
    call = admit(me, key_id=created["id"])
    with me.store.write() as conn:
        assert me.calls.record_progress_in(conn, call, 5) is None
    me.revoke_key(who(), created["id"])
    with me.store.write() as conn:
        assert me.calls.record_progress_in(conn, call, 9) == "revoked"
    assert me.calls.settle(call, 3, 9) is not None
    assert balance(me.store) == 11 * MICRO - 3 * 1000 - 9 * 2000
    assert WORST > 3 * 1000 + 9 * 2000
    assert_ledger_invariant(me.store)
