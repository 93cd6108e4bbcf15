"""CPU cost of the accounting path of one gateway call: ``open_call`` + ``settle``.

Runs the loop on a SQLite file store (and on PostgreSQL with ``--pg``, through the
tests' throwaway server) and prints microseconds of CPU (``time.process_time``) per call.

    python benchmarks/bench_accounting.py [--iterations 2000] [--pg]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lumen_jupyter.core.accounts import Identity
from lumen_jupyter.core.billing import CallContext
from lumen_jupyter.core.catalog import Catalog, EndpointSpec, ModelSpec, PoolSpec, Rule
from lumen_jupyter.core.money import MICRO
from lumen_jupyter.core.service import LumenService
from lumen_jupyter.store import Store, sqlite_url


def _catalog() -> Catalog:
    model = ModelSpec(
        name="paid",
        input_price_micro=1000 * MICRO,
        output_price_micro=2000 * MICRO,
        endpoints=(EndpointSpec(url="http://127.0.0.1:9/v1", model="paid"),),
    )
    pool = PoolSpec(max_micro=10**15, refresh_micro=1000 * MICRO, starting_micro=10**15)
    return Catalog(models={"paid": model}, default_pool=pool, default_rule=Rule.ALLOWED)


def run(store: Store, iterations: int, label: str) -> float:
    store.migrate()
    service = LumenService(store, _catalog(), b"0123456789abcdef0123456789abcdef-bench")
    who = Identity(username="alice", display_name="Alice")
    acct = service.account("alice")
    ctx = CallContext(account_id=acct, source="api", notebook="bench.ipynb")

    def one() -> None:
        admission = service.calls.open_call(
            who, ctx, "paid", endpoint="chat", input_tokens=100, max_output_tokens=500
        )
        service.calls.settle(admission, 90, 300)

    for _ in range(min(200, iterations)):  # warm up caches
        one()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(iterations):
        one()
    cpu = time.process_time() - cpu
    wall = time.perf_counter() - wall
    per_call = cpu / iterations * 1e6
    print(
        f"{label}: {iterations} calls, {per_call:.0f} µs CPU/call, "
        f"{wall / iterations * 1e6:.0f} µs wall/call"
    )
    return per_call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--pg", action="store_true", help="also run on PostgreSQL")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(sqlite_url(Path(tmp) / "bench.db"))
        try:
            run(store, args.iterations, "sqlite")
        finally:
            store.dispose()
    if args.pg:
        from tests import pg

        reason = pg.unavailable_reason()
        if reason is not None:
            print(f"postgresql: skipped ({reason})")
            return
        server = pg.open_server()
        try:
            with server.database() as url:
                store = Store(url)
                try:
                    run(store, args.iterations, "postgresql")
                finally:
                    store.dispose()
        finally:
            pg.stop(server)


if __name__ == "__main__":
    main()
