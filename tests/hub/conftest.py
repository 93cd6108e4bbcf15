"""One real JupyterHub for the whole session (see :mod:`tests.hub.hub`).

A hub, the proxy, PostgreSQL, the lumen service's two workers and two users' servers
take about half a minute to start, so every test of this directory shares them.
Without the npm configurable-http-proxy (``tests/run`` installs it) the tests are
skipped, or fail under ``CI``.  ``LUMEN_HUB_KEEP=1`` keeps the hub's directory (its
config, ``hub.log`` with every process's output, the users' homes) for a look afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import pg
from tests.hub.hub import Hub, hub_for_tests


@pytest.fixture(scope="session")
def hub(postgres_server: pg.PostgresServer) -> Iterator[Hub]:
    with hub_for_tests(postgres_server, "lumen-hub-") as running:
        yield running
