#!/usr/bin/env python
"""What the hop through a user's server costs on JupyterHub (hub mode's forwarder).

    python benchmarks/bench_forwarder.py [--requests 400] [--rounds 4]

Starts, as separate processes on 127.0.0.1:

1. the standalone lumen service (``tests/hosts/hub_service.py``: the embedded demo
   models, a stand-in hub that knows the test users by their hub tokens);
2. a ``jupyter server`` with lumen-jupyter in hub mode (``LUMEN_SERVICE_URL`` and the
   user's hub token in its environment, no store), forwarding to the service.

Then measures sequential keep-alive requests, in interleaved rounds, straight to the
service (with the hub token) and through the user's server (with its Jupyter token):
``GET lumen/api/profile``, a non-streamed ``demo-free`` chat call, and the time to
the first byte and to the end of a streamed one; Jupyter's own ``GET api`` is the
floor of any request to the user's server.  The difference is the hop; the user's
server's CPU time per request (from /proc) says what the hop costs in work, which
a loaded machine does not blur as much as latency.

Results: ``benchmarks/results/forwarder-<utc>.json`` (and ``-latest.json``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h

sys.path.insert(0, str(h.REPO))
from tests.hosts.hub_service import HUB_TOKENS

USER = "ada"
HUB_TOKEN = HUB_TOKENS[USER]
CHAT = {
    "model": "demo-free",
    "messages": [{"role": "user", "content": "Say something short"}],
    "max_tokens": 8,
}


class Client:
    """One keep-alive connection; ``call`` returns (time to first byte, total) in seconds."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(
        self, method: str, path: str, headers: dict[str, str], body: Any = None
    ) -> tuple[float, float]:
        raw = None if body is None else json.dumps(body).encode()
        sent = {**headers, **({"Content-Type": "application/json"} if raw else {})}
        started = time.perf_counter()
        self.connection.request(method, path, body=raw, headers=sent)
        response = self.connection.getresponse()
        first = response.read(1)
        ttfb = time.perf_counter() - started
        rest = response.read()
        total = time.perf_counter() - started
        if response.status != 200 or not (first + rest):
            raise RuntimeError(f"{method} {path}: {response.status} {(first + rest)[:300]!r}")
        return ttfb, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400, help="per case and round")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()

    work = h.temp_dir("lumen-bench-fwd-")
    service_port = h.free_port()
    env = dict(os.environ)
    env.update(
        {
            "JUPYTER_DATA_DIR": str(work / "service-data"),
            "JUPYTER_CONFIG_DIR": str(work / "service-config"),
            "PYTHONPATH": str(h.REPO),
        }
    )
    for name in ("LUMEN_DATABASE_URL", "LUMEN_CONFIG", "LUMEN_SERVICE_URL"):
        env.pop(name, None)
    service = h.spawn(
        [
            *(sys.executable, "-m", "tests.hosts.hub_service"),
            *("--port", str(service_port), "--prefix", "/services/lumen/"),
        ],
        env=env,
        log=work / "service.log",
    )
    prefix = "/services/lumen/"
    direct = {"Authorization": f"token {HUB_TOKEN}"}
    h.wait_http(f"http://127.0.0.1:{service_port}{prefix}lumen/api/profile", 60, service, direct)

    os.environ.update(
        {
            "LUMEN_SERVICE_URL": f"http://127.0.0.1:{service_port}{prefix}",
            "JUPYTERHUB_API_TOKEN": HUB_TOKEN,
            "JUPYTERHUB_USER": USER,
        }
    )
    server = h.start_jupyter({})
    log = server.log.read_text(errors="replace")
    assert "forwarded to the lumen service" in log, log[-2000:]

    straight = Client(service_port)
    through = Client(server.port)
    cases = {
        "jupyter GET api (floor)": (through, "GET", "/api", server.auth, None),
        "profile, straight": (straight, "GET", f"{prefix}lumen/api/profile", direct, None),
        "profile, forwarded": (through, "GET", "/lumen/api/profile", server.auth, None),
        "chat, straight": (straight, "POST", f"{prefix}lumen/v1/chat/completions", direct, CHAT),
        "chat, forwarded": (through, "POST", "/lumen/v1/chat/completions", server.auth, CHAT),
        "stream, straight": (
            straight,
            "POST",
            f"{prefix}lumen/v1/chat/completions",
            direct,
            {**CHAT, "stream": True},
        ),
        "stream, forwarded": (
            through,
            "POST",
            "/lumen/v1/chat/completions",
            server.auth,
            {**CHAT, "stream": True},
        ),
    }
    for client, method, path, headers, body in cases.values():  # warm-up
        for _ in range(30):
            client.call(method, path, headers, body)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    server_cpu: dict[str, float] = dict.fromkeys(cases, 0.0)
    for _ in range(args.rounds):
        for name, (client, method, path, headers, body) in cases.items():
            before = h.cpu_seconds(server.pid)
            for _ in range(args.requests):
                times[name].append(client.call(method, path, headers, body))
            server_cpu[name] += h.cpu_seconds(server.pid) - before

    results: dict[str, Any] = {}
    for name, pairs in times.items():
        results[name] = {"total": h.summary_ms(t for _, t in pairs)}
        # CPU of the user's Jupyter server per request (clock ticks: 10 ms resolution,
        # summed over every request of the case).
        results[name]["server_cpu_ms"] = round(1000 * server_cpu[name] / len(pairs), 3)
        if name.startswith("stream"):
            results[name]["first_byte"] = h.summary_ms(f for f, _ in pairs)
    added = {
        kind: round(
            results[f"{kind}, forwarded"]["total"]["p50"]
            - results[f"{kind}, straight"]["total"]["p50"],
            3,
        )
        for kind in ("profile", "chat", "stream")
    }
    added["stream first byte"] = round(
        results["stream, forwarded"]["first_byte"]["p50"]
        - results["stream, straight"]["first_byte"]["p50"],
        3,
    )
    data = {
        "machine": h.machine_facts(),
        "loadavg_after": h.loadavg(),
        "requests_per_case": args.requests * args.rounds,
        "results_ms": results,
        "added_p50_ms": added,
    }
    path = h.write_results("forwarder", data)
    for name, found in results.items():
        line = f"{name:26s} p50 {found['total']['p50']:7.3f}  p99 {found['total']['p99']:7.3f} ms"
        if "first_byte" in found:
            line += f"  (first byte p50 {found['first_byte']['p50']:.3f})"
        line += f"  server CPU {found['server_cpu_ms']:.3f} ms/request"
        print(line)
    print("added by the hop, p50 ms:", added)
    print("results:", path)
    h.stop(server.proc)
    h.stop(service)


if __name__ == "__main__":
    main()
