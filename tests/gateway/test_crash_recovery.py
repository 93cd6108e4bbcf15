"""Crashes and neighbours: real server processes on one store.

* ``kill -9`` during 50 streams: the next server to start bills each call for the
  output it had delivered, up to a second before the crash, never more than the
  client received;
* a second server started on the same store while the first relays 20 streams
  frees none of them: they finish and are billed in full.

The upstream is the demo backend in a process of its own, sending a long reply
slowly (one event every 40 ms), so that streams are mid-way when things happen.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import select

from lumen_jupyter.core.ledger import ledger_matches_balance
from lumen_jupyter.core.tokens import TokenCounter
from lumen_jupyter.store import Store, sqlite_url
from lumen_jupyter.store.schema import accounts, instances, requests_log
from tests.kernel.server import JupyterServer, free_port, start_server

REPLY_TOKENS = 100_000  # the demo sends a reply exactly this long, lazily


@pytest.fixture
def slow_upstream(request: pytest.FixtureRequest) -> Iterator[str]:
    """The demo backend in its own process, one event every ``param`` ms (default 40)."""
    delay = getattr(request, "param", 40)
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lumen_jupyter.demo.backend",
            "--port",
            str(port),
            "--chunk-delay-ms",
            str(delay),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert process.stdout is not None
    process.stdout.readline()  # "demo backend listening on ..."
    yield f"http://127.0.0.1:{port}/v1"
    process.terminate()
    process.wait(timeout=10)


def config(upstream: str) -> str:
    return yaml.safe_dump(
        {
            "models": [
                {
                    "name": "slow",
                    "input_cost_per_million": 1,
                    "output_cost_per_million": 10,
                    "max_model_len": 200_000,
                    "endpoints": [{"url": upstream, "model": "demo-pro"}],
                }
            ],
            "defaults": {"models": "allowed", "tokens": {"max": 1000, "refresh": 0}},
        }
    )


@dataclass
class Stream:
    """One client's stream: what it received, and when."""

    index: int
    received: list[tuple[float, int]] = field(default_factory=list)  # (time, tokens so far)
    finished: bool = False
    error: str | None = None

    def tokens_by(self, moment: float) -> int:
        return max((n for t, n in self.received if t <= moment), default=0)

    @property
    def tokens(self) -> int:
        return self.received[-1][1] if self.received else 0


def run_stream(
    server: JupyterServer, stream: Stream, started: threading.Barrier, long: bool
) -> None:
    counter = TokenCounter()
    body: dict[str, Any] = {
        "model": "slow",
        "stream": True,
        "messages": [{"role": "user", "content": f"stream number {stream.index}"}],
    }
    if long:
        body["max_tokens"] = REPLY_TOKENS
    headers = {**server.jupyter_headers, "X-Lumen-Cell": f"cell-{stream.index}"}
    started.wait()
    try:
        with httpx.stream(
            "POST",
            server.root_url + "lumen/v1/chat/completions",
            json=body,
            headers=headers,
            timeout=httpx.Timeout(60, connect=10),
        ) as response:
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                for choice in event.get("choices") or ():
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        counter.add(content)
                        stream.received.append((time.monotonic(), counter.tokens))
        stream.finished = True
    except httpx.HTTPError as error:
        stream.error = type(error).__name__


def start_streams(
    server: JupyterServer, count: int, *, long: bool
) -> tuple[list[Stream], list[threading.Thread]]:
    """``long``: a reply that lasts ~an hour; else the demo's natural 20-60 tokens."""
    streams = [Stream(i) for i in range(count)]
    barrier = threading.Barrier(count)
    threads = [
        threading.Thread(target=run_stream, args=(server, s, barrier, long), daemon=True)
        for s in streams
    ]
    for thread in threads:
        thread.start()
    return streams, threads


def wait_until_streaming(streams: list[Stream], tokens: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while min(s.tokens for s in streams) < tokens:
        assert time.monotonic() < deadline, [s.tokens for s in streams]
        time.sleep(0.05)


def rows_by_cell(db: Path) -> dict[str, Any]:
    store = Store(sqlite_url(db))
    try:
        with store.read() as conn:
            rows = conn.execute(select(requests_log)).all()
            (acct,) = conn.execute(select(accounts.c.id)).scalars().all()
            assert ledger_matches_balance(conn, acct)
        return {str(r.cell): r for r in rows}
    finally:
        store.dispose()


def registered_instances(db: Path) -> list[str]:
    store = Store(sqlite_url(db))
    try:
        with store.read() as conn:
            return [str(i) for i in conn.execute(select(instances.c.id)).scalars()]
    finally:
        store.dispose()


def test_kill_9_during_50_streams_bills_what_was_delivered(
    tmp_path: Path, slow_upstream: str
) -> None:
    first = start_server(tmp_path / "one", lumen_config=config(slow_upstream))
    streams, threads = start_streams(first, 50, long=True)
    try:
        wait_until_streaming(streams, 40)
        time.sleep(1.5)  # every stream has recorded its progress at least once
        killed_at = time.monotonic()
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait(timeout=10)
    finally:
        for thread in threads:
            thread.join(timeout=30)
    assert all(not s.finished for s in streams)

    # A new server on the same store (same Jupyter dirs, same database) recovers at start.
    second = start_server(tmp_path / "one", lumen_config=config(slow_upstream))
    try:
        rows = rows_by_cell(second.db_path)
    finally:
        second.stop()
    assert len(rows) == 50
    billed = received = 0
    for stream in streams:
        row = rows[f"cell-{stream.index}"]
        assert row.status == "interrupted", row
        assert row.estimated
        # never more than the client got; at most about a second's worth less
        assert row.output_tokens <= stream.tokens, (row, stream.tokens)
        assert row.output_tokens >= stream.tokens_by(killed_at - 1.5), (row, stream.tokens)
        assert row.coins_micro > 0 and row.coins_micro <= row.cap_micro
        billed += row.output_tokens
        received += stream.tokens
    assert billed >= 0.5 * received  # ~2 s of ~3.5 s delivered were billed at the least


@pytest.mark.parametrize("slow_upstream", [400], indirect=True)
def test_a_second_server_on_the_same_store_frees_none_of_the_firsts_streams(
    tmp_path: Path, slow_upstream: str
) -> None:
    first = start_server(tmp_path / "one", lumen_config=config(slow_upstream))
    second: JupyterServer | None = None
    try:
        streams, threads = start_streams(first, 20, long=False)  # 20-60 events: 8-24 s
        wait_until_streaming(streams, 3)
        second = start_server(
            tmp_path / "two", lumen_config=config(slow_upstream), db_path=first.db_path
        )
        assert len(registered_instances(first.db_path)) == 2
        live = [s for s in streams if not s.finished]  # still streaming when it started
        assert len(live) >= 10, len(live)
        for thread in threads:
            thread.join(timeout=60)
    finally:
        if second is not None:
            second.stop()
        first.stop()
    assert all(s.finished and s.error is None for s in streams), [s.error for s in streams]
    rows = rows_by_cell(first.db_path)
    for stream in streams:
        row = rows[f"cell-{stream.index}"]
        assert row.status == "ok", row
        assert not row.estimated
        assert row.output_tokens == stream.tokens > 0
        assert 0 < row.coins_micro <= row.cap_micro
    assert registered_instances(first.db_path) == []  # both stopped cleanly
