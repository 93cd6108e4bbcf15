"""Fixtures for the third-party clients: their environment and a server running from it.

The server is lumen-jupyter on the embedded default (the demo models need no key),
started from the client environment (:mod:`tests.clients.client_env`), so that its
kernels have jupyter-ai's magics and litellm, and its process can run Jupyternaut.
Without that environment (no ``uv``, an older Python) these tests are skipped,
except under ``CI`` where they fail.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.clients import client_env
from tests.clients.egress import EgressRecorder, egress_recorder
from tests.kernel.server import JupyterServer, free_port, start_server

JUPYTER_AI_EXTENSIONS = (
    "jupyter_ai_acp_client",
    "jupyter_ai_chat_commands",
    "jupyter_ai_jupyternaut",
    "jupyter_ai_litellm",
    "jupyter_ai_persona_manager",
    "jupyter_ai_router",
    "jupyter_ai_tools",
    "jupyter_live_content",
    "jupyter_server_mcp",
    "jupyterlab_chat",
    "jupyterlab_commands_toolkit",
)
"""The server extensions that jupyter-ai 3 installs (and enables) in an environment."""

NO_JUPYTER_AI = dict.fromkeys(JUPYTER_AI_EXTENSIONS, False)

OFFLINE = {"LITELLM_LOCAL_MODEL_COST_MAP": "True"}
"""litellm downloads its model price list at import unless told to use its own copy."""

JUPYTERNAUT = {
    **dict.fromkeys(JUPYTER_AI_EXTENSIONS, True),
    "lumen_jupyter.jupyternaut": True,
}
"""All of jupyter-ai 3's server extensions, as installed, and the recipe's extension."""


@pytest.fixture(scope="session")
def client_python() -> Path:
    """The client environment's Python (built on first use)."""
    try:
        return client_env.client_python()
    except client_env.ClientEnvUnavailable as reason:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(reason))


@pytest.fixture(scope="session")
def egress() -> Iterator[EgressRecorder]:
    """Where the client environment's processes send what is not for loopback."""
    with egress_recorder() as recorder:
        yield recorder


@pytest.fixture(autouse=True)
def nothing_leaves(egress: EgressRecorder) -> Iterator[None]:
    """No test here sends anything anywhere but the server under test."""
    before = len(egress.attempts)
    yield
    assert egress.attempts[before:] == [], "sent elsewhere than the server under test"


@pytest.fixture(scope="session")
def client_env_vars(egress: EgressRecorder) -> dict[str, str]:
    """The environment of every process run from the client environment."""
    return {**egress.env, **OFFLINE}


@pytest.fixture(scope="session")
def server(
    client_python: Path,
    client_env_vars: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[JupyterServer]:
    """A server from the client environment, without jupyter-ai's server extensions."""
    running = start_server(
        tmp_path_factory.mktemp("clients"),
        python=client_python,
        extensions=NO_JUPYTER_AI,
        extra_env=client_env_vars,
    )
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def jupyternaut_server(
    client_python: Path,
    client_env_vars: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[JupyterServer]:
    """A server from the client environment running Jupyternaut with the recipe of
    docs/jupyter-ai.md: only a gateway model named, no key anywhere."""
    running = start_server(
        tmp_path_factory.mktemp("jupyternaut"),
        python=client_python,
        extensions=JUPYTERNAUT,
        jupyter_config={
            "JupyternautExtension": {"initial_language_model": "openai/demo-pro"},
            "MCPExtensionApp": {"mcp_port": free_port()},  # not the fixed default port
        },
        extra_env=client_env_vars,
    )
    try:
        yield running
    finally:
        running.stop()


def run_script(client_python: Path, source: str, env: dict[str, str], timeout: float = 120) -> Any:
    """Run ``source`` in the client environment; the JSON it printed on its last line."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LUMEN_", "OPENAI_"))}
    done = subprocess.run(
        [str(client_python), "-c", source],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr
    return json.loads(lines[-1])
