"""Which notebook and which cell a model call came from, as gateway headers.

Jupyter sets ``JPY_SESSION_NAME`` (the notebook's path) in kernels it starts;
JupyterLab sends the cell's id in each execute request's ``metadata.cellId``,
which IPython keeps as ``get_ipython().parent_header``.  The gateway records both
with every call (``X-Lumen-Notebook``, URL-encoded, and ``X-Lumen-Cell``), so the
usage API can split spending by notebook.  ``X-Lumen-Source: chat`` marks chat
traffic, which the profile's Web Chat Usage row counts.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

# The gateway's header names (lumen_jupyter.server.model_api); a test checks they agree.
NOTEBOOK_HEADER = "X-Lumen-Notebook"
CELL_HEADER = "X-Lumen-Cell"
CONVERSATION_HEADER = "X-Lumen-Conversation"
SOURCE_HEADER = "X-Lumen-Source"

SESSION_ENV = "JPY_SESSION_NAME"
ROOT_ENV = "LUMEN_JUPYTER_ROOT"


def notebook_path(env: Mapping[str, str] | None = None) -> str | None:
    """The notebook this kernel runs, relative to the server root when that is known."""
    env = os.environ if env is None else env
    path = env.get(SESSION_ENV, "").strip()
    if not path:
        return None
    root = env.get(ROOT_ENV, "").strip()
    if root:
        try:
            relative = os.path.relpath(path, root)
        except ValueError:
            return path
        if not relative.startswith(".."):
            return relative.replace(os.sep, "/")
    return path


def current_cell_id() -> str | None:
    """The id of the cell being executed, when the front end sent one."""
    ipython_module = sys.modules.get("IPython")
    if ipython_module is None:  # not in IPython: never import it just to ask
        return None
    shell = ipython_module.get_ipython()
    parent: Any = getattr(shell, "parent_header", None)
    if not isinstance(parent, Mapping):
        return None
    metadata = parent.get("metadata")
    if not isinstance(metadata, Mapping):
        return None
    cell = metadata.get("cellId") or metadata.get("cell_id")
    return str(cell)[:64] if cell else None


def attribution_headers(
    *, source: str | None = None, conversation: str | None = None
) -> dict[str, str]:
    """Headers naming this call's notebook, cell, conversation and source."""
    headers: dict[str, str] = {}
    path = notebook_path()
    if path:
        headers[NOTEBOOK_HEADER] = quote(path[:1024], safe="/")
    cell = current_cell_id()
    if cell:
        headers[CELL_HEADER] = quote(cell, safe="")
    if conversation:
        headers[CONVERSATION_HEADER] = quote(conversation[:64], safe="")
    if source:
        headers[SOURCE_HEADER] = source
    return headers


def _stamp(request: httpx.Request) -> None:
    for name, value in attribution_headers().items():
        if name not in request.headers:
            request.headers[name] = value


def stamp_request(request: httpx.Request) -> None:
    """httpx request hook: add the notebook and the *current* cell to a request."""
    _stamp(request)


async def astamp_request(request: httpx.Request) -> None:
    """The same hook for ``httpx.AsyncClient``."""
    _stamp(request)
