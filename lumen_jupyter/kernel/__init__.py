"""The kernel side of lumen-jupyter: a client, the ``%lumen`` magics, openai clients.

Importing this package is cheap; each name is imported on first use::

    from lumen_jupyter.kernel import LumenClient, AsyncLumenClient, LumenAPIError
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LumenClient": "client",
    "AsyncLumenClient": "async_client",
    "LumenAPIError": "errors",
    "Connection": "connection",
    "RawKey": "connection",
    "discover": "connection",
    "LumenMagics": "magics",
    "load_ipython_extension": "magics",
    "unload_ipython_extension": "magics",
    "openai_client": "openai_clients",
    "async_openai_client": "openai_clients",
    "SESSION": "tally",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
