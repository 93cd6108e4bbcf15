"""The kernel side on JupyterHub: the client, ``openai_client()`` and the magics, unchanged.

The lumen service runs as a process of its own (``tests/hosts/hub_service.py``: users
known by their hub tokens) and ada's Jupyter server in hub mode forwards to it.  A
kernel of that server is what this process pretends to be: the same environment
(its URL and its own credential), the same calls as anywhere - and they land on the
service's books as ada's.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import lumen_jupyter
from lumen_jupyter.store.schema import requests_log
from tests.hosts.hub_service import HUB_TOKENS, PREFIX
from tests.kernel.conftest import Shell, last_text
from tests.kernel.server import REPO, JupyterServer, start_server
from tests.service.service_proc import _read_line, drain


@pytest.fixture(scope="module")
def hub_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    work = tmp_path_factory.mktemp("hub")
    service_db = work / "service" / "lumen.db"
    service_db.parent.mkdir()
    service = subprocess.Popen(
        [
            *(sys.executable, "-m", "tests.hosts.hub_service", "--port", "0"),
            *("--prefix", PREFIX, "--database-url", f"sqlite:///{service_db}"),
            *("--secret-file", str(work / "service" / "secret")),
            *("--admin-token-file", str(work / "service" / "admin_token")),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("LUMEN_")},
            "JUPYTER_DATA_DIR": str(work / "service" / "data"),
            "PYTHONPATH": str(REPO),
        },
    )
    try:
        port = int(_read_line(service, r"listening on port (\d+)", 60).group(1))
        drain(service)
        server = start_server(
            work / "server",
            lumen_settings={"database_url": ""},  # no store of its own: hub mode
            db_path=service_db,  # where the tests read the books: the service's
            extra_env={
                "LUMEN_SERVICE_URL": f"http://127.0.0.1:{port}{PREFIX}",
                "JUPYTERHUB_API_TOKEN": HUB_TOKENS["ada"],
                "JUPYTERHUB_USER": "ada",
            },
        )
        try:
            assert "forwarded to the lumen service" in server.log_path.read_text()
            yield server
        finally:
            server.stop()
    finally:
        service.terminate()
        service.wait(30)


@pytest.fixture
def hub_kernel_env(hub_server: JupyterServer, clean_env: pytest.MonkeyPatch) -> JupyterServer:
    """This process looks like a kernel of ada's server, for ``work/hub.ipynb``."""
    for name, value in hub_server.kernel_env().items():
        clean_env.setenv(name, value)
    clean_env.setenv("JPY_SESSION_NAME", str(hub_server.root_dir / "work" / "hub.ipynb"))
    return hub_server


def books(server: JupyterServer) -> list[tuple[str, str, str | None]]:
    with sqlite3.connect(server.db_path) as db:
        return db.execute(
            "SELECT a.username, r.source, r.notebook FROM "
            f"{requests_log.name} r JOIN lumen_accounts a ON a.id = r.account_id ORDER BY r.id"
        ).fetchall()


def test_the_client_and_openai_client_act_for_the_owner(hub_kernel_env: JupyterServer) -> None:
    with lumen_jupyter.client() as lumen:
        assert lumen.connection.kind == "kernel"
        assert lumen.profile()["user"]["username"] == "ada"
        created = lumen.create_key("from-a-kernel")
        listed = lumen.keys()
        assert created["id"] in {k["id"] for k in listed}
        assert lumen.revoke_key(created["id"])["result"] == "revoked"
        assert [m["name"] for m in lumen.models()] == ["demo-free", "demo-pro", "demo-restricted"]
    client = lumen_jupyter.openai_client()
    assert client.base_url == hub_kernel_env.root_url + "lumen/v1/"
    reply = client.chat.completions.create(
        model="demo-pro", messages=[{"role": "user", "content": "Hi"}], max_tokens=10
    )
    streamed = list(
        client.chat.completions.create(
            model="demo-pro",
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=10,
            stream=True,
        )
    )
    assert reply.usage and len(streamed) > 2
    notebook = str(hub_kernel_env.root_dir / "work" / "hub.ipynb")
    assert books(hub_kernel_env)[-2:] == [("ada", "kernel", notebook)] * 2


def test_the_magics_work_unchanged(shell: Shell, hub_kernel_env: JupyterServer) -> None:
    assert re.fullmatch(
        r"✓ Coins available: [\d.]+ / 20 · refill \+1/hr, next at \d\d:\d\d UTC\.",
        last_text(shell.run("%lumen balance")),
    )
    shell.run("%config LumenMagics.stream_interval = 0")
    answered = shell.run("%%lumen -m demo-free --max-tokens 20\nHello from the hub")
    assert answered.result.error_in_exec is None
    assert last_text(answered).startswith("Demo reply to: Hello from the hub")
    assert books(hub_kernel_env)[-1][:2] == ("ada", "chat")


def test_the_server_holds_no_store_and_no_secret(hub_server: JupyterServer) -> None:
    workdir = hub_server.root_dir.parent
    found = [
        path
        for path in workdir.rglob("*")
        if (path.suffix in (".db", ".sqlite") and path.name != "history.sqlite")  # IPython's
        or path.name in ("secret", "admin_token")
    ]
    assert found == []
    assert not (workdir / "data" / "lumen").exists()
    assert Path(hub_server.db_path).exists()  # the books are the service's, elsewhere
