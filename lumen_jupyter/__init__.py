"""lumen-jupyter: a Jupyter-native AI gateway with coin budgets.

The server extension holds the keys, proxies OpenAI-compatible calls and does
the accounting; kernels and browsers see only their own credential.
"""

from __future__ import annotations

from typing import Any

from ._version import __version__

__all__ = ["__version__"]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .server.app import LumenJupyter

    return [{"module": "lumen_jupyter", "app": LumenJupyter}]
