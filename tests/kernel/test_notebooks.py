"""End to end: the example notebooks, run by nbclient in kernels the server started.

The server runs lumen-jupyter on the embedded default; kernels get their
credential and notebook path from it, with no configuration in the notebooks.
Checked here: every magic runs, the chat streams, each call is recorded with its
notebook, cell, conversation and source, and the saved notebook holds no secret.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lumen_jupyter.store.schema import requests_log
from tests.kernel.notebook_runner import Execution, execute_notebook
from tests.kernel.server import JupyterServer, start_server

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RAW_KEY = re.compile(r"sk_[A-Za-z0-9_-]{43}")
KERNEL_TOKEN = re.compile(r"lkt_[A-Za-z0-9_-]{12,}")


@pytest.fixture(scope="module")
def fresh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    """A server of its own: the quickstart expects a user who has not consented yet."""
    running = start_server(
        tmp_path_factory.mktemp("e2e"),
        # update a streamed answer on every chunk, so that streaming shows in the messages
        kernel_config="c.LumenMagics.stream_interval = 0.0\n",
    )
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def quickstart(fresh_server: JupyterServer) -> Execution:
    return asyncio.run(
        execute_notebook(
            fresh_server,
            EXAMPLES / "quickstart.ipynb",
            "examples/quickstart.ipynb",
        )
    )


def _requests(server: JupyterServer) -> list[dict[str, Any]]:
    with sqlite3.connect(server.db_path) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute(
            f"SELECT model, source, notebook, cell, conversation, status FROM {requests_log.name}"
        ).fetchall()
    return [dict(row) for row in rows]


def _outputs_text(execution: Execution, cell_id: str) -> str:
    parts = []
    for output in execution.cell(cell_id).get("outputs", []):
        data = output.get("data", {})
        parts.append(str(data.get("text/plain", "")) + str(output.get("text", "")))
    return "\n".join(parts)


def test_quickstart_runs_top_to_bottom(quickstart: Execution) -> None:
    for cell in quickstart.notebook.cells:
        if cell.cell_type != "code":
            continue
        assert cell.execution_count is not None, cell.id
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert not errors, (cell.id, errors)
        assert all(o.get("name") != "stderr" for o in cell.outputs), (cell.id, cell.outputs)


def test_committed_examples_have_no_outputs() -> None:
    for path in EXAMPLES.glob("*.ipynb"):
        text = path.read_text(encoding="utf-8")
        assert '"outputs": []' in text and '"output_type"' not in text, path
        assert '"execution_count": null' in text, path


def test_no_raw_key_in_the_saved_notebook(quickstart: Execution) -> None:
    """A headless run (nbclient) creates the key but never shows it: nothing could
    take it off the page before the notebook is written."""
    every_message = str([m["msg"]["content"] for m in quickstart.messages])
    assert not RAW_KEY.search(every_message)
    saved = quickstart.saved.read_text(encoding="utf-8")
    assert not RAW_KEY.search(saved)
    assert not KERNEL_TOKEN.search(saved)  # nor the kernel's credential (its hint is fine)
    assert "lkt_…" in _outputs_text(quickstart, "status")
    advice = _outputs_text(quickstart, "key-new")
    assert "quickstart-script" in advice and "--save FILE" in advice
    assert "revoked" in _outputs_text(quickstart, "key-revoke")


def test_chat_streams_markdown_with_a_footer(quickstart: Execution) -> None:
    shown = quickstart.messages_of("chat-first", "display_data")
    updates = quickstart.messages_of("chat-first", "update_display_data")
    assert len(shown) == 1 and len(updates) >= 5
    texts = [m["content"]["data"]["text/markdown"] for m in [*shown, *updates]]
    assert all(t.endswith("▍") for t in texts[:-1])  # still streaming
    assert [len(t) for t in texts[1:-1]] == sorted(len(t) for t in texts[1:-1])  # it grows
    final = quickstart.cell("chat-first").outputs[-1]["data"]
    assert "Demo reply to: Explain coin budgets for AI models" in final["text/markdown"]
    assert re.search(
        r"demo-pro · \d+ in \+ \d+ out tokens · [\d.]+ coins · [\d.]+ coins left",
        final["text/plain"],
    )


def test_calls_carry_notebook_cell_conversation_and_source(
    quickstart: Execution, fresh_server: JupyterServer
) -> None:
    rows = _requests(fresh_server)
    path = "examples/quickstart.ipynb"  # relative to the server's root, as Jupyter shows it
    assert {r["notebook"] for r in rows} == {path}
    by_cell = {r["cell"]: r for r in rows}
    assert by_cell["chat-first"]["source"] == "chat"
    assert by_cell["python-openai"]["source"] == "kernel"
    first, follow_up, new = (
        by_cell[c]["conversation"] for c in ("chat-first", "chat-follow-up", "chat-new")
    )
    assert first and first == follow_up != new
    assert by_cell["consent-done"]["model"] == "demo-restricted"
    response = fresh_server.rest(
        "GET", "lumen/api/usage", params={"group_by": "notebook", "period": "week"}
    )
    assert path in response.json()["series"]
    profile = fresh_server.rest("GET", "lumen/api/profile").json()
    assert profile["web_chat"]["conversations"] == 2  # --new started the second
    assert profile["web_chat"]["requests"] == 4


def test_errors_are_one_line_saying_what_to_do(quickstart: Execution) -> None:
    text = _outputs_text(quickstart, "consent-needed")
    assert text.count("\n") == 0
    assert "Run `%lumen consent demo-restricted`" in text
    assert "Accepted: you can now use demo-restricted" in _outputs_text(quickstart, "consent")


def test_python_api_notebook(fresh_server: JupyterServer, quickstart: Execution) -> None:
    execution = asyncio.run(
        execute_notebook(fresh_server, EXAMPLES / "python-api.ipynb", "examples/python-api.ipynb")
    )
    for cell in execution.notebook.cells:
        if cell.cell_type == "code":
            assert not [o for o in cell.outputs if o.output_type == "error"], cell.id
    errors = _outputs_text(execution, "errors")
    assert "404 model_not_found" in errors
    assert "Demo reply" in _outputs_text(execution, "openai-stream")
    session = execution.cell("session").outputs[0]["data"]["text/plain"]
    assert "'requests': 2" in session  # the two openai calls of this kernel
