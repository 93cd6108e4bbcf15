"""One refresh loop per kernel for every live profile widget, and who replaces whom.

A thread per widget grew without bound: each re-run of a cell showing ``Profile()``
left the previous widget and its thread re-fetching the profile every minute. Here
one daemon thread keeps a due time per widget (its interval, or soon after a
``wake``) and refreshes the widgets that are due, one after another. It holds the
widgets weakly, stops when none is left and starts again with the next one.

:class:`Succession` closes the widgets a cell made when that cell runs again: a
widget remembers the cell id and the execute request it was made in (JupyterLab
sends the cell's id with each request); a widget made by a *later* request of the
same cell closes the earlier ones, while widgets made by one run stay together.
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

THREAD_NAME = "lumen-widget-refresh"


class Refreshing(Protocol):
    def refresh(self) -> bool: ...


class Closable(Protocol):
    def close(self) -> None: ...


@dataclass
class _Entry:
    ref: weakref.ref[Any]
    interval: float
    due: float


def _next_due(now: float, interval: float) -> float:
    return now + interval if interval > 0 else math.inf


class RefreshLoop:
    """Refreshes registered widgets every ``interval`` seconds and ``delay`` after a wake."""

    def __init__(self, delay: float = 0.5) -> None:
        self.delay = delay
        self._entries: dict[int, _Entry] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, widget: Refreshing, interval: float) -> None:
        with self._cond:
            key = id(widget)
            self._entries[key] = _Entry(
                weakref.ref(widget, self._dropper(key)),
                interval,
                _next_due(time.monotonic(), interval),
            )
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
                self._thread.start()
            self._cond.notify()

    def _dropper(self, key: int) -> Callable[[weakref.ref[Any]], None]:
        def drop(_ref: weakref.ref[Any]) -> None:
            self._forget(key)

        return drop

    def remove(self, widget: object) -> None:
        self._forget(id(widget))

    def _forget(self, key: int) -> None:
        with self._cond:
            self._entries.pop(key, None)
            self._cond.notify()

    def interval(self, widget: object) -> float:
        with self._cond:
            entry = self._entries.get(id(widget))
            return entry.interval if entry else 0.0

    def set_interval(self, widget: object, interval: float) -> None:
        with self._cond:
            entry = self._entries.get(id(widget))
            if entry is not None:
                entry.interval = interval
                entry.due = _next_due(time.monotonic(), interval)
                self._cond.notify()

    def wake(self, widget: object, delay: float | None = None) -> None:
        """Refresh ``widget`` in ``delay`` seconds (default: the loop's), off the caller's
        thread; a burst of wakes gives one refresh."""
        with self._cond:
            entry = self._entries.get(id(widget))
            if entry is not None:
                wait = self.delay if delay is None else delay
                entry.due = min(entry.due, time.monotonic() + wait)
                self._cond.notify()

    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._entries:
                    self._thread = None
                    return
                now = time.monotonic()
                due = [e for e in self._entries.values() if e.due <= now]
                if not due:
                    soonest = min(e.due for e in self._entries.values())
                    self._cond.wait(None if soonest == math.inf else soonest - now)
                    continue
                for entry in due:
                    entry.due = _next_due(now, entry.interval)
            for entry in due:
                widget = entry.ref()
                if widget is not None:
                    with contextlib.suppress(Exception):
                        widget.refresh()
                del widget


class Succession:
    """Closes the widgets an earlier run of a cell made, when that cell makes new ones."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_cell: dict[str, tuple[str, list[weakref.ref[Any]]]] = {}

    def arrive(self, widget: Closable, cell: str | None, run: str | None) -> None:
        if not cell or not run:
            return
        with self._lock:
            previous = self._by_cell.get(cell)
            if previous is not None and previous[0] == run:
                previous[1].append(weakref.ref(widget))
                return
            self._by_cell[cell] = (run, [weakref.ref(widget)])
        for ref in previous[1] if previous else []:
            old = ref()
            if old is not None and old is not widget:
                with contextlib.suppress(Exception):
                    old.close()


LOOP = RefreshLoop()
SUCCESSION = Succession()


def current_run() -> tuple[str | None, str | None]:
    """The id of the cell being executed and of its execute request, when known."""
    ipython_module = sys.modules.get("IPython")
    if ipython_module is None:
        return None, None
    shell = ipython_module.get_ipython()
    parent: Any = getattr(shell, "parent_header", None)
    if not isinstance(parent, Mapping):
        return None, None
    metadata = parent.get("metadata")
    header = parent.get("header")
    cell = metadata.get("cellId") if isinstance(metadata, Mapping) else None
    run = header.get("msg_id") if isinstance(header, Mapping) else None
    return (str(cell) if cell else None), (str(run) if run else None)
