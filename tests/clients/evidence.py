"""What the client tests read back from a server: its request log, its usage API, and
every file it (and jupyter-ai, and its kernels) wrote, searched for credentials."""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path
from typing import Any

from lumen_jupyter.store.schema import api_keys, requests_log
from tests.kernel.server import JupyterServer

CREDENTIAL = re.compile(rb"lkt_[A-Za-z0-9_-]{8,}")
"""A kernel (or server) credential; the masked form in logs, ``lkt_…``, does not match."""
PERSONAL_KEY = re.compile(rb"sk_[A-Za-z0-9_-]{16,}")


def request_rows(server: JupyterServer, **where: Any) -> list[dict[str, Any]]:
    """The request log, as dicts, filtered by equality on the given columns."""
    with sqlite3.connect(server.db_path) as db:
        db.row_factory = sqlite3.Row
        rows = [dict(r) for r in db.execute(f"SELECT * FROM {requests_log.name} ORDER BY id")]
    return [r for r in rows if all(r[k] == v for k, v in where.items())]


def key_count(server: JupyterServer) -> int:
    """How many personal keys exist (drafts and revoked ones included)."""
    with sqlite3.connect(server.db_path) as db:
        return int(db.execute(f"SELECT COUNT(*) FROM {api_keys.name}").fetchone()[0])


def usage_totals(server: JupyterServer, query: str) -> dict[str, dict[str, int]]:
    """The week's totals per series of ``lumen/api/usage?period=week&<query>``.

    The daily counters are written as a call is settled, which a client may see
    finish a moment before; so this waits briefly for a series to appear."""
    deadline = time.monotonic() + 10
    while True:
        response = server.rest("GET", f"lumen/api/usage?period=week&{query}")
        assert response.status_code == 200, response.text
        totals: dict[str, dict[str, int]] = {}
        for bucket in response.json()["buckets"]:
            for name, values in bucket["values"].items():
                total = totals.setdefault(name, {"requests": 0, "coins_micro": 0})
                total["requests"] += values["requests"]
                total["coins_micro"] += values["coins_micro"]
        if totals or time.monotonic() > deadline:
            return totals
        time.sleep(0.1)


def assert_no_secret_in_files(server: JupyterServer) -> list[str]:
    """No credential or key in any file the server, its kernels and jupyter-ai wrote
    (the server's log, which has the kernels' output too; the Jupyter config, data and
    runtime directories; the server root).  The files searched, relative."""
    workdir = server.root_dir.parent
    searched = []
    for path in sorted(workdir.rglob("*")):
        if not path.is_file() or path == server.db_path:
            continue
        content = path.read_bytes()
        found = CREDENTIAL.search(content) or PERSONAL_KEY.search(content)
        assert found is None, f"{path.relative_to(workdir)}: {found.group()[:8]!r}…"
        searched.append(path.relative_to(workdir).as_posix())
    assert "server.log" in searched
    return searched


def process_environment(pid: int) -> bytes:
    """The environment a running process was started with (Linux)."""
    return Path(f"/proc/{pid}/environ").read_bytes()
