"""Browser tests: a real JupyterLab (subprocess) driven by Playwright in Debian's Chromium.

Run them in their own pytest invocation (``pytest tests/ui``): in one process with
the pytest-jupyter tests, their event-loop fixtures clash at teardown. When a run
collects both, the browser tests are skipped with that advice.

The server runs on a free port under a base URL, with temporary Jupyter config,
data, runtime and IPython dirs, JupyterLab's news pop-up turned off, widget state
saved with notebooks, and lumen-jupyter on its embedded default (demo models).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
REPO = HERE.parent.parent
CHROMIUM = "/usr/bin/chromium"
# Where browser tests save their screenshots: build/ (git-ignored) unless asked for the
# docs, e.g. ``LUMEN_SCREENSHOTS_DIR=docs/screenshots python -m pytest tests/ui``.
SCREENSHOTS = REPO / os.environ.get("LUMEN_SCREENSHOTS_DIR", "build/screenshots")
BASE_PATH = "/lumen-ui/"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    ui = [item for item in items if HERE in Path(str(item.fspath)).parents]
    if len(ui) == len(items):
        return
    skip = pytest.mark.skip(reason="browser tests run on their own: pytest tests/ui")
    for item in ui:
        item.add_marker(skip)


@pytest.fixture(autouse=True)
def jp_asyncio_loop() -> Iterator[None]:
    """Turn off pytest-jupyter's event loop here: Playwright's sync API runs its own."""
    yield None


@pytest.fixture(autouse=True)
def jp_server_cleanup() -> Iterator[None]:
    yield None


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ],
    }


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict[str, Any]) -> dict[str, Any]:
    return {**browser_context_args, "viewport": {"width": 1400, "height": 1000}, "locale": "en-US"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LabServer:
    url: str  # http://127.0.0.1:PORT/lumen-ui/
    token: str
    root: Path
    settings_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def page_url(self, path: str) -> str:
        sep = "&" if "?" in path else "?"
        return f"{self.url}{path}{sep}token={self.token}"

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        auth: str | None = None,
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        all_headers = {"Authorization": auth or f"token {self.token}", **(headers or {})}
        if data is not None:
            all_headers["Content-Type"] = "application/json"
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers=all_headers
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                text = response.read().decode()
                return response.status, json.loads(text) if text else None
        except urllib.error.HTTPError as exc:
            text = exc.read().decode()
            return exc.code, json.loads(text) if text.startswith("{") else text

    def api(self, method: str, path: str, body: Any = None) -> Any:
        status, data = self.request(method, f"lumen/api/{path}", body)
        assert status < 300, (status, data)
        return data

    def chat(self, model: str, *, auth: str | None = None, **headers: str) -> int:
        body = {
            "model": model,
            "messages": [{"role": "user", "content": "Say hello"}],
            "max_tokens": 32,
        }
        status, _ = self.request(
            "POST", "lumen/v1/chat/completions", body, headers=headers, auth=auth
        )
        return status

    def set_theme(self, theme: str) -> None:
        write_setting(
            self.settings_dir, "@jupyterlab/apputils-extension", "themes", {"theme": theme}
        )

    def write_notebook(self, name: str, cells: list[str]) -> str:
        notebook = {
            "cells": [
                {
                    "cell_type": "code",
                    "execution_count": None,
                    "id": f"c{i}",
                    "metadata": {},
                    "outputs": [],
                    "source": src,
                }
                for i, src in enumerate(cells)
            ],
            "metadata": {
                "kernelspec": {
                    "display_name": "Python 3 (ipykernel)",
                    "language": "python",
                    "name": "python3",
                },
                "language_info": {"name": "python"},
            },
            "nbformat": 4,
            "nbformat_minor": 5,
        }
        (self.root / name).write_text(json.dumps(notebook), encoding="utf-8")
        return name


def write_setting(
    settings_dir: Path, plugin_package: str, plugin: str, values: dict[str, Any]
) -> None:
    target = settings_dir / plugin_package / f"{plugin}.jupyterlab-settings"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(values), encoding="utf-8")


@pytest.fixture(scope="session")
def lab_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    yield from start_lab(tmp_path_factory)


def start_lab(
    tmp_path_factory: pytest.TempPathFactory,
    *,
    lumen_yaml: str | None = None,
    ready_status: int = 200,
    checkout_frontend: bool = False,
) -> Iterator[LabServer]:
    """Start a JupyterLab with its own database (for a fixture: ``yield from``).

    ``lumen_yaml`` replaces the small default YAML file; ``ready_status`` is what
    ``lumen/api/profile`` answers once the server is up (503 for a broken file).
    ``checkout_frontend`` serves this checkout's build of the Lab extension (from
    ``jlpm build``) instead of the installed one.
    """
    if shutil.which("jupyter") is None:
        pytest.skip("jupyter is not installed")
    base = tmp_path_factory.mktemp("lab")
    dirs = {
        name: base / name
        for name in ("config", "data", "runtime", "ipython", "root", "settings", "workspaces")
    }
    for path in dirs.values():
        path.mkdir()
    settings = dirs["settings"]
    built = REPO / "lumen_jupyter" / "labextension"
    if checkout_frontend:
        if not (built / "package.json").is_file():
            pytest.skip("the Lab extension of this checkout is not built (jlpm build)")
        (dirs["data"] / "labextensions").mkdir()
        (dirs["data"] / "labextensions" / "lumen-jupyter").symlink_to(built)
    write_setting(
        settings,
        "@jupyterlab/apputils-extension",
        "notification",
        {"fetchNews": "false", "checkForUpdates": False},
    )
    write_setting(settings, "@jupyter-widgets/jupyterlab-manager", "plugin", {"saveState": True})
    token = secrets.token_hex(16)
    port = free_port()
    groups_file = base / "lumen.yaml"
    groups_file.write_text(
        lumen_yaml or "version: 2\ngroups:\n  research:\n    members: [ada]\n",
        encoding="utf-8",
    )
    config = {
        "ServerApp": {"jpserver_extensions": {"lumen_jupyter": True}},
        "LumenJupyter": {
            "username": "ada",
            "display_name": "Ada Lovelace",
            "email": "ada@example.org",
            "config_file": str(groups_file),
            "database_url": f"sqlite:///{base / 'lumen.db'}",
            "health_interval": 0,
        },
    }
    (dirs["config"] / "jupyter_server_config.json").write_text(json.dumps(config), encoding="utf-8")
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(dirs["config"]),
        "JUPYTER_DATA_DIR": str(dirs["data"]),
        "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
        "IPYTHONDIR": str(dirs["ipython"]),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(dirs["workspaces"]),
        "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "widgets"), str(REPO)]),
        "HOME": str(base),
    }
    for name in (
        "LUMEN_CONFIG",
        "LUMEN_DATABASE_URL",
        "JUPYTER_TOKEN",
        "LUMEN_JUPYTER_URL",
        "LUMEN_KERNEL_TOKEN",
    ):
        env.pop(name, None)
    log_path = base / "lab.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--allow-root",
            "--ip=127.0.0.1",
            f"--port={port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.base_url={BASE_PATH}",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={dirs['root']}",
            "--LabApp.news_url=",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=dirs["root"],
    )
    server = LabServer(
        url=f"http://127.0.0.1:{port}{BASE_PATH}",
        token=token,
        root=dirs["root"],
        settings_dir=settings,
        process=process,
        log_path=log_path,
    )
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"JupyterLab exited: {log_path.read_text(errors='replace')[-3000:]}")
        try:
            status, _ = server.request("GET", "lumen/api/profile")
            if status == ready_status:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            process.terminate()
            raise RuntimeError(
                f"JupyterLab did not start: {log_path.read_text(errors='replace')[-3000:]}"
            )
        time.sleep(0.25)
    try:
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="session")
def seeded(lab_server: LabServer) -> LabServer:
    """Usage to show: calls to two models, a chat conversation, two keys (one revoked)."""
    server = lab_server
    assert server.chat("demo-pro") == 200
    assert server.chat("demo-pro") == 200
    assert server.chat("demo-free") == 200
    assert (
        server.chat("demo-free", **{"X-Lumen-Source": "chat", "X-Lumen-Conversation": "conv-1"})
        == 200
    )
    used = server.api("POST", "keys", {"name": "my-research-script"})
    assert server.chat("demo-pro", auth=f"Bearer {used['key']}") == 200
    revoked = server.api("POST", "keys", {"name": "old-laptop"})
    assert server.chat("demo-free", auth=f"Bearer {revoked['key']}") == 200
    server.api("DELETE", f"keys/{revoked['id']}")
    server.api("POST", "keys", {"name": "ci-runner"})
    server.extra["revoked_id"] = revoked["id"]
    return server
