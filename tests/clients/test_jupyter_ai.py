"""jupyter-ai 3's ``%%ai`` magic on top of the gateway, with the kernel's own credential.

A notebook runs the recipe of ``docs/jupyter-ai.md`` in a kernel that a real server
(from the client environment, where jupyter-ai's magics are installed) started:
``use_gateway_in_litellm()``, an alias for a gateway model, then a ``%%ai`` cell.
The answer comes from the demo backend through the gateway; the call is billed to
that notebook and cell under the kernel's credential (the request log, and the usage
API by notebook and by cell say so); no personal key is made; and no credential is
left in the kernel's environment, the saved notebook, the server's and kernels' log,
or any file under the Jupyter directories and the server root (jupyter-ai's too).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import quote

import nbformat

from tests.clients.evidence import (
    CREDENTIAL,
    PERSONAL_KEY,
    assert_no_secret_in_files,
    key_count,
    request_rows,
    usage_totals,
)
from tests.kernel.notebook_runner import execute_notebook
from tests.kernel.server import JupyterServer

NOTEBOOK = "work/ai.ipynb"

RECIPE = """\
from lumen_jupyter.kernel.client.litellm_setup import use_gateway_in_litellm
use_gateway_in_litellm()"""
ALIAS = "%load_ext jupyter_ai_magic_commands\n%ai alias pro openai/demo-pro"
ASK = "%%ai pro\nSay hello to the notebook"
CHECK = """\
import os, re, subprocess
credential = re.compile(r"lkt_[A-Za-z0-9_-]{8,}")
assert not [k for k, v in os.environ.items() if credential.search(v)], "in os.environ"
assert not credential.search(subprocess.run(["env"], capture_output=True, text=True).stdout)
print("environment clean")"""


def test_ai_magic_is_billed_to_the_notebook(server: JupyterServer, tmp_path: Path) -> None:
    keys_before = key_count(server)
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(src) for src in (RECIPE, ALIAS, ASK, CHECK)]
    source = tmp_path / "ai.ipynb"
    nbformat.write(notebook, source)
    execution = asyncio.run(execute_notebook(server, source, NOTEBOOK, timeout=120))

    ask = execution.notebook.cells[2]
    shown = " ".join(
        str(o.get("data", {}).get("text/markdown", "")) + str(o.get("text", ""))
        for o in ask.outputs
    )
    assert "Error calling language model" not in shown, shown
    assert "Say hello to the notebook" in shown, shown  # the demo model echoes the prompt
    assert "environment clean" in str(execution.notebook.cells[3].outputs)

    rows = request_rows(server, notebook=NOTEBOOK)
    assert [(r["model"], r["source"], r["cell"], r["status"], r["key_id"]) for r in rows] == [
        ("demo-pro", "kernel", ask.id, "ok", None)
    ], rows
    assert rows[0]["coins_micro"] > 0
    assert key_count(server) == keys_before  # the recipe made no personal key

    by_notebook = usage_totals(server, "group_by=notebook")
    assert by_notebook[NOTEBOOK]["requests"] == 1
    assert by_notebook[NOTEBOOK]["coins_micro"] == rows[0]["coins_micro"]
    by_cell = usage_totals(server, f"group_by=cell&notebook={quote(NOTEBOOK, safe='')}")
    assert by_cell[ask.id]["requests"] == 1

    saved = execution.saved.read_bytes()
    assert not CREDENTIAL.search(saved) and not PERSONAL_KEY.search(saved)
    assert b"lkt_" in saved  # the recipe's output shows the credential's hint, no more
    assert_no_secret_in_files(server)
