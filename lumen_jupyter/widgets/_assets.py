"""The built front end of the widgets: ``static/profile.js`` and ``profile.css``.

Built from ``labextension/`` by ``pip install .`` (hatch-jupyter-builder) or
``jlpm build`` there. Read lazily, so importing the package works before a build.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

STATIC = Path(__file__).parent / "static"


class AssetsMissing(RuntimeError):
    pass


@cache
def _read(name: str) -> str:
    path = STATIC / name
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AssetsMissing(
            f"{path} is missing: the widget front end is not built. Run "
            "`pip install .` (or `jlpm install && jlpm build` in labextension/)."
        ) from None


class Asset:
    """A class attribute that reads a built file on first use (anywidget's ``_esm``/``_css``)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, obj: object, owner: type | None = None) -> str:
        if obj is None:
            return self  # type: ignore[return-value]
        return _read(self.name)
