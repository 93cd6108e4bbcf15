"""What a rate limit kept in the request log adds to the admission of one keyed call.

Each admission is the real one (``LumenService.open_call_in`` in its own write
transaction), made three ways, in rounds (and the last two alternating call by call)
so that a busy machine hurts them alike:

- ``bare``: without the key-and-time index of the log (as before migration 7);
- ``index``: with the index (every keyed request row now also goes into it);
- ``index+check``: with the index and ``take_rate_slot_in`` before the admission
  (on PostgreSQL: the key's row lock, then the read of the window).

The clock moves ``--step`` seconds a call, so the window of the last minute holds
60 / step calls: the check reads that many index entries (at most ``--limit``).
Prints the median microseconds of CPU and of wall time of one admission.

    python benchmarks/bench_rate_limit.py [--calls 300] [--rounds 7] [--pg] [--durable]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lumen_jupyter.core import keyring
from lumen_jupyter.core.accounts import Identity
from lumen_jupyter.core.billing import CallContext
from lumen_jupyter.core.catalog import Catalog, ModelSpec, PoolSpec, Rule
from lumen_jupyter.core.clock import FakeClock
from lumen_jupyter.core.money import MICRO
from lumen_jupyter.core.rate_limit import take_rate_slot_in
from lumen_jupyter.core.service import LumenService
from lumen_jupyter.store import Store, sqlite_url

SECRET = b"0123456789abcdef0123456789abcdef-bench"
INDEX = (
    "CREATE INDEX IF NOT EXISTS ix_lumen_requests_key_time "
    "ON lumen_requests (key_id, created_at) WHERE key_id IS NOT NULL"
)
MODES = ("bare", "index", "index+check")


def _catalog() -> Catalog:
    model = ModelSpec(name="paid", input_price_micro=1000 * MICRO, output_price_micro=2000 * MICRO)
    pool = PoolSpec(max_micro=10**15, refresh_micro=0, starting_micro=10**15)
    return Catalog(models={"paid": model}, default_pool=pool, default_rule=Rule.ALLOWED)


def run(store: Store, label: str, calls: int, rounds: int, limit: int, step: float) -> None:
    store.migrate()
    clock = FakeClock(datetime(2026, 3, 4, 12, 0, tzinfo=timezone.utc))
    service = LumenService(store, _catalog(), SECRET, clock=clock)
    who = Identity(username="alice", display_name="Alice")
    acct = service.account("alice")
    with store.write() as conn:
        key_id, _ = keyring.create_key(conn, acct, SECRET, clock.now(), "bench")
    ctx = CallContext(account_id=acct, source="api", key_id=key_id)

    def admit(check: bool) -> None:
        with store.write() as conn:
            if check:
                wait = take_rate_slot_in(conn, key_id, limit, clock.now())
                assert wait is None, "the benchmark's limit must never be reached"
            service.open_call_in(
                conn, who, ctx, "paid", endpoint="chat", input_tokens=100, max_output_tokens=500
            )
        clock.advance(seconds=step)

    def index(present: bool) -> None:
        with store.write() as conn:
            conn.exec_driver_sql(INDEX if present else "DROP INDEX ix_lumen_requests_key_time")

    for _ in range(int(60 / step) + 50):  # fill the window, warm the caches
        admit(True)
    samples: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
    for _ in range(rounds):
        index(False)
        for _ in range(calls):
            samples["bare"].append(_time(admit, False))
        index(True)
        for _ in range(calls):  # alternating, so that both see the same machine
            samples["index"].append(_time(admit, False))
            samples["index+check"].append(_time(admit, True))
    base_cpu, base_wall = _medians(samples["bare"])
    print(f"{label}, limit {limit}, {60 / step:.0f} calls in the window:")
    for mode in MODES:
        cpu, wall = _medians(samples[mode])
        print(
            f"  {mode:12} {cpu:7.0f} µs CPU {wall:7.0f} µs wall per admission"
            f"   (+{cpu - base_cpu:4.0f} CPU, +{wall - base_wall:4.0f} wall)"
        )


def _time(admit: Callable[[bool], None], check: bool) -> tuple[float, float]:
    """CPU and wall microseconds of one admission."""
    wall, cpu = time.perf_counter(), time.process_time()
    admit(check)
    return (time.process_time() - cpu) * 1e6, (time.perf_counter() - wall) * 1e6


def _medians(samples: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(c for c, _ in samples), statistics.median(w for _, w in samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200, help="admissions per round and mode")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--pg", action="store_true", help="also run on PostgreSQL")
    parser.add_argument("--durable", action="store_true", help="PostgreSQL flushes commits")
    args = parser.parse_args()
    cases = ((60, 1.01), (1000, 0.1))  # (limit, seconds between calls)
    for limit, step in cases:
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(sqlite_url(Path(tmp) / "bench.db"))
            try:
                run(store, "sqlite", args.calls, args.rounds, limit, step)
            finally:
                store.dispose()
    if not args.pg:
        return
    from tests import pg

    reason = pg.unavailable_reason()
    if reason is not None:
        print(f"postgresql: skipped ({reason})")
        return
    server = pg.start_throwaway(durable=True) if args.durable else pg.open_server()
    try:
        for limit, step in cases:
            with server.database() as url:
                store = Store(url)
                try:
                    label = "postgresql" + (" (durable commits)" if args.durable else "")
                    run(store, label, args.calls, args.rounds, limit, step)
                finally:
                    store.dispose()
    finally:
        pg.stop(server)


if __name__ == "__main__":
    main()
