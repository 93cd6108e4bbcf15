"""Does a crowd of open event streams slow the REST API down?

The Lab status bar of every open JupyterLab tab holds ``GET lumen/api/events``
open.  This benchmark opens N such streams on one server, makes model calls at a
steady rate (each one moves the pool, so every stream gets an event), and
measures ``GET lumen/api/profile`` meanwhile, against the same server with no
streams and no calls (the baseline of the same run).  It also counts the pool
events the streams received, to show the fan-out really happened.

    python benchmarks/bench_events.py [--streams 300] [--rate 100] [--seconds 15]

Results: ``benchmarks/results/events-*.json``; the figures go to
``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h

BODY = {"model": "demo-pro", "messages": [{"role": "user", "content": "one coin event"}]}


async def hold_stream(
    port: int, path: str, token: str, counts: list[int], stop: asyncio.Event
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: token {token}\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    try:
        while not stop.is_set():
            try:
                line = await asyncio.wait_for(reader.readline(), 0.5)
            except asyncio.TimeoutError:
                continue
            if not line:
                break
            if line.startswith(b"event: pool"):
                counts[0] += 1
    finally:
        writer.close()


async def measure_profile(client: httpx.AsyncClient, seconds: float) -> list[float]:
    samples: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        response = await client.get("lumen/api/profile")
        samples.append(time.perf_counter() - started)
        response.raise_for_status()
        await asyncio.sleep(0.05)
    return samples


async def make_calls(client: httpx.AsyncClient, rate: float, stop: asyncio.Event) -> int:
    made = 0
    interval = 1.0 / rate
    next_at = time.monotonic()
    pending: set[asyncio.Task[Any]] = set()
    while not stop.is_set():
        task = asyncio.ensure_future(client.post("lumen/v1/chat/completions", json=BODY))
        pending.add(task)
        task.add_done_callback(pending.discard)
        made += 1
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    await asyncio.gather(*pending, return_exceptions=True)
    return made


async def phase(
    server: h.JupyterServer, streams: int, rate: float, seconds: float
) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(
        base_url=server.url, headers=server.auth, timeout=30, limits=limits
    ) as client:
        stop = asyncio.Event()
        counts = [0]
        holders = [
            asyncio.ensure_future(
                hold_stream(server.port, "/lumen/api/events", server.token, counts, stop)
            )
            for _ in range(streams)
        ]
        await asyncio.sleep(1.0 if streams else 0)  # let them subscribe
        caller = asyncio.ensure_future(make_calls(client, rate, stop)) if rate else None
        samples = await measure_profile(client, seconds)
        stop.set()
        made = await caller if caller else 0
        await asyncio.gather(*holders, return_exceptions=True)
    return {
        "streams": streams,
        "calls_per_s": rate,
        "calls_made": made,
        "pool_events_received": counts[0],
        "profile_ms": h.summary_ms(samples),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=300)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    # The server on one core, this load generator on the other (as the gateway benchmark).
    server = h.start_jupyter({"health_interval": 0}, cpus="0")
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {1})
    try:
        asyncio.run(phase(server, 0, 0, 3))  # warm up
        phases = [
            ("baseline: no streams, no calls", asyncio.run(phase(server, 0, 0, args.seconds))),
            (
                f"{args.rate:g} calls/s, no streams",
                asyncio.run(phase(server, 0, args.rate, args.seconds)),
            ),
            (
                f"{args.streams} streams and {args.rate:g} calls/s",
                asyncio.run(phase(server, args.streams, args.rate, args.seconds)),
            ),
        ]
    finally:
        h.stop(server.proc)
    data = {"machine": h.machine_facts(), "load_before": h.loadavg(), "phases": dict(phases)}
    path = h.write_results("events", data)
    print(f"{'phase':<40} {'profile p50':>12} {'p95':>8} {'max':>8} {'pool events':>12}")
    for name, result in phases:
        ms = result["profile_ms"]
        print(
            f"{name:<40} {ms['p50']:>10.1f}ms {ms['p95']:>6.1f}ms {ms['max']:>6.1f}ms "
            f"{result['pool_events_received']:>12}"
        )
    print(f"results: {path}")
    print(json.dumps({"load_after": h.loadavg()}))


if __name__ == "__main__":
    main()
