"""The standalone service and a demo upstream as real processes, for the worker tests."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


def _read_line(proc: subprocess.Popen[str], pattern: str, timeout: float) -> re.Match[str]:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        found = re.search(pattern, line)
        if found:
            return found
    raise AssertionError(f"no line matching {pattern!r}; output:\n{''.join(seen)}")


def drain(proc: subprocess.Popen[str]) -> list[str]:
    """Keep reading a process's output (a full pipe would block it); returns the lines."""
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    return lines


@contextmanager
def demo_upstream(chunk_delay_ms: float = 0.0, latency_ms: float = 0.0) -> Iterator[str]:
    """A demo backend process; yields its ``/v1`` URL."""
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "lumen_jupyter.demo.backend", "--port", "0"),
            *("--chunk-delay-ms", str(chunk_delay_ms), "--latency-ms", str(latency_ms)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = _read_line(proc, r"listening on (\S+)", 30).group(1)
        drain(proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@dataclass
class Service:
    proc: subprocess.Popen[str]
    port: int
    workdir: Path
    prefix: str
    output: list[str]

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    @property
    def token_file(self) -> Path:
        return self.workdir / "admin_token"

    def admin(self, *args: str) -> Any:
        """``jupyter lumen --url … --json ARGS`` against this service."""
        done = subprocess.run(
            [
                *(sys.executable, "-m", "lumen_jupyter.cli", "--url", self.root, "--json"),
                *("--token-file", str(self.token_file), *args),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def workers(self) -> list[int]:
        """The pids of the worker processes (children of the service)."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(pid) for pid in children.read_text().split()] if children.exists() else []

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


@contextmanager
def lumen_service(
    workdir: Path,
    database_url: str,
    upstream: str,
    *,
    workers: int = 2,
    pool: dict[str, Any] | None = None,
    prefix: str = "/",
    extra: tuple[str, ...] = (),
) -> Iterator[Service]:
    """``python -m lumen_jupyter.service`` with a YAML pointing at ``upstream``."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = {
        "models": [
            {
                "name": name,
                "input_cost_per_million": price,
                "output_cost_per_million": price,
                "endpoints": [{"url": upstream, "model": "demo-pro"}],
            }
            for name, price in (("demo-pro", 50), ("demo-dear", 100_000))
        ],
        "defaults": {"models": "allowed", "tokens": pool or {"max": 20, "starting": 20}},
    }
    (workdir / "lumen.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    env = {
        **os.environ,
        "JUPYTER_DATA_DIR": str(workdir / "data"),
        "JUPYTER_CONFIG_DIR": str(workdir / "config"),
    }
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "lumen_jupyter.service", "--port", "0", "--ip", "127.0.0.1"),
            *("--workers", str(workers), "--database-url", database_url),
            *("--lumen-config", str(workdir / "lumen.yaml")),
            *("--secret-file", str(workdir / "secret"), "--prefix", prefix),
            *("--admin-token-file", str(workdir / "admin_token"), *extra),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        port = int(_read_line(proc, r"listening on port (\d+)", 60).group(1))
        service = Service(proc, port, workdir, prefix, drain(proc))
        deadline = time.monotonic() + 30
        while len(service.workers()) < workers and time.monotonic() < deadline:
            time.sleep(0.05)
        yield service
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
