"""``%lumen`` on a server whose configuration failed to load: the reason, in one line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Shell, last_text, texts
from .server import JupyterServer, start_server

BROKEN = """
version: 2
models:
  - name: m
    disabled: true
    active: true
"""


@pytest.fixture(scope="module")
def broken_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    running = start_server(tmp_path_factory.mktemp("broken"), lumen_config=BROKEN, ready_status=503)
    try:
        yield running
    finally:
        running.stop()


def test_lumen_says_the_configuration_error_in_one_line(
    broken_server: JupyterServer, clean_env: pytest.MonkeyPatch, shell: Shell, tmp_path: Path
) -> None:
    for name, value in broken_server.kernel_env().items():
        clean_env.setenv(name, value)
    for line in ("%lumen", "%lumen balance", "%lumen models"):
        shown = shell.run(line)
        assert len(texts(shown)) == 1, texts(shown)
        text = last_text(shown)
        assert "\n" not in text.strip()
        assert text.lstrip("✗ ").startswith("Lumen configuration error: models[0] 'm': ")
        assert "disabled and active contradict each other" in text
        assert "restart the Jupyter server" in text
