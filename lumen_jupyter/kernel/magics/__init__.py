"""``%lumen`` and ``%%lumen``: the commands a notebook types, and running them.

:mod:`.lumen_magics` holds the magics and ``%load_ext``'s entry points,
:mod:`.parsing` their arguments, :mod:`.chat_cell` one streamed chat cell and
:mod:`.cell_labels` the names of cells in a usage-by-cell table.  They ask the
gateway through :mod:`lumen_jupyter.kernel.client` and show the answers with
:mod:`lumen_jupyter.kernel.display`.

Importing this package is cheap (IPython is imported on first use), and
``%load_ext lumen_jupyter.kernel.magics`` works as ``%load_ext lumen_jupyter`` does.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .lumen_magics import LumenMagics, load_ipython_extension, unload_ipython_extension

__all__ = ["LumenMagics", "load_ipython_extension", "unload_ipython_extension"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(".lumen_magics", __name__), name)
