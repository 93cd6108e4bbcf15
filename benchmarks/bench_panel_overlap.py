#!/usr/bin/env python
"""Model calls while profile panels load: one database thread on SQLite, or several.

    python benchmarks/bench_panel_overlap.py        # ~5 min with the 1M-call seed

The REST API runs its database work on a thread pool (``db_threads``). SQLite used to
get one thread (its writers queue anyway), which made the four requests a panel
sends at once wait for each other; the books of model calls have their own thread
(the accountant), so REST reads can run in parallel (WAL readers). The risk is the
GIL: more threads busy in Python might delay the event loop, and with it the model
calls. This benchmark measures both sides, in one run, on two servers over copies
of the same store (the profile benchmark's seed: 1,000,000 logged calls, 1,000 keys,
200 models, plus one model served by the standalone demo backend):

- ``1 thread``: ``db_threads=1`` (the old SQLite default);
- ``default``: no ``db_threads`` setting (the new default);
- and any other counts given with ``--threads`` (e.g. ``--threads 1,2,default,8``).

Every process may run on every core (``--pin``: the servers on core 0, the load
generator, the demo backend and this script on core 1, as in the gateway benchmark;
then SQLite's readers cannot use a second core). In ``--rounds`` rounds, interleaved,
each server gets three phases of ``--seconds`` (``--phases`` to choose):

- ``calls``: model calls at ``--rate`` calls/s (``_loadgen.py``, its own process,
  ``--concurrency`` keep-alive connections on a steady schedule), non-streaming;
- ``panels``: ``--panels`` panel openings per second, each the panel's first screen
  (profile, the first 40 active keys, the first 40 models, the history of ``--period``,
  month by default: four requests at once) and then its rest (every key, every model:
  two at once);
- ``both``: the two together.

Reported: model call latency p50/p99 (``calls`` and ``both``; also the median of the
rounds' p99, which a round disturbed by other work on the machine moves less), the
time until the last of a panel's first-screen answers p50/p95 and until the rest has
arrived (``panels`` and ``both``), and each first-screen request's own time.
Results: ``benchmarks/results/panel_overlap-<utc>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h
import bench_gateway as gw
import bench_profile_api as api

FIRST_PAGE = 40


def seed(work: Path, args: argparse.Namespace, demo_url: str) -> tuple[Path, Path, Path]:
    """The profile benchmark's account, and ``demo-free`` served by the demo backend."""
    models = api.make_models(args.models)
    config = work / "lumen.yaml"
    api.write_config(config, models)
    with config.open("a") as out:
        out.write(
            f"  - name: {gw.MODEL}\n"
            "    input_cost_per_million: 1\n"
            "    output_cost_per_million: 2\n"
            f"    endpoints: [{{url: '{demo_url}', model: {gw.MODEL}}}]\n"
        )
    secret = api.write_secret(work)
    path = work / "lumen.db"
    facts = api.Seed(
        rows=args.rows,
        days=args.days,
        models=models,
        keys=args.keys,
        secret=secret.read_bytes().strip(),
        now=datetime.now(timezone.utc),
    )
    api.seeded_sqlite(path, facts)
    return path, config, secret


def settings(name: str) -> dict[str, Any]:
    """The server's traits for ``name`` ("default", or a count of threads)."""
    return {} if name == "default" else {"db_threads": int(name)}


def start(
    name: str, db: Path, config: Path, secret: Path, cpus: str | None
) -> tuple[h.JupyterServer, str]:
    copy = h.temp_dir("lumen-bench-overlap-") / "lumen.db"
    shutil.copy(db, copy)
    copy.chmod(0o600)
    traits = {
        "database_url": f"sqlite:///{copy}",
        "username": api.USERNAME,
        "config_file": str(config),
        "secret_file": str(secret),
        "health_interval": 0,
        "demo_backend": "off",
        **settings(name),
    }
    server = h.start_jupyter(traits, cpus=cpus, extra_args=["--ServerApp.log_level=WARN"])
    created = h.http_json(
        "POST", f"{server.url}lumen/api/keys", {"name": "overlap"}, headers=server.auth
    )
    return server, created["key"]


def first_screen(period: str) -> dict[str, str]:
    """The panel's first requests, by part (the history of the period the panel shows)."""
    return {
        "profile": "lumen/api/profile",
        "keys": f"lumen/api/keys?include_revoked=false&limit={FIRST_PAGE}",
        "models": f"lumen/api/models?limit={FIRST_PAGE}",
        "usage": f"lumen/api/usage?period={period}&group_by=model",
    }


REST = ("lumen/api/keys?include_revoked=true", "lumen/api/models")


async def open_panels(
    server: h.JupyterServer, rate: float, seconds: float, period: str
) -> dict[str, Any]:
    """Open a panel ``rate`` times a second (each on its own schedule, overlapping when
    one takes longer than the interval): its first screen, then the rest."""
    first: list[float] = []
    whole: list[float] = []
    parts: dict[str, list[float]] = {part: [] for part in first_screen(period)}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(
        base_url=server.url, headers=server.auth, timeout=60, limits=limits
    ) as client:

        async def get(path: str, part: str | None = None) -> None:
            started = time.perf_counter()
            response = await client.get(path)
            response.raise_for_status()
            if part is not None:
                parts[part].append(time.perf_counter() - started)

        async def panel() -> None:
            started = time.perf_counter()
            await asyncio.gather(*(get(p, part) for part, p in first_screen(period).items()))
            first.append(time.perf_counter() - started)
            await asyncio.gather(*(get(p) for p in REST))
            whole.append(time.perf_counter() - started)

        running: set[asyncio.Task[None]] = set()
        deadline = time.monotonic() + seconds
        next_at = time.monotonic()
        while time.monotonic() < deadline:
            task = asyncio.ensure_future(panel())
            running.add(task)
            task.add_done_callback(running.discard)
            next_at += 1 / rate
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        await asyncio.gather(*running)
    return {
        "opened": len(first),
        "first_screen_ms": h.summary_ms(first),
        "whole_ms": h.summary_ms(whole),
        "parts_ms": {part: h.summary_ms(values) for part, values in parts.items()},
        "samples": {
            "first_screen_ms": first,
            "whole_ms": whole,
            **{f"{part}_ms": values for part, values in parts.items()},
        },
    }


def calls_spec(
    server: h.JupyterServer, key: str, args: argparse.Namespace, seconds: float
) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": server.port,
        "path": "/lumen/v1/chat/completions",
        "headers": {"Authorization": f"Bearer {key}"},
        "body": gw.body(max_tokens=16),
        "concurrency": args.concurrency,
        "rate": args.rate,
        "duration": seconds,
        "warmup": args.concurrency,
        "sample": True,
    }


def make_calls(spec: dict[str, Any], cpus: str | None) -> dict[str, Any]:
    result = gw.loadgen(spec, cpus, timeout=spec["duration"] * 4 + 120)
    if result["errors"] or set(result["statuses"]) != {"200"}:
        raise RuntimeError(f"model calls failed: {result['statuses']} {result['errors']}")
    return result


async def phase(
    kind: str, server: h.JupyterServer, key: str, args: argparse.Namespace, seconds: float
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    spec = calls_spec(server, key, args, seconds)
    calls = (
        asyncio.ensure_future(asyncio.to_thread(make_calls, spec, args.others))
        if kind in ("calls", "both")
        else None
    )
    if kind in ("panels", "both"):
        await asyncio.sleep(0.5)  # the load generator's connections and warm-up
        out["panels"] = await open_panels(server, args.panels, seconds, args.period)
    if calls is not None:
        out["calls"] = await calls
    return out


def pooled(results: list[dict[str, Any]], part: str, field: str) -> dict[str, float]:
    """Percentiles of every round's samples together."""
    if part == "calls":
        return h.summary_ms(ms / 1000 for r in results for ms in r["calls"]["latencies_ms"])
    return h.summary_ms(s for r in results for s in r["panels"]["samples"][field])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=50.0, help="model calls per second")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--panels", type=float, default=4.0, help="panel openings per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--threads", default="1,default", help="the servers: db_threads counts or 'default'"
    )
    parser.add_argument("--phases", default="calls,panels,both")
    parser.add_argument(
        "--period",
        default="month",
        choices=["week", "month", "year", "all"],
        help="the spending history the panels show (year: a read that is mostly SQL)",
    )
    parser.add_argument(
        "--pin", action="store_true", help="the servers on core 0, everything else on core 1"
    )
    args = parser.parse_args()
    pinned = args.pin and (os.cpu_count() or 1) >= 2
    args.server_cpus, args.others = ("0", "1") if pinned else (None, None)
    if pinned:  # this script (the panels' client) with the load generator and the backend
        os.sched_setaffinity(0, {1})
    facts = h.machine_facts()
    print(f"machine: load {facts['loadavg_at_start']}", flush=True)
    work = h.temp_dir("lumen-bench-overlap-seed-")
    demo, demo_url, _ = gw.start_demo(args.others)
    print(f"seeding {args.rows:,} calls, {args.keys} keys, {args.models} models", flush=True)
    db, config, secret = seed(work, args, demo_url)
    names = [n.strip() for n in args.threads.split(",") if n.strip()]
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    servers = {name: start(name, db, config, secret, args.server_cpus) for name in names}
    results: dict[str, dict[str, list[dict[str, Any]]]] = {
        name: {"calls": [], "panels": [], "both": []} for name in names
    }
    try:
        for server, key in servers.values():  # warm up: caches, imports, connections
            asyncio.run(phase("both", server, key, args, 3.0))
        for round_ in range(args.rounds):
            for name, (server, key) in servers.items():
                for kind in phases:
                    outcome = asyncio.run(phase(kind, server, key, args, args.seconds))
                    results[name][kind].append(outcome)
                    line = [f"round {round_ + 1} {name:10} {kind:6}"]
                    if "calls" in outcome:
                        ms = outcome["calls"]["latency_ms"]
                        line.append(f"call p50 {ms['p50']:6.1f} p99 {ms['p99']:6.1f} ms")
                    if "panels" in outcome:
                        first = outcome["panels"]["first_screen_ms"]
                        line.append(
                            f"first screen p50 {first['p50']:6.1f} p95 {first['p95']:6.1f} ms"
                        )
                    print("  ".join(line), flush=True)
    finally:
        for server, _ in servers.values():
            h.stop(server.proc)
        h.stop(demo)
    summary = {
        name: {
            "calls_alone_ms": pooled(kinds["calls"], "calls", ""),
            "calls_with_panels_ms": pooled(kinds["both"], "calls", ""),
            "first_screen_alone_ms": pooled(kinds["panels"], "panels", "first_screen_ms"),
            "first_screen_with_calls_ms": pooled(kinds["both"], "panels", "first_screen_ms"),
            "whole_alone_ms": pooled(kinds["panels"], "panels", "whole_ms"),
            "whole_with_calls_ms": pooled(kinds["both"], "panels", "whole_ms"),
            **{
                f"{part}_with_calls_ms": pooled(kinds["both"], "panels", f"{part}_ms")
                for part in first_screen(args.period)
                if kinds["both"]
            },
            # robust to a few rounds disturbed by other work on the machine
            "calls_with_panels_p99_median_of_rounds_ms": h.median(
                [r["calls"]["latency_ms"]["p99"] for r in kinds["both"]]
            )
            if kinds["both"]
            else None,
            "calls_alone_p99_median_of_rounds_ms": h.median(
                [r["calls"]["latency_ms"]["p99"] for r in kinds["calls"]]
            )
            if kinds["calls"]
            else None,
        }
        for name, kinds in results.items()
    }
    for kinds in results.values():  # keep the summaries, not every latency
        for outcomes in kinds.values():
            for outcome in outcomes:
                outcome.get("calls", {}).pop("latencies_ms", None)
                outcome.get("panels", {}).pop("samples", None)
    data = {
        "benchmark": "panel_overlap",
        "command": "python benchmarks/bench_panel_overlap.py " + " ".join(sys.argv[1:]),
        "machine": facts,
        "loadavg_after": h.loadavg(),
        "parameters": vars(args),
        "servers": {name: settings(name) for name in names},
        "runs": results,
        "summary": summary,
    }
    path = h.write_results("panel_overlap", data)
    print(
        f"\n{'':12} {'calls alone p50/p99':>22} {'with panels p50/p99':>22} "
        f"{'first screen alone p50/p95':>28} {'with calls p50/p95':>22}"
    )

    def pair(part: dict[str, float], high: str) -> str:
        if not part.get("n"):
            return "-"
        return f"{part['p50']:7.1f} /{part[high]:7.1f} ms"

    for name, s in summary.items():
        print(
            f"{name:12} {pair(s['calls_alone_ms'], 'p99'):>22} "
            f"{pair(s['calls_with_panels_ms'], 'p99'):>22} "
            f"{pair(s['first_screen_alone_ms'], 'p95'):>28} "
            f"{pair(s['first_screen_with_calls_ms'], 'p95'):>22}"
            f"   (call p99, median of the rounds: alone "
            f"{s['calls_alone_p99_median_of_rounds_ms'] or float('nan'):.1f}, with panels "
            f"{s['calls_with_panels_p99_median_of_rounds_ms'] or float('nan'):.1f} ms)"
        )
    for name, s in summary.items():
        answered = ", ".join(
            f"{part} {s[f'{part}_with_calls_ms']['p50']:.1f}"
            for part in first_screen(args.period)
            if f"{part}_with_calls_ms" in s
        )
        print(f"{name:12} each first-screen request, p50 with calls (ms): {answered}")
    print(f"results: {path}")


if __name__ == "__main__":
    main()
