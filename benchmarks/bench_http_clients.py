"""Which HTTP client should the gateway use upstream?  Measured, not guessed.

Each candidate runs in its own process pinned to core 0, against the standalone
demo backend pinned to core 1, and makes the gateway's upstream call (a
non-streaming ``chat/completions`` POST) with keep-alive: first one at a time,
then 16 at once on one pooled client.  Reported: CPU of the client process per
request (its whole cost, loop included), requests/s, and p50/p99 latency.
"Raw streams" (asyncio streams, a hand-written request, no parsing beyond the
Content-Length) is the floor; "aiohttp" is a plain session, "lumen http_client"
the gateway's client (aiohttp with its guards).  ``--baseline FILE`` adds any
module with the same ``HttpClient`` interface (an earlier version of the
client, say) to the comparison.

    python benchmarks/bench_http_clients.py            # ~1 min
    python benchmarks/bench_http_clients.py --seconds 5
    python benchmarks/bench_http_clients.py --baseline /tmp/old_http_client.py

Results go to ``benchmarks/results/http_clients-<stamp>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h
from bench_gateway import start_demo

CLIENTS = ("raw streams", "lumen http_client", "aiohttp", "tornado", "httpx")

WORKER = r"""
import asyncio, json, sys, time
spec = json.loads(sys.argv[1])
URL, SECONDS, CONC, NAME = spec["url"], spec["seconds"], spec["concurrency"], spec["client"]
BODY = json.dumps({"model": "demo-free", "max_tokens": 64,
                   "messages": [{"role": "user", "content": "hello there, how are you"}]}).encode()
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer upstream-secret"}

async def make():
    if NAME == "aiohttp":
        import aiohttp
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512),
                                        auto_decompress=False)
        async def call():
            async with session.post(URL, data=BODY, headers=HEADERS) as r:
                await r.read()
                return r.status
        return call, session.close
    if NAME == "tornado":
        from tornado.httpclient import AsyncHTTPClient
        AsyncHTTPClient.configure(None, max_clients=64)
        client = AsyncHTTPClient()
        async def call():
            r = await client.fetch(URL, method="POST", body=BODY, headers=HEADERS)
            return r.code
        async def close():
            client.close()
        return call, close
    if NAME == "httpx":
        import httpx
        client = httpx.AsyncClient(limits=httpx.Limits(max_connections=64))
        async def call():
            r = await client.post(URL, content=BODY, headers=HEADERS)
            return r.status_code
        return call, client.aclose
    if NAME in ("lumen http_client", "baseline"):
        if NAME == "baseline":
            import importlib.util
            found = importlib.util.spec_from_file_location("baseline_client", spec["baseline"])
            module = importlib.util.module_from_spec(found)
            sys.modules["baseline_client"] = module
            found.loader.exec_module(module)
            HttpClient = module.HttpClient
        else:
            from lumen_jupyter.gateway.http_client import HttpClient
        client = HttpClient(connect_timeout=10)
        async def call():
            r = await client.request("POST", URL, headers=HEADERS, body=BODY, timeout=60)
            async with r:
                await r.read()
            return r.status
        return call, client.close
    # raw streams: one connection per worker, the floor
    from urllib.parse import urlsplit
    parts = urlsplit(URL)
    request = (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
               f"Content-Type: application/json\r\nAuthorization: Bearer upstream-secret\r\n"
               f"Content-Length: {len(BODY)}\r\n\r\n").encode() + BODY
    pool = []
    async def call():
        if pool:
            reader, writer = pool.pop()
        else:
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        pool.append((reader, writer))
        return int(head.split(b" ")[1])
    async def close():
        for _r, w in pool:
            w.close()
    return call, close

async def main():
    call, close = await make()
    for _ in range(100):
        assert await call() == 200
    latencies, statuses = [], {}
    deadline = time.perf_counter() + SECONDS
    async def worker():
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            status = await call()
            latencies.append(time.perf_counter() - t)
            statuses[status] = statuses.get(status, 0) + 1
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONC)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await close()
    latencies.sort()
    n = len(latencies)
    print(json.dumps({"requests": n, "rps": n / wall, "cpu_ms_per_request": 1000 * cpu / n,
                      "p50_ms": 1000 * latencies[n // 2], "p99_ms": 1000 * latencies[int(n * 0.99)],
                      "statuses": statuses}))

asyncio.run(main())
"""


def measure(
    client: str, url: str, seconds: float, concurrency: int, baseline: str | None = None
) -> dict[str, Any]:
    spec = {
        "url": url,
        "seconds": seconds,
        "concurrency": concurrency,
        "client": client,
        "baseline": baseline,
    }
    command = [sys.executable, "-c", WORKER, json.dumps(spec)]
    if shutil.which("taskset"):
        command = ["taskset", "-c", "0", *command]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(h.REPO)
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    return dict(json.loads(done.stdout))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per client and concurrency")
    parser.add_argument(
        "--baseline", help="a module file whose HttpClient joins the comparison as 'baseline'"
    )
    args = parser.parse_args()
    facts = h.machine_facts({"aiohttp": h._version("aiohttp"), "httpx": h._version("httpx")})
    print(f"machine: {facts['host_cores']} cores, load {h.loadavg()}", flush=True)
    _proc, demo_url, _port = start_demo("1")
    url = demo_url.rstrip("/") + "/chat/completions"
    rows: dict[str, dict[str, Any]] = {}
    clients = (*CLIENTS, "baseline") if args.baseline else CLIENTS
    baseline = str(Path(args.baseline).resolve()) if args.baseline else None
    for client in clients:
        rows[client] = {}
        for concurrency in (1, 16):
            result = measure(client, url, args.seconds, concurrency, baseline)
            rows[client][f"c{concurrency}"] = result
            if "error" in result:
                print(f"  {client:18} c={concurrency:<2} error: {result['error']}", flush=True)
                continue
            print(
                f"  {client:18} c={concurrency:<2} {result['rps']:7.0f} req/s  "
                f"cpu {result['cpu_ms_per_request']:.3f} ms/req  "
                f"p50 {result['p50_ms']:.2f} p99 {result['p99_ms']:.2f} ms",
                flush=True,
            )
            time.sleep(0.3)
    path = h.write_results(
        "http_clients",
        {"benchmark": "http_clients", "machine": facts, "seconds": args.seconds, "rows": rows},
    )
    print(f"results: {path}")


if __name__ == "__main__":
    try:
        main()
    finally:
        h.cleanup()
