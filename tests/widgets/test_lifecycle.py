"""Widgets in a real kernel: a re-run cell closes what its previous run made, and every
widget of the kernel shares one refresh loop and one HTTP client.

The kernel is started by a real Jupyter server running lumen-jupyter; execute requests
carry the cell's id in ``metadata.cellId``, as JupyterLab sends them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client import BlockingKernelClient

from tests.kernel.server import JupyterServer, start_server

MAKE_PROFILE = "from lumen_jupyter.widgets import Profile\nProfile()"

INSPECT = """
import json, threading
from ipywidgets.widgets.widget import _instances
from lumen_jupyter.widgets import profile as _p
_open = [w for w in list(_instances.values())
         if isinstance(w, _p._ProfileWidget) and not w._closed]
_waited = all(w.wait(30) for w in _open)
print(json.dumps({
    "threads": sorted(t.name for t in threading.enumerate()),
    "open": sorted(type(w).__name__ for w in _open),
    "sources": len({id(w.source) for w in _open}),
    "loaded": _waited and all(
        w.error == "" and w.profile for w in _open if type(w).__name__ == "Profile"
    ),
}))
"""


class CellKernelClient(BlockingKernelClient):  # type: ignore[misc]
    """Sends ``cell_id`` with each execute request, as JupyterLab does."""

    cell_id: str | None = None

    def execute(self, code: str, *args: Any, **kwargs: Any) -> str:
        content = {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        }
        metadata = {"cellId": self.cell_id} if self.cell_id else {}
        msg = self.session.msg("execute_request", content, metadata=metadata)
        self.shell_channel.send(msg)
        return str(msg["header"]["msg_id"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    running = start_server(tmp_path_factory.mktemp("lifecycle"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def kernel(server: JupyterServer, tmp_path: Path) -> Iterator[CellKernelClient]:
    session = server.start_session(f"{tmp_path.name}.ipynb")
    kernel_id = session["kernel"]["id"]
    kc = CellKernelClient(connection_file=str(server.connection_file(kernel_id)))
    kc.load_connection_file()
    kc.start_channels(hb=False)
    try:
        kc.wait_for_ready(timeout=60)
        yield kc
    finally:
        kc.stop_channels()
        server.stop_kernel(kernel_id)


def run_cell(kc: CellKernelClient, cell_id: str, code: str) -> str:
    kc.cell_id = cell_id
    out: list[str] = []
    errors: list[str] = []

    def hook(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            errors.append("\n".join(msg["content"]["traceback"]))

    reply = kc.execute_interactive(code, output_hook=hook, timeout=60)
    assert reply["content"]["status"] == "ok", "\n".join(errors)
    return "".join(out)


def inspect(kc: CellKernelClient) -> dict[str, Any]:
    return json.loads(run_cell(kc, "inspect", INSPECT))  # type: ignore[no-any-return]


def test_ten_reruns_leave_one_widget_and_one_refresh_loop(kernel: CellKernelClient) -> None:
    run_cell(kernel, "profile-cell", MAKE_PROFILE)
    after_one = inspect(kernel)
    assert after_one["open"] == ["Profile"] and after_one["loaded"]
    for _ in range(9):
        run_cell(kernel, "profile-cell", MAKE_PROFILE)
    after_ten = inspect(kernel)
    assert after_ten["open"] == ["Profile"] and after_ten["loaded"]
    assert after_ten["threads"].count("lumen-widget-refresh") == 1
    # the fetch pool is shared and bounded (it grows to its four threads on demand)
    assert sum(name.startswith("lumen-widget-fetch") for name in after_ten["threads"]) <= 4
    assert others(after_ten) == others(after_one)


def others(state: dict[str, Any]) -> list[str]:
    return [name for name in state["threads"] if not name.startswith("lumen-widget-fetch")]


def test_widgets_of_one_run_and_of_other_cells_stay(kernel: CellKernelClient) -> None:
    both = (
        "from lumen_jupyter.widgets import BalanceCard, KeysTable\n"
        "display(BalanceCard())\ndisplay(KeysTable())"
    )
    run_cell(kernel, "two-widgets", both)
    run_cell(kernel, "profile-cell", MAKE_PROFILE)
    state = inspect(kernel)
    assert state["open"] == ["BalanceCard", "KeysTable", "Profile"]
    # every widget of the kernel uses the kernel's one client
    assert state["sources"] == 1
    assert state["threads"].count("lumen-widget-refresh") == 1
    run_cell(kernel, "two-widgets", both)
    assert inspect(kernel)["open"] == ["BalanceCard", "KeysTable", "Profile"]
    run_cell(kernel, "close", "for w in _open: w.close()")
    state = inspect(kernel)
    assert state["open"] == []
    # with no widget left the loop's thread ends, and starts again with the next widget
    run_cell(kernel, "wait", "import time; time.sleep(0.2)")
    assert "lumen-widget-refresh" not in inspect(kernel)["threads"]
