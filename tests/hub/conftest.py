"""One real JupyterHub for the whole session (see :mod:`tests.hub.hub`).

A hub, the proxy, PostgreSQL, the lumen service's two workers and two users' servers
take about half a minute to start, so every test of this directory shares them.
Without the npm configurable-http-proxy (``tests/run`` installs it) the tests are
skipped, or fail under ``CI``.  ``LUMEN_HUB_KEEP=1`` keeps the hub's directory (its
config, ``hub.log`` with every process's output, the users' homes) for a look afterwards.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import pg
from tests.hub.hub import Hub, ensure_chp, running_hub


@pytest.fixture(scope="session")
def hub(postgres_server: pg.PostgresServer) -> Iterator[Hub]:
    try:
        ensure_chp()
    except Exception as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the hub tests: {exc}", pytrace=False)
        pytest.skip(f"no configurable-http-proxy: {exc}")
    root = Path(tempfile.mkdtemp(prefix="lumen-hub-"))
    try:
        with running_hub(root, postgres_server) as running:
            yield running
            stopped = running.stop()
        assert stopped["lumen_left"] == [] and stopped["others_left"] == [], stopped
        assert stopped["ports_busy"] == [], stopped
    finally:
        if os.environ.get("LUMEN_HUB_KEEP"):
            print(f"\nthe hub's directory is kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
