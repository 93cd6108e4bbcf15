"""No secret in a notebook, a log or an error, by construction.

One server is configured with upstream keys of three shapes (Google ``AIza…``,
Groq ``gsk_…``, and a value of no known shape) for models whose upstream is a
hostile loopback server that echoes the key it was sent in every error.  The
tests then try every way a secret has leaked before: an upstream error, a
``%%lumen`` cell's saved output, ``!env`` in a kernel, a new key in the last cell
of a headless run, a key in a query string, a stopped kernel's credential.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import nbformat
import pytest
import yaml
from jupyter_client import BlockingKernelClient
from nbformat.v4 import new_code_cell, new_notebook, output_from_msg

from tests.kernel.notebook_runner import execute_notebook
from tests.kernel.server import JupyterServer, run_in_kernel, start_server

RAW_KEY = re.compile(r"sk_[A-Za-z0-9_-]{43}")
KERNEL_TOKEN = re.compile(r"lkt_[A-Za-z0-9_-]{12,}")
IDLE_TIMEOUT = 1.0
BODY_TIMEOUT = 2.0

GOOGLE_KEY = "AIzaSy" + secrets.token_urlsafe(25)[:33]
GROQ_KEY = "gsk_" + secrets.token_hex(26)
PLAIN_KEY = "Provider.Secret/" + secrets.token_hex(8) + "~value"  # no known key shape
PROVIDER_KEYS = {"echo-google": GOOGLE_KEY, "echo-groq": GROQ_KEY, "echo-plain": PLAIN_KEY}


class _Echo(BaseHTTPRequestHandler):
    """An upstream that refuses every call and quotes the key it was given."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        key = self.headers.get("Authorization", "").removeprefix("Bearer ")
        body = json.dumps(
            {"error": {"message": f"API key not valid: {key} (check the key)", "code": 400}}
        ).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def echo_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, echo_url: str) -> Iterator[JupyterServer]:
    models = [
        {
            "name": name,
            "input_cost_per_million": 1,
            "output_cost_per_million": 1,
            "endpoints": [{"url": echo_url, "model": "upstream-model", "api_key": key}],
        }
        for name, key in PROVIDER_KEYS.items()
    ]
    config = yaml.safe_dump({"models": models, "defaults": {"models": "allowed"}})
    running = start_server(
        tmp_path_factory.mktemp("secrets"),
        lumen_config=config,
        lumen_settings={"idle_connection_timeout": IDLE_TIMEOUT, "body_timeout": BODY_TIMEOUT},
        # A kernel that dies stays dead (no restart), so that death can be tested.
        jupyter_config={"KernelRestarter": {"restart_limit": 0}},
    )
    try:
        yield running
    finally:
        running.stop()


def _call(server: JupyterServer, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    return server.rest("POST", "lumen/v1/chat/completions", json=body)


def test_upstream_errors_never_carry_a_provider_key(guarded: JupyterServer) -> None:
    for model, key in PROVIDER_KEYS.items():
        response = _call(guarded, model)
        assert response.status_code == 400, response.text
        message = response.json()["error"]["message"]
        assert key not in response.text and key[4:20] not in response.text
        assert message == "API key not valid: [redacted] (check the key)"


def _notebook(path: Path, sources: list[str]) -> Path:
    notebook = new_notebook(
        cells=[new_code_cell(source, id=f"cell-{i}") for i, source in enumerate(sources)]
    )
    nbformat.write(notebook, path)
    return path


def test_every_secret_stays_out_of_notebooks_logs_and_errors(
    guarded: JupyterServer, tmp_path: Path
) -> None:
    errors: list[str] = []
    # A personal key, then the same key in query strings of failing and working requests.
    created = guarded.rest("POST", "lumen/api/keys", json={"name": "scanned"})
    personal = created.json()["key"]
    assert RAW_KEY.fullmatch(personal)
    for query in (f"api_key={personal}", f"x={personal}", f"period=month&q={personal}"):
        anonymous = httpx.get(f"{guarded.root_url}lumen/api/profile?{query}", timeout=30)
        assert anonymous.status_code == 403
        errors.append(anonymous.text)
        assert guarded.rest("GET", f"lumen/api/profile?{query}").status_code == 200
    bad = guarded.rest("POST", f"lumen/v1/chat/completions?x={personal}", content=b"{oops")
    assert bad.status_code == 400
    errors.append(bad.text)
    for model in PROVIDER_KEYS:
        errors.append(_call(guarded, model).text)
    mistyped = httpx.get(
        f"{guarded.root_url}lumen/api/profile",
        headers={"Authorization": f"Bearer {personal[:-2]}xx"},
        timeout=30,
    )
    errors.append(mistyped.text)

    # A headless run: chats that fail upstream, env dumps, and a new key in the last cell.
    source = _notebook(
        tmp_path / "leaks.ipynb",
        [
            "%load_ext lumen_jupyter",
            *(f"%%lumen -m {model}\nhello" for model in PROVIDER_KEYS),
            "import subprocess\nprint(subprocess.run(['env'], capture_output=True, text=True)"
            ".stdout)",
            "!env",
            "%lumen keys new last-cell",
        ],
    )
    credential: list[str] = []

    def read_credential(kernel_id: str) -> None:
        code = (
            "from lumen_jupyter.kernel.client.connection import take_kernel_credential\n"
            "print(take_kernel_credential())"
        )
        credential.append(run_in_kernel(guarded, kernel_id, code).strip())

    execution = asyncio.run(
        execute_notebook(guarded, source, "scan/leaks.ipynb", before_stop=read_credential)
    )
    kernel_credential = credential[0]
    assert KERNEL_TOKEN.fullmatch(kernel_credential)
    assert kernel_credential != guarded.kernel_token  # one credential per kernel

    saved = execution.saved.read_text(encoding="utf-8")
    outputs = json.dumps([cell.get("outputs") for cell in execution.notebook.cells])
    # Not vacuous: the failures, the env dumps and the advice are all there.
    assert outputs.count("\\u2717 API key not valid: [redacted]") == 3, outputs
    assert "LUMEN_JUPYTER_URL" in outputs and "LUMEN_KERNEL_TOKEN" not in outputs
    last = execution.cell("cell-6")
    assert "--save FILE" in json.dumps(last.outputs) and "last-cell" in json.dumps(last.outputs)
    shown = [json.dumps(m["msg"]["content"], default=str) for m in execution.messages]
    log = guarded.log_path.read_text(encoding="utf-8", errors="replace")
    assert "lumen/api/profile?api_key=[secret]" in log and "q=[secret]" in log
    assert "period=month" in log

    secrets_set = [*PROVIDER_KEYS.values(), personal, kernel_credential, guarded.kernel_token]
    for where, text in (
        ("notebook", saved),
        ("messages", "\n".join(shown)),
        ("log", log),
        ("errors", "\n".join(errors)),
    ):
        for secret in secrets_set:
            assert secret not in text, (where, secret[:6])
        assert not RAW_KEY.search(text), (where, RAW_KEY.search(text))
        assert not KERNEL_TOKEN.search(text), where

    # The stopped kernel's credential is refused from now on; a running one's is not.
    def profile_with(token: str) -> int:
        headers = {"Authorization": f"Bearer {token}"}
        url = f"{guarded.root_url}lumen/api/profile"
        return httpx.get(url, headers=headers, timeout=30).status_code

    assert profile_with(kernel_credential) == 401
    assert profile_with(guarded.kernel_token) == 200


def test_the_kernel_client_takes_the_credential_out_of_the_environment(
    guarded: JupyterServer,
) -> None:
    """Without ``%load_ext``: the first import of the client takes it, and it still works."""
    response = guarded.rest("POST", "api/kernels", json={"name": "python3"})
    kernel_id = response.json()["id"]
    guarded.kernels.append(kernel_id)
    code = (
        "import os, subprocess\n"
        "print('before', 'LUMEN_KERNEL_TOKEN' in os.environ)\n"
        "import lumen_jupyter\n"
        "with lumen_jupyter.client() as lumen:\n"
        "    print(lumen.profile()['user']['username'])\n"
        "print('after', 'LUMEN_KERNEL_TOKEN' in os.environ)\n"
        "dump = subprocess.run(['env'], capture_output=True, text=True).stdout\n"
        "print('child', 'LUMEN_KERNEL_TOKEN' in dump, 'LUMEN_JUPYTER_URL' in dump)\n"
    )
    try:
        printed = run_in_kernel(guarded, kernel_id, code).split()
    finally:
        guarded.stop_kernel(kernel_id)
    assert printed == ["before", "True", "ada", "after", "False", "child", "False", "True"]


def test_a_dead_kernels_credential_is_refused(guarded: JupyterServer) -> None:
    response = guarded.rest("POST", "api/kernels", json={"name": "python3"})
    kernel_id = response.json()["id"]
    code = (
        "import os\n"
        "from lumen_jupyter.kernel.client.connection import take_kernel_credential\n"
        "print(os.getpid(), take_kernel_credential())"
    )
    pid, credential = run_in_kernel(guarded, kernel_id, code).split()
    url = f"{guarded.root_url}lumen/api/profile"
    headers = {"Authorization": f"Bearer {credential}"}
    assert httpx.get(url, headers=headers, timeout=30).status_code == 200
    os.kill(int(pid), signal.SIGKILL)
    deadline = time.monotonic() + 30
    while httpx.get(url, headers=headers, timeout=30).status_code == 200:
        assert time.monotonic() < deadline, "a dead kernel's credential is still accepted"
        time.sleep(0.5)
    assert httpx.get(url, headers=headers, timeout=30).status_code == 401
    assert kernel_id not in [k["id"] for k in guarded.rest("GET", "api/kernels").json()]


def _frontend_client(server: JupyterServer, kernel_id: str) -> BlockingKernelClient:
    client = BlockingKernelClient(connection_file=str(server.connection_file(kernel_id)))
    client.load_connection_file()
    client.start_channels(hb=False)
    client.wait_for_ready(timeout=60)
    return client


def _iopub_until_idle(client: BlockingKernelClient, parent: str) -> list[dict[str, Any]]:
    messages = []
    while True:
        msg = client.get_iopub_msg(timeout=30)
        messages.append(msg)
        if (
            msg["parent_header"].get("msg_id") == parent
            and msg["msg_type"] == "status"
            and msg["content"]["execution_state"] == "idle"
        ):
            return messages


def _custom_reply(client: BlockingKernelClient, comm_id: str) -> dict[str, Any]:
    """Send what the widget's view sends when it renders; the kernel's custom answer."""
    request = client.session.msg(
        "comm_msg",
        {"comm_id": comm_id, "data": {"method": "custom", "content": {"type": "reveal"}}},
    )
    client.shell_channel.send(request)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        msg = client.get_iopub_msg(timeout=30)
        data = msg["content"].get("data") or {}
        if msg["msg_type"] == "comm_msg" and data.get("method") == "custom":
            return msg
    raise TimeoutError("the kernel never answered the view")


def test_a_new_key_in_a_notebook_travels_only_in_a_custom_message(
    guarded: JupyterServer, tmp_path: Path
) -> None:
    """As JupyterLab runs a cell (stdin allowed): the key reaches the view, never the file."""
    session = guarded.start_session("scan/interactive.ipynb")
    kernel_id = session["kernel"]["id"]
    client = _frontend_client(guarded, kernel_id)
    try:
        code = "%load_ext lumen_jupyter\n%lumen keys new interactive"
        parent = client.execute(code, allow_stdin=True)
        messages = _iopub_until_idle(client, parent)
        opened = [m for m in messages if m["msg_type"] == "comm_open"]
        shown = [m for m in messages if m["msg_type"] == "display_data"]
        assert len(shown) == 1
        view = shown[0]["content"]["data"]["application/vnd.jupyter.widget-view+json"]
        model = next(m for m in opened if m["content"]["comm_id"] == view["model_id"])
        assert model["content"]["data"]["state"]["name"] == "interactive"
        answer = _custom_reply(client, view["model_id"])
        key = answer["buffers"][0].tobytes().decode()
        assert RAW_KEY.fullmatch(key)
        models = httpx.get(
            f"{guarded.root_url}lumen/v1/models",
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        assert models.status_code == 200  # the key that was shown works

        # The notebook as a front end saves it: outputs and the widgets' state.
        cell = new_code_cell(code, id="new-key")
        cell.outputs = [output_from_msg(m) for m in shown]
        states: dict[str, Any] = {}
        for msg in [*messages, answer]:
            content = msg["content"]
            data = content.get("data") or {}
            if msg["msg_type"] == "comm_open":
                states[content["comm_id"]] = {"state": dict(data.get("state") or {})}
            elif msg["msg_type"] == "comm_msg" and data.get("method") == "update":
                states.setdefault(content["comm_id"], {"state": {}})["state"].update(
                    data.get("state") or {}
                )
        notebook = new_notebook(cells=[cell])
        notebook.metadata["widgets"] = {
            "application/vnd.jupyter.widget-state+json": {"version_major": 2, "state": states}
        }
        path = tmp_path / "interactive.ipynb"
        nbformat.write(notebook, path)
        saved = path.read_text(encoding="utf-8")
        assert view["model_id"] in saved and "--save FILE" in saved
        assert key not in saved and not RAW_KEY.search(saved)

        # Asked again after the window, the kernel no longer has it.
        later = client.execute(
            "%config LumenMagics.key_reveal_seconds = 0.5\n%lumen keys new brief", allow_stdin=True
        )
        shown = [m for m in _iopub_until_idle(client, later) if m["msg_type"] == "display_data"]
        brief = shown[0]["content"]["data"]["application/vnd.jupyter.widget-view+json"]
        time.sleep(1.0)
        assert _custom_reply(client, brief["model_id"])["content"]["data"]["content"] == {
            "type": "gone"
        }
    finally:
        client.stop_channels()
        guarded.stop_kernel(kernel_id)


def _open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_idle_and_slow_connections_are_closed(guarded: JupyterServer) -> None:
    port = int(guarded.root_url.split(":")[2].split("/")[0])
    pid = guarded.process.pid
    before = _open_fds(pid)
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(1000)]
    try:
        # A request whose headers never end, and one whose body dribbles in.
        base_path = guarded.root_url.split(str(port))[1]
        slow_head = socket.create_connection(("127.0.0.1", port))
        slow_head.sendall(f"GET {base_path} HTTP/1.1\r\n".encode())
        slow_body = socket.create_connection(("127.0.0.1", port))
        head = (
            f"POST {base_path}lumen/api/keys HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\nAuthorization: token {guarded.token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        )
        slow_body.sendall(head.encode())
        started = time.monotonic()
        body_closed = False
        for _ in range(40):  # one byte every 0.25 s: 10 s for the whole body
            try:
                slow_head.sendall(b"X")
                slow_body.sendall(b" ")
            except OSError:
                pass
            if _closed_by_server(slow_body, 0.25):
                body_closed = True
                break
        assert body_closed, "a dribbled body was read for ever"
        assert time.monotonic() - started < BODY_TIMEOUT + 2
        assert _closed_by_server(slow_head, IDLE_TIMEOUT + 2), "endless headers were read"
        # Each idle connection was accepted, then closed by the server (an end of file,
        # not a timeout here); all within a few idle periods of the server.
        deadline = time.monotonic() + 10 * IDLE_TIMEOUT + 5
        closed = sum(
            _closed_by_server(sock, max(deadline - time.monotonic(), 0.01)) for sock in idle
        )
        assert closed == len(idle)
        time.sleep(0.5)
        assert _open_fds(pid) < before + 50  # nothing piles up
        # The server still answers.
        assert guarded.rest("GET", "lumen/api/profile").status_code == 200
    finally:
        for sock in idle:
            sock.close()
