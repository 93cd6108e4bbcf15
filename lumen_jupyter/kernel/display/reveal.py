"""Show a secret once, where no saved notebook can keep it.

Where the key may be shown depends on who runs the code (:func:`front_end`):

* a notebook with a person at it (a kernel whose execute request allows stdin,
  as JupyterLab's do): the key goes through a widget's custom message, never an
  output or a trait (:mod:`lumen_jupyter.widgets.new_key`);
* a headless run (nbclient, nbconvert, papermill: a kernel whose requests do not
  allow stdin, with no one to copy the key before the notebook is written): the
  key is not shown at all, only advice to write it to a file with ``--save``;
* a terminal or another shell without a kernel: nothing is saved, so the key is
  shown in a one-time display, described below.

A notebook file keeps every output's ``data``; there is no field that a front end
renders but never saves.  So a one-time display has a ``display_id`` and is
replaced (``update_display_data``) by a placeholder that names only the key's
hint:

* when the next cell starts to run (a ``pre_run_cell`` hook) - the update is then
  sent as part of that execution, so every front end applies it, headless
  executors such as nbclient included;
* after ``seconds`` (a timer), shorter than JupyterLab's autosave interval, so an
  open notebook drops the key even if nothing else runs.

The raw key lives only in the displayed output and in a closure until then; it is
never stored on an object that ``repr`` or the history could reach.
"""

# IPython's display functions carry no type hints.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .render import View

NOTEBOOK = "notebook"
HEADLESS = "headless"
CONSOLE = "console"


def front_end(shell: Any) -> str:
    """``notebook``, ``headless`` or ``console``: where a secret may be shown (see above)."""
    kernel = getattr(shell, "kernel", None)
    if kernel is None:
        return CONSOLE
    return NOTEBOOK if getattr(kernel, "_allow_stdin", False) else HEADLESS


Publisher = Callable[[View, str, bool], None]
"""``publish(view, display_id, update)``: show or update a display."""


def ipython_publisher(view: View, display_id: str, update: bool) -> None:
    from IPython.display import display, update_display

    if update:
        update_display(view, display_id=display_id)
    else:
        display(view, display_id=display_id)


class OneTimeDisplays:
    """Displays that must be replaced soon after they are shown."""

    def __init__(self, publish: Publisher = ipython_publisher) -> None:
        self._publish = publish
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[View, threading.Timer | None]] = {}

    def show(self, secret_view: View, placeholder: View, display_id: str, seconds: float) -> None:
        """Show ``secret_view`` now; ``placeholder`` replaces it later.

        With ``seconds <= 0`` there is no timer: only the next cell replaces it.
        """
        self._publish(secret_view, display_id, False)
        timer: threading.Timer | None = None
        if seconds > 0:
            timer = threading.Timer(seconds, self._expire, args=(display_id,))
            timer.daemon = True
        with self._lock:
            self._pending[display_id] = (placeholder, timer)
        if timer is not None:
            timer.start()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def _expire(self, display_id: str) -> None:
        """The timer: replace the display, but keep it listed for the next cell's hook."""
        with self._lock:
            entry = self._pending.get(display_id)
            if entry is None:
                return
            self._pending[display_id] = (entry[0], None)
        self._publish(entry[0], display_id, True)

    def hide_all(self, *_: Any) -> None:
        """Replace every pending display (the ``pre_run_cell`` hook)."""
        with self._lock:
            entries = list(self._pending.items())
            self._pending.clear()
        for display_id, (placeholder, timer) in entries:
            if timer is not None:
                timer.cancel()
            self._publish(placeholder, display_id, True)
