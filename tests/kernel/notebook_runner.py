"""Execute a notebook with nbclient in a kernel that a real Jupyter server started.

nbclient normally starts its own kernel, which would not have the server's
environment.  Here the server starts the kernel for a notebook session (as
JupyterLab does), and nbclient drives it through the connection file.  Like
JupyterLab, each execute request carries the cell's id in ``metadata.cellId``.
Every IOPub message is kept, so tests can see what was shown before it was
replaced.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client.asynchronous import AsyncKernelClient
from nbclient import NotebookClient
from nbformat import NotebookNode

from tests.kernel.server import JupyterServer


class CellIdKernelClient(AsyncKernelClient):  # type: ignore[misc]
    """Sends the current cell's id with each execute request, as JupyterLab does."""

    cell_id: str | None = None

    def execute(
        self,
        code: str,
        silent: bool = False,
        store_history: bool = True,
        user_expressions: dict[str, Any] | None = None,
        allow_stdin: bool | None = None,
        stop_on_error: bool = True,
    ) -> str:
        content = {
            "code": code,
            "silent": silent,
            "store_history": store_history,
            "user_expressions": user_expressions or {},
            "allow_stdin": False if allow_stdin is None else allow_stdin,
            "stop_on_error": stop_on_error,
        }
        metadata = {"cellId": self.cell_id} if self.cell_id else {}
        msg = self.session.msg("execute_request", content, metadata=metadata)
        self.shell_channel.send(msg)
        return str(msg["header"]["msg_id"])


class _ServerKernel:
    """The little of a kernel manager nbclient asks about; the server owns the kernel."""

    has_kernel = True

    async def is_alive(self) -> bool:
        return True


class RecordingClient(NotebookClient):  # type: ignore[misc]
    """nbclient, keeping every IOPub message it processes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.messages: list[dict[str, Any]] = []

    def process_message(
        self, msg: dict[str, Any], cell: NotebookNode, cell_index: int
    ) -> NotebookNode | None:
        self.messages.append({"cell": cell.get("id"), "msg": msg})
        return super().process_message(msg, cell, cell_index)


@dataclass
class Execution:
    notebook: NotebookNode
    saved: Path
    session: dict[str, Any]
    messages: list[dict[str, Any]] = field(default_factory=list)

    def messages_of(self, cell_id: str, msg_type: str | None = None) -> list[dict[str, Any]]:
        return [
            m["msg"]
            for m in self.messages
            if m["cell"] == cell_id and (msg_type is None or m["msg"]["msg_type"] == msg_type)
        ]

    def cell(self, cell_id: str) -> NotebookNode:
        return next(c for c in self.notebook.cells if c.get("id") == cell_id)


async def execute_notebook(
    server: JupyterServer,
    source: Path,
    relative: str,
    *,
    timeout: int = 120,
    before_stop: Callable[[str], None] | None = None,
) -> Execution:
    """Copy ``source`` to ``relative`` under the server root, run it there, save it.

    ``before_stop(kernel_id)`` runs after the notebook is saved, while its kernel lives.
    """
    target = server.root_dir / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    notebook = nbformat.read(source, as_version=4)
    nbformat.write(notebook, target)
    session = server.start_session(relative)
    kernel_id = session["kernel"]["id"]
    kc = CellIdKernelClient(connection_file=str(server.connection_file(kernel_id)))
    kc.load_connection_file()
    kc.start_channels(hb=False)
    try:
        await kc.wait_for_ready(timeout=60)

        def on_cell_execute(cell: NotebookNode, cell_index: int) -> None:
            kc.cell_id = cell.get("id")

        client = RecordingClient(
            notebook,
            timeout=timeout,
            kernel_name="python3",
            resources={"metadata": {"path": str(target.parent)}},
            on_cell_execute=on_cell_execute,
        )
        client.km = _ServerKernel()
        client.kc = kc
        client.reset_execution_trackers()
        for index, cell in enumerate(notebook.cells):
            await client.async_execute_cell(cell, index)
        nbformat.write(notebook, target)
        if before_stop is not None:
            await asyncio.to_thread(before_stop, kernel_id)
        return Execution(notebook, target, session, client.messages)
    finally:
        kc.stop_channels()
        await asyncio.to_thread(server.stop_kernel, kernel_id)
