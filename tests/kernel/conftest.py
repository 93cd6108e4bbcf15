"""Fixtures for the kernel side: a live server, a configured environment, an IPython shell."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from lumen_jupyter.kernel.client.connection import forget_kernel_credential
from lumen_jupyter.kernel.client.tally import SESSION
from lumen_jupyter.kernel.magics import lumen_magics as magics_module
from tests.kernel.server import JupyterServer, start_server

_CLEAN_ENV = (
    "LUMEN_JUPYTER_URL",
    "LUMEN_KERNEL_TOKEN",
    "LUMEN_BASE_URL",
    "LUMEN_API_KEY",
    "JPY_SESSION_NAME",
    "LUMEN_JUPYTER_ROOT",
)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    """One server on the embedded default (demo models, 20-coin pool) for the session."""
    running = start_server(tmp_path_factory.mktemp("jupyter"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in _CLEAN_ENV:
        monkeypatch.delenv(name, raising=False)
    SESSION.reset()
    forget_kernel_credential()
    return monkeypatch


@pytest.fixture
def kernel_env(server: JupyterServer, clean_env: pytest.MonkeyPatch) -> JupyterServer:
    """This process looks like a kernel started by ``server`` for ``work/analysis.ipynb``."""
    for name, value in server.kernel_env().items():
        clean_env.setenv(name, value)
    clean_env.setenv("JPY_SESSION_NAME", str(server.root_dir / "work" / "analysis.ipynb"))
    return server


class Shell:
    """An IPython shell with the extension loaded; ``run`` captures what a cell shows."""

    def __init__(self, ip: InteractiveShell) -> None:
        self.ip = ip

    def run(self, source: str) -> Any:
        with capture_output() as captured:
            result = self.ip.run_cell(source, store_history=False)
        captured.result = result
        return captured

    @property
    def magics(self) -> magics_module.LumenMagics:
        return magics_module._loaded[id(self.ip)]


@pytest.fixture
def shell(clean_env: pytest.MonkeyPatch) -> Iterator[Shell]:
    ip = InteractiveShell.instance()
    ip.config.pop("LumenMagics", None)  # %config in one test must not leak into the next
    ip.run_line_magic("load_ext", "lumen_jupyter")
    try:
        yield Shell(ip)
    finally:
        ip.run_line_magic("unload_ext", "lumen_jupyter")
        ip.config.pop("LumenMagics", None)


def texts(captured: Any) -> list[str]:
    """The text/plain of every display (updates included), in order."""
    return [out.data.get("text/plain", "") for out in captured.outputs]


def last_text(captured: Any) -> str:
    shown = texts(captured)
    return shown[-1] if shown else ""


def notebook_dir(server: JupyterServer, name: str) -> Path:
    folder = server.root_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder
