"""Finding the gateway with no configuration, and never showing a credential."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from lumen_jupyter.kernel.client import attribution
from lumen_jupyter.kernel.client.connection import Connection, discover, urls_for
from lumen_jupyter.kernel.client.errors import LumenAPIError
from lumen_jupyter.kernel.client.lumen_client import LumenClient
from lumen_jupyter.server import model_api

REPO = Path(__file__).resolve().parents[2]
KEY = "sk_" + "A" * 20 + "secretpart" + "B" * 13
TOKEN = "lkt_" + "k" * 39 + "tail"


def test_a_kernel_started_by_the_server_needs_no_configuration() -> None:
    env = {"LUMEN_JUPYTER_URL": "http://127.0.0.1:8888/a%40b/", "LUMEN_KERNEL_TOKEN": TOKEN}
    found = discover(env=env)
    assert found.kind == "kernel"
    assert found.v1_url == "http://127.0.0.1:8888/a%40b/lumen/v1/"
    assert found.api_url == "http://127.0.0.1:8888/a%40b/lumen/api/"
    assert found.root_url == "http://127.0.0.1:8888/a%40b/"
    assert found.auth_headers() == {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize(
    ("base", "v1", "api"),
    [
        (
            "https://hub.example.org/user/ada/",
            "https://hub.example.org/user/ada/lumen/v1/",
            "https://hub.example.org/user/ada/lumen/api/",
        ),
        (
            "https://hub.example.org/user/ada/lumen/v1",
            "https://hub.example.org/user/ada/lumen/v1/",
            "https://hub.example.org/user/ada/lumen/api/",
        ),
        ("https://lumen.example.edu/v1/", "https://lumen.example.edu/v1/", None),
        ("http://localhost:8000/v1", "http://localhost:8000/v1/", None),
    ],
)
def test_base_url_forms(base: str, v1: str, api: str | None) -> None:
    assert urls_for(base) == (v1, api)
    found = discover(env={"LUMEN_BASE_URL": base, "LUMEN_API_KEY": KEY})
    assert (found.v1_url, found.api_url, found.kind) == (v1, api, "key")


def test_explicit_arguments_win_over_the_kernel() -> None:
    env = {"LUMEN_JUPYTER_URL": "http://127.0.0.1:8888/", "LUMEN_KERNEL_TOKEN": TOKEN}
    found = discover("http://other:9000/v1", KEY, env=env)
    assert found.v1_url == "http://other:9000/v1/" and found.kind == "key"


def test_missing_configuration_says_what_to_set() -> None:
    with pytest.raises(LumenAPIError) as raised:
        discover(env={})
    assert raised.value.code == "not_configured"
    assert "LUMEN_BASE_URL" in raised.value.one_line()
    with pytest.raises(LumenAPIError) as raised:
        discover(env={"LUMEN_BASE_URL": "http://x/v1"})
    assert "LUMEN_API_KEY is not set" in raised.value.one_line()
    with pytest.raises(LumenAPIError, match="must start with http"):
        discover(env={"LUMEN_BASE_URL": "ftp://x", "LUMEN_API_KEY": KEY})


def test_no_repr_or_str_shows_the_secret() -> None:
    connection = Connection("http://x/v1/", None, KEY, kind="key", origin="test")
    client = LumenClient(connection=connection)
    try:
        shown = [
            repr(connection),
            str(connection),
            connection.describe(),
            repr(client),
            str(client),
            repr(vars(client)),
            repr(client._http.headers),
        ]
        for text in shown:
            assert KEY not in text and "secretpart" not in text, text
        assert "sk_A…BBBB" in repr(connection)
        assert connection.credential_hint == "sk_A…BBBB"
    finally:
        client.close()
    with pytest.raises(TypeError):
        pickle.dumps(connection)


def test_the_headers_match_the_gateway() -> None:
    assert attribution.NOTEBOOK_HEADER == model_api.NOTEBOOK_HEADER
    assert attribution.CELL_HEADER == model_api.CELL_HEADER
    assert attribution.CONVERSATION_HEADER == model_api.CONVERSATION_HEADER
    assert attribution.SOURCE_HEADER == model_api.SOURCE_HEADER


def test_notebook_path_and_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/ada/work/ünï code #1.ipynb")
    monkeypatch.delenv("LUMEN_JUPYTER_ROOT", raising=False)
    headers = attribution.attribution_headers(source="chat", conversation="c1")
    assert headers["X-Lumen-Notebook"] == "/home/ada/work/%C3%BCn%C3%AF%20code%20%231.ipynb"
    assert headers["X-Lumen-Source"] == "chat" and headers["X-Lumen-Conversation"] == "c1"
    monkeypatch.setenv("LUMEN_JUPYTER_ROOT", "/home/ada")
    assert attribution.notebook_path() == "work/ünï code #1.ipynb"
    monkeypatch.delenv("JPY_SESSION_NAME")
    assert "X-Lumen-Notebook" not in attribution.attribution_headers()


def test_cell_id_from_the_execute_request(monkeypatch: pytest.MonkeyPatch) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    monkeypatch.setattr(shell, "parent_header", {"metadata": {"cellId": "cell-42"}}, raising=False)
    assert attribution.current_cell_id() == "cell-42"
    monkeypatch.setattr(shell, "parent_header", {"metadata": {}}, raising=False)
    assert attribution.current_cell_id() is None


def test_importing_the_package_stays_cheap() -> None:
    code = (
        "import sys, lumen_jupyter, lumen_jupyter.kernel; "
        "heavy = [m for m in ('jupyter_server', 'tornado', 'httpx', 'openai', 'IPython', "
        "'sqlalchemy', 'aiohttp', 'anywidget') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "[]"
