"""jupyter-ai 3's ``%%ai`` magic on top of the gateway, with the kernel's own credential.

A notebook runs on a real server (subprocess) the recipe of ``docs/api.md``:
``use_gateway_in_litellm()``, an alias for a gateway model, then a ``%%ai`` cell.
The answer comes from the demo backend through the gateway, the call is billed to
that notebook and cell under the kernel's credential, no personal key exists, and
neither the notebook nor the environment holds the credential.

Skipped where jupyter-ai's magics are not installed (``pip install
"jupyter-ai-magic-commands<0.1" "jupyter-ai-litellm<0.2"``: they bring litellm).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from lumen_jupyter.store.schema import api_keys, requests_log
from tests.kernel.notebook_runner import execute_notebook
from tests.kernel.server import JupyterServer, start_server

pytest.importorskip("jupyter_ai_magic_commands")
pytest.importorskip("litellm")

RECIPE = """\
from lumen_jupyter.kernel.client.litellm_setup import use_gateway_in_litellm
use_gateway_in_litellm()"""
ALIAS = "%load_ext jupyter_ai_magic_commands\n%ai alias pro openai/demo-pro"
ASK = "%%ai pro\nSay hello to the notebook"
CHECK = """\
import os
assert not any(v == os.environ.get("LUMEN_KERNEL_TOKEN") for k, v in os.environ.items()
               if k != "LUMEN_KERNEL_TOKEN")
print("environment clean")"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    running = start_server(tmp_path_factory.mktemp("jupyter-ai"))
    try:
        yield running
    finally:
        running.stop()


def test_ai_magic_is_billed_to_the_notebook(server: JupyterServer, tmp_path: Path) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(src) for src in (RECIPE, ALIAS, ASK, CHECK)]
    source = tmp_path / "ai.ipynb"
    nbformat.write(notebook, source)
    execution = asyncio.run(execute_notebook(server, source, "work/ai.ipynb", timeout=120))

    ask = execution.notebook.cells[2]
    shown = " ".join(
        str(o.get("data", {}).get("text/markdown", "")) + str(o.get("text", ""))
        for o in ask.outputs
    )
    assert "Error calling language model" not in shown, shown
    assert shown.strip(), "the %%ai cell showed nothing"
    assert "environment clean" in str(execution.notebook.cells[3].outputs)

    with sqlite3.connect(server.db_path) as db:
        rows = db.execute(
            f"SELECT model, source, notebook, cell, status, key_id FROM {requests_log.name}"
        ).fetchall()
        keys = db.execute(f"SELECT COUNT(*) FROM {api_keys.name}").fetchone()[0]
    assert rows == [("demo-pro", "kernel", "work/ai.ipynb", ask.id, "ok", None)], rows
    assert keys == 0  # nobody made or typed a personal key

    saved = execution.saved.read_text(encoding="utf-8")
    assert server.kernel_token not in saved  # the recipe shows only the credential's hint
    assert "sk_" not in saved
