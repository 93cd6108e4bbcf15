"""What the pool-change trigger (``NOTIFY lumen_pool``) costs the settling of calls.

PostgreSQL only.  Every metered call changes its balance twice (the reservation, the
settlement), and with the trigger each of those transactions sends a notification;
PostgreSQL queues it under a lock it holds across the commit, so notifying commits
of the whole database take turns.  Measured with the trigger enabled and disabled,
round after round, while a :class:`PoolListener` listens (as each worker would) on a
thread of the measuring process (its CPU is printed at the end):

- one process: the median wall and CPU microseconds of ``settle`` (its own
  transaction), and of the whole call (``open_call`` + ``settle``);
- ``--processes`` processes, each settling calls of its own user as fast as it can:
  calls per second altogether;
- bare balance updates by 1 and 8 connections: commits per second, with no trigger,
  notifying, and deferred (``lumen.pool_notify = off``, the accounts told in bulk).

``--durable`` starts a server that flushes each commit to disk (as in production;
the tests' server does not), which is where a lock held across commits would show.

    python benchmarks/bench_pool_notify.py [--calls 300] [--rounds 5] [--processes 4] [--durable]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lumen_jupyter.core.accounts import Identity
from lumen_jupyter.core.billing import CallContext
from lumen_jupyter.core.catalog import Catalog, ModelSpec, PoolSpec, Rule
from lumen_jupyter.core.money import MICRO
from lumen_jupyter.core.service import LumenService
from lumen_jupyter.store import Store
from lumen_jupyter.store.notify import PoolListener

SECRET = b"0123456789abcdef0123456789abcdef-bench"
TRIGGERS = ("lumen_balances_notify_insert", "lumen_balances_notify_update")


def _catalog() -> Catalog:
    model = ModelSpec(name="paid", input_price_micro=1000 * MICRO, output_price_micro=2000 * MICRO)
    pool = PoolSpec(max_micro=10**15, refresh_micro=0, starting_micro=10**15)
    return Catalog(models={"paid": model}, default_pool=pool, default_rule=Rule.ALLOWED)


def _service(store: Store) -> LumenService:
    return LumenService(store, _catalog(), SECRET)


def _call(service: LumenService, who: Identity, ctx: CallContext) -> tuple[float, float, float]:
    """One call: (wall of the whole call, wall of its settle, CPU of its settle), in µs."""
    start = time.perf_counter()
    admission = service.open_call(
        who, ctx, "paid", endpoint="chat", input_tokens=100, max_output_tokens=500
    )
    settle_wall, settle_cpu = time.perf_counter(), time.thread_time()
    service.settle(admission, 90, 300)  # less than reserved: the balance moves
    end, cpu = time.perf_counter(), time.thread_time()
    return (end - start) * 1e6, (end - settle_wall) * 1e6, (cpu - settle_cpu) * 1e6


def set_triggers(store: Store, enabled: bool) -> None:
    with store.write() as conn:
        for name in TRIGGERS:
            state = "ENABLE" if enabled else "DISABLE"
            conn.exec_driver_sql(f"ALTER TABLE lumen_balances {state} TRIGGER {name}")


class Listening:
    """A PoolListener on a thread of its own, counting what it hears."""

    def __init__(self, url: str) -> None:
        self.heard = 0
        self.loop = asyncio.new_event_loop()
        self.listener: PoolListener | None = None
        ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(url, ready), daemon=True)
        self.thread.start()
        ready.wait(10)

    def _serve(self, url: str, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            self.listener = PoolListener(url, self._hear)
            self.listener.start()
            await self.listener.wait_listening(10)
            ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    def _hear(self, _account_id: int) -> None:
        self.heard += 1

    def cpu(self) -> float:
        """Seconds of CPU the listener's thread has used."""
        return asyncio.run_coroutine_threadsafe(_thread_time(), self.loop).result(10)

    def close(self) -> None:
        assert self.listener is not None
        asyncio.run_coroutine_threadsafe(self.listener.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


async def _thread_time() -> float:
    return time.thread_time()


def one_process(store: Store, calls: int, rounds: int) -> None:
    service = _service(store)
    who = Identity(username="solo", display_name="Solo")
    ctx = CallContext(account_id=service.account("solo"), source="api")
    for _ in range(200):
        _call(service, who, ctx)
    samples: dict[bool, list[tuple[float, float, float]]] = {False: [], True: []}
    for _ in range(rounds):
        for enabled in (False, True):
            set_triggers(store, enabled)
            samples[enabled].extend(_call(service, who, ctx) for _ in range(calls))
    print("  one process (median µs):      call wall   settle wall   settle CPU (its thread)")
    for enabled in (False, True):
        rows = samples[enabled]
        call, settle, cpu = (statistics.median(r[i] for r in rows) for i in range(3))
        label = "trigger on " if enabled else "trigger off"
        print(f"    {label}                   {call:9.0f}   {settle:11.0f}   {cpu:10.0f}")


def _worker(url: str, user: str, calls: int, barrier: Any, results: Any) -> None:
    store = Store(url, pool_size=1)
    try:
        service = _service(store)
        who = Identity(username=user, display_name=user)
        ctx = CallContext(account_id=service.account(user), source="api")
        for _ in range(50):
            _call(service, who, ctx)
        barrier.wait(60)
        start = time.perf_counter()
        for _ in range(calls):
            _call(service, who, ctx)
        results.put(time.perf_counter() - start)
    finally:
        store.dispose()


def many_processes(url: str, store: Store, processes: int, calls: int, rounds: int) -> None:
    context = multiprocessing.get_context("spawn")
    rates: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(rounds):
        for enabled in (False, True):
            set_triggers(store, enabled)
            barrier = context.Barrier(processes)
            results = context.Queue()
            procs = [
                context.Process(target=_worker, args=(url, f"u{i}", calls, barrier, results))
                for i in range(processes)
            ]
            for proc in procs:
                proc.start()
            slowest = max(results.get(timeout=300) for _ in procs)
            for proc in procs:
                proc.join(60)
            rates[enabled].append(processes * calls / slowest)
    print(f"  {processes} processes, calls/s (median of {rounds}):")
    for enabled in (False, True):
        label = "trigger on " if enabled else "trigger off"
        print(f"    {label}   {statistics.median(rates[enabled]):7.0f}")


COMMIT_MODES = {
    "no trigger": "-c session_replication_role=replica",  # fires no trigger at all
    "notifying": "",
    "deferred": "-c lumen.pool_notify=off",  # and told ten times a second, in bulk
}


def commits(url: str, threads: int, seconds: float, rounds: int) -> None:
    """Balance updates committed per second by ``threads`` connections (one account
    each): the cost of the notification queue's lock alone, and of deferring.

    The three kinds alternate second by second on the same server; ``deferred`` has
    a thread of its own that notifies all the accounts every 0.1 s (as a writer that
    defers would notify the accounts it changed)."""
    from lumen_jupyter.store.notify import CHANNEL, conninfo_from_url

    def hammer(account_id: int, options: str, until: float, done: list[int]) -> None:
        extra = {"options": options} if options else {}
        with psycopg.connect(conninfo_from_url(url, **extra), autocommit=True) as conn:
            n = 0
            while time.perf_counter() < until:
                conn.execute(
                    "UPDATE lumen_balances SET balance_micro = balance_micro + 1"
                    " WHERE account_id = %s",
                    (account_id,),
                )
                n += 1
            done.append(n)

    def tell(accounts: list[int], until: float) -> None:
        with psycopg.connect(conninfo_from_url(url), autocommit=True) as conn:
            while time.perf_counter() < until:
                conn.execute(
                    "SELECT pg_notify(%s, id::text) FROM unnest(%s::integer[]) AS id",
                    (CHANNEL, accounts),
                )
                time.sleep(0.1)

    store = Store(url)
    service = _service(store)
    accounts = [service.account(f"c{i}") for i in range(threads)]
    for i in range(threads):  # opens their balances
        service.pool_state(Identity(username=f"c{i}", display_name=f"c{i}"))
    store.dispose()
    rates: dict[str, list[float]] = {mode: [] for mode in COMMIT_MODES}
    for _ in range(rounds):
        for mode, options in COMMIT_MODES.items():
            done: list[int] = []
            until = time.perf_counter() + seconds
            workers = [
                threading.Thread(target=hammer, args=(acct, options, until, done))
                for acct in accounts
            ]
            if mode == "deferred":
                workers.append(threading.Thread(target=tell, args=(accounts, until)))
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            rates[mode].append(sum(done) / seconds)
    print(f"  {threads} connections updating balances, commits/s (median of {rounds}):")
    for mode in COMMIT_MODES:
        print(f"    {mode:12} {statistics.median(rates[mode]):7.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--durable", action="store_true", help="flush each commit to disk")
    args = parser.parse_args()
    from tests import pg

    reason = pg.unavailable_reason()
    if reason is not None:
        print(f"postgresql: skipped ({reason})")
        return
    server = pg.start_throwaway(durable=True) if args.durable else pg.open_server()
    try:
        with server.database(migrated=True) as url:
            store = Store(url)
            listening = Listening(url)
            cpu_before, started = listening.cpu(), time.perf_counter()
            try:
                print("postgresql" + (" (durable commits)" if args.durable else "") + ":")
                one_process(store, args.calls, args.rounds)
                if args.processes > 0:
                    many_processes(url, store, args.processes, args.calls, args.rounds)
                for threads in (1, 8):
                    commits(url, threads, 1.0, max(args.rounds, 5))
                time.sleep(0.5)
                heard, cpu = listening.heard, listening.cpu() - cpu_before
                seconds = time.perf_counter() - started
                print(
                    f"  the listener handed over {heard} pool changes in {seconds:.0f} s, "
                    f"using {cpu * 1e3:.0f} ms of CPU ({cpu / seconds:.1%} of a core)"
                )
            finally:
                listening.close()
                store.dispose()
    finally:
        pg.stop(server)


if __name__ == "__main__":
    main()
