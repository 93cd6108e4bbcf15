"""A real ``jupyter server`` with lumen-jupyter, as a subprocess, for the kernel tests.

Kernels must be started *by the server* to get ``LUMEN_JUPYTER_URL``,
``LUMEN_KERNEL_TOKEN`` and ``JPY_SESSION_NAME``; a subprocess server on a free
port with its own Jupyter directories gives exactly that, and leaves the test
process free to make blocking calls (as a kernel does).  The base URL contains
an escaped character to catch base_url bugs.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

REPO = Path(__file__).resolve().parents[2]
BASE_URL = "/a%40b/"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class JupyterServer:
    """A running server: its URLs, Jupyter token, directories and kernel credential."""

    root_url: str
    token: str
    root_dir: Path
    runtime_dir: Path
    db_path: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    kernels: list[str] = field(default_factory=list)
    _kernel_token: str = ""

    @property
    def kernel_token(self) -> str:
        """The credential of a kernel kept running for the tests (asked from it, once).

        Each kernel has its own credential, valid while it runs: this one's kernel is
        stopped with the server.
        """
        if not self._kernel_token:
            self._kernel_token = _read_kernel_token(self)
        return self._kernel_token

    @property
    def jupyter_headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def rest(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Call the Jupyter REST API (``api/...``) or lumen's with the Jupyter token."""
        return httpx.request(
            method, self.root_url + path, headers=self.jupyter_headers, timeout=30, **kwargs
        )

    def kernel_env(self) -> dict[str, str]:
        """What the server puts into the environment of the kernels it starts."""
        return {"LUMEN_JUPYTER_URL": self.root_url, "LUMEN_KERNEL_TOKEN": self.kernel_token}

    def start_session(self, notebook: str) -> dict[str, Any]:
        """Open a notebook session as JupyterLab does; the server starts its kernel."""
        body = {
            "path": notebook,
            "name": Path(notebook).name,
            "type": "notebook",
            "kernel": {"name": "python3"},
        }
        response = self.rest("POST", "api/sessions", json=body)
        response.raise_for_status()
        session = response.json()
        self.kernels.append(session["kernel"]["id"])
        return session  # type: ignore[no-any-return]

    def connection_file(self, kernel_id: str) -> Path:
        path = self.runtime_dir / f"kernel-{kernel_id}.json"
        deadline = time.monotonic() + 30
        while not path.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no connection file for kernel {kernel_id}")
            time.sleep(0.05)
        return path

    def stop_kernel(self, kernel_id: str) -> None:
        self.rest("DELETE", f"api/kernels/{kernel_id}")
        if kernel_id in self.kernels:
            self.kernels.remove(kernel_id)

    def stop(self) -> None:
        for kernel_id in list(self.kernels):
            with contextlib.suppress(httpx.HTTPError):
                self.stop_kernel(kernel_id)
        try:
            self.rest("POST", "api/shutdown")
            self.process.wait(timeout=15)
        except (httpx.HTTPError, subprocess.TimeoutExpired):
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_server(
    workdir: Path,
    *,
    lumen_config: str | None = None,
    kernel_config: str | None = None,
    lumen_settings: dict[str, Any] | None = None,
    jupyter_config: dict[str, Any] | None = None,
    db_path: Path | None = None,
    ready_status: int = 200,
    python: str | Path = sys.executable,
    extensions: dict[str, bool] | None = None,
    extra_env: dict[str, str] | None = None,
) -> JupyterServer:
    """Start ``jupyter server`` with the extension on the embedded default (or a YAML file).

    ``kernel_config`` becomes the kernels' ``ipython_kernel_config.py``;
    ``lumen_settings`` are more ``LumenJupyter`` traits; ``jupyter_config`` more
    sections of the server's configuration (``{"KernelRestarter": {...}}``); ``db_path``
    shares another server's database (default: one in ``workdir``); ``python`` runs the
    server (and so its kernels) from another environment; ``extensions`` turns more
    server extensions on or off; ``extra_env`` adds to the server's (and its kernels')
    environment.
    """
    for name in ("config", "data", "runtime", "ipython/profile_default", "root"):
        (workdir / name).mkdir(parents=True, exist_ok=True)
    if kernel_config is not None:
        profile = workdir / "ipython" / "profile_default"
        (profile / "ipython_kernel_config.py").write_text(kernel_config, encoding="utf-8")
    port = free_port()
    token = uuid.uuid4().hex
    db_path = db_path or workdir / "lumen.db"
    lumen: dict[str, Any] = {
        "username": "ada",
        "display_name": "Ada Lovelace",
        "email": "ada@example.org",
        "database_url": f"sqlite:///{db_path}",
        "health_interval": 0.0,
    }
    lumen.update(lumen_settings or {})
    if lumen_config is not None:
        config_path = workdir / "lumen.yaml"
        config_path.write_text(lumen_config, encoding="utf-8")
        lumen["config_file"] = str(config_path)
        lumen["demo_backend"] = "on"
    config = {
        "ServerApp": {
            # Only lumen: the others only slow the start-up down.
            "jpserver_extensions": {
                "lumen_jupyter": True,
                "jupyterlab": False,
                "jupyter_lsp": False,
                "notebook_shim": False,
                "notebook": False,
                "jupyter_server_terminals": False,
                **(extensions or {}),
            },
            "ip": "127.0.0.1",
            "port": port,
            "port_retries": 0,
            "open_browser": False,
            "base_url": BASE_URL,
            "root_dir": str(workdir / "root"),
            "allow_root": True,
        },
        "IdentityProvider": {"token": token},
        "LumenJupyter": lumen,
        **(jupyter_config or {}),
    }
    (workdir / "config" / "jupyter_server_config.json").write_text(json.dumps(config))
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("LUMEN_", "JUPYTER_", "JPY_"))
    }
    env.update(
        {
            "JUPYTER_CONFIG_DIR": str(workdir / "config"),
            "JUPYTER_DATA_DIR": str(workdir / "data"),
            "JUPYTER_RUNTIME_DIR": str(workdir / "runtime"),
            "JUPYTER_PLATFORM_DIRS": "1",
            "IPYTHONDIR": str(workdir / "ipython"),
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p),
        }
    )
    env.update(extra_env or {})
    log_path = workdir / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(python), "-m", "jupyter_server"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir / "root",
        )
    server = JupyterServer(
        root_url=f"http://127.0.0.1:{port}{BASE_URL}",
        token=token,
        root_dir=workdir / "root",
        runtime_dir=workdir / "runtime",
        db_path=db_path,
        process=process,
        log_path=log_path,
    )
    _wait_ready(server, ready_status)
    return server


def _wait_ready(server: JupyterServer, ready_status: int = 200) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError("jupyter server exited:\n" + server.log_path.read_text()[-4000:])
        try:
            if server.rest("GET", "lumen/api/profile").status_code == ready_status:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop()
    raise TimeoutError("jupyter server did not start:\n" + server.log_path.read_text()[-4000:])


def _read_kernel_token(server: JupyterServer) -> str:
    """Start a kernel and ask it for its credential (the server keeps it private)."""
    response = server.rest("POST", "api/kernels", json={"name": "python3"})
    response.raise_for_status()
    kernel_id = response.json()["id"]
    server.kernels.append(kernel_id)  # its credential is valid while it runs
    return run_in_kernel(
        server,
        kernel_id,
        "from lumen_jupyter.kernel.client.connection import take_kernel_credential\n"
        "print(take_kernel_credential())",
    ).strip()


def run_in_kernel(server: JupyterServer, kernel_id: str, code: str) -> str:
    """Run ``code`` in a kernel of the server; what it printed."""
    from jupyter_client import BlockingKernelClient

    client = BlockingKernelClient(connection_file=str(server.connection_file(kernel_id)))
    client.load_connection_file()
    client.start_channels(hb=False)  # a heartbeat not yet beating reads as a dead kernel
    try:
        client.wait_for_ready(timeout=60)
        found: list[str] = []

        def keep(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "stream":
                found.append(msg["content"]["text"])

        client.execute_interactive(code, output_hook=keep, timeout=60)
    finally:
        client.stop_channels()
    return "".join(found)


def quoted(path: str) -> str:
    return quote(path, safe="/")
