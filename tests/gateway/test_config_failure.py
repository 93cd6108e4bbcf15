"""A configuration that fails to load is loud and harmless.

Jupyter still serves, every lumen route answers 503 with the reason (the model API in
OpenAI's error shape), nothing is charged, and the server still stops on SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import openai
import pytest

BROKEN = """
version: 2
groups:
  staff:
    max: 10
    model_access:
      default: sometimes
models:
  - name: m
    endpoints:
      - url: http://127.0.0.1:9/v1
"""
REASON = "groups.staff.model_access.default must be 'allowed' or 'blocked' (got 'sometimes')"


@pytest.fixture
def broken_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(BROKEN, encoding="utf-8")
    return path


@pytest.fixture
def lumen_config(broken_file: Path) -> dict[str, Any]:
    return {"config_file": str(broken_file), "demo_backend": "off"}


async def test_every_lumen_route_answers_503_with_the_reason(
    jp_fetch: Any, lumen_app: Any, gateway_url: str
) -> None:
    status = await jp_fetch("api", "status", raise_error=False)
    assert status.code == 200  # Jupyter itself runs on
    for path in (("profile",), ("models",), ("keys",), ("no", "such", "route")):
        response = await jp_fetch("lumen", "api", *path, raise_error=False)
        assert response.code == 503, path
        error = json.loads(response.body)["error"]
        assert error["code"] == "lumen_config_error"
        assert REASON in error["message"]

    kernel = openai.AsyncOpenAI(
        base_url=gateway_url,
        api_key=lumen_app.kernel_credentials.issue("test-kernel"),
        max_retries=0,
    )
    with pytest.raises(openai.APIStatusError) as failed:
        await kernel.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert failed.value.status_code == 503
    assert REASON in failed.value.message
    with pytest.raises(openai.APIStatusError) as listed:
        await kernel.models.list()
    assert listed.value.status_code == 503

    # A personal key cannot be checked without the store: 503, without the details.
    stranger = openai.AsyncOpenAI(base_url=gateway_url, api_key="sk_" + "x" * 40, max_retries=0)
    with pytest.raises(openai.APIStatusError) as refused:
        await stranger.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}]
        )
    assert refused.value.status_code == 503
    assert "sometimes" not in refused.value.message

    # Without any credential: Jupyter's own refusal, and no details either.
    anonymous = await jp_fetch(
        "lumen", "api", "profile", headers={"Authorization": ""}, raise_error=False
    )
    assert anonymous.code == 403
    assert b"sometimes" not in anonymous.body

    await lumen_app.stop_extension()  # never raises
    assert lumen_app.config_error is not None and REASON in lumen_app.config_error


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_sigterm_stops_a_server_whose_configuration_failed(
    broken_file: Path, tmp_path: Path
) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"),
        "JUPYTER_DATA_DIR": str(tmp_path / "data"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "LUMEN_CONFIG": str(broken_file),
    }
    token = "t0ken-for-this-test"
    command = [
        sys.executable,
        "-m",
        "jupyter_server",
        "--no-browser",
        f"--port={port}",
        "--ip=127.0.0.1",
        f"--IdentityProvider.token={token}",
        "--ServerApp.jpserver_extensions=lumen_jupyter=True",
        "--allow-root",
        f"--ServerApp.root_dir={tmp_path}",
    ]
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path
    )
    try:
        url = f"http://127.0.0.1:{port}/lumen/api/profile"
        request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
        deadline = time.monotonic() + 60
        code = body = None
        while time.monotonic() < deadline and code is None:
            try:
                urllib.request.urlopen(request, timeout=5)
            except urllib.error.HTTPError as answer:
                code, body = answer.code, answer.read()
            except OSError:
                time.sleep(0.2)
        assert code == 503, "the server did not answer"
        assert body is not None and b"sometimes" in body
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        proc.wait(timeout=20)
        assert time.monotonic() - started < 20
        assert proc.stderr is not None
        log = proc.stderr.read().decode()
        assert "AttributeError" not in log
        assert "configuration error" in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
