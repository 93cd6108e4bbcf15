"""Names for the cells in a usage-by-cell document, read from the saved notebook.

The gateway knows cells only by the ids JupyterLab gives them; a person knows them
by position and content.  The notebook file maps one to the other: ``[3] df.plot()``.
A cell that is not in the saved file (deleted, or not saved yet) keeps its short id.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..client.attribution import ROOT_ENV, SESSION_ENV, notebook_path

_SNIPPET = 40


def notebook_file(notebook: str, env: Mapping[str, str] | None = None) -> Path:
    """Where the notebook named by the usage API (a server path) is on this machine."""
    env = os.environ if env is None else env
    if notebook == notebook_path(env) and env.get(SESSION_ENV):
        return Path(env[SESSION_ENV])
    root = env.get(ROOT_ENV, "")
    return Path(root) / notebook if root else Path(notebook)


def cell_names(path: Path) -> dict[str, str]:
    """``{cell id: "[position] first line"}`` for a saved notebook; ``{}`` if unreadable."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    cells = document.get("cells") if isinstance(document, dict) else None
    names: dict[str, str] = {}
    for position, cell in enumerate(cells if isinstance(cells, list) else [], start=1):
        if not isinstance(cell, dict) or not isinstance(cell.get("id"), str):
            continue
        source = cell.get("source", "")
        text = "".join(source) if isinstance(source, list) else str(source)
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
        if len(first) > _SNIPPET:
            first = first[: _SNIPPET - 1] + "…"
        names[cell["id"]] = f"[{position}] {first}".rstrip()
    return names


def label_cells(history: dict[str, Any], names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The same document with each cell id replaced by the cell's name."""
    if names is None:
        names = cell_names(notebook_file(str(history.get("notebook") or "")))

    def name(cell_id: str) -> str:
        if cell_id in names:
            return names[cell_id]
        if cell_id.startswith("("):
            return cell_id
        return f"cell {cell_id[:8]} (not in the saved notebook)"

    labelled = dict(history)
    labelled["series"] = [name(s) for s in history.get("series") or []]
    labelled["totals"] = {name(k): v for k, v in (history.get("totals") or {}).items()}
    labelled["buckets"] = [
        {**b, "values": {name(k): v for k, v in (b.get("values") or {}).items()}}
        for b in history.get("buckets") or []
    ]
    return labelled
