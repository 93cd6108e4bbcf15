"""The standalone service's access log: a line per request, written in batches.

Written through :mod:`logging`, each line cost 16.5 µs of CPU (a ``LogRecord``
built, the redacting filter run on the logger and on its handler, a handler locked,
the stream written and flushed, for every request).  Here a request only formats
its line and appends it to a buffer (2.5 µs); the buffer is written at most a
second later, at once when it holds 64 KiB, when a request failed with a 5xx, and
when the service stops - the way web servers buffer their access logs.  A
``kill -9`` may lose the last second of lines; nothing else is lost.

The line is what the service's log format made of it before, so nothing reading
the log sees a difference: ``[INFO lumen_jupyter.access] 200 POST /v1/… 1.23ms``
(WARNING for 4xx, ERROR for 5xx), written only when the ``lumen_jupyter.access``
logger is enabled for that level (``--log-level``).  The path's query values are
hidden and anything shaped like a credential is masked, as in every log.

Each write is whole lines of at most ``PIPE_BUF`` bytes, so the lines of several
workers sharing one standard error or one file never interleave.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import TextIO

from tornado import web

from ..core.redact import redact_uri

FLUSH_SECONDS = 1.0
"""Longest time a line waits in the buffer."""
MAX_BUFFER = 64 * 1024
"""The buffer is written at once when it holds this many characters."""
ATOMIC_WRITE = 4096
"""Bytes a write to a pipe may hold and still not interleave with another process's
(POSIX's ``PIPE_BUF`` minimum on Linux); files opened to append are atomic per write."""

LOGGER = "lumen_jupyter.access"


class AccessLog:
    """The ``log_function`` of the service's tornado application."""

    def __init__(self, destination: str = "-") -> None:
        """``destination``: ``-`` for standard error, a file path to append to."""
        self.destination = destination
        self._logger = logging.getLogger(LOGGER)
        self._lines: list[str] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None
        self._file: TextIO | None = None

    def __call__(self, handler: web.RequestHandler) -> None:
        status = handler.get_status()
        if status < 400:
            level, name = logging.INFO, "INFO"
        elif status < 500:
            level, name = logging.WARNING, "WARNING"
        else:
            level, name = logging.ERROR, "ERROR"
        if not self._logger.isEnabledFor(level):
            return
        request = handler.request
        line = (
            f"[{name} {LOGGER}] {status} {request.method} {redact_uri(request.uri or '')} "
            f"{1000.0 * request.request_time():.2f}ms\n"
        )
        self._lines.append(line)
        self._size += len(line)
        if status >= 500 or self._size >= MAX_BUFFER:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        """Write the buffered lines now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        lines, self._lines, self._size = self._lines, [], 0
        if not lines:
            return
        stream = self._stream()
        chunk: list[str] = []
        size = 0
        for line in lines:
            length = len(line.encode())
            if chunk and size + length > ATOMIC_WRITE:
                self._write(stream, "".join(chunk))
                chunk, size = [], 0
            chunk.append(line)
            size += length
        self._write(stream, "".join(chunk))

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None

    def _stream(self) -> TextIO:
        if self.destination == "-":
            return sys.stderr  # looked up at each write: a test or a host may replace it
        if self._file is None:
            self._file = open(self.destination, "a", encoding="utf-8")  # noqa: SIM115
        return self._file

    @staticmethod
    def _write(stream: TextIO, text: str) -> None:
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError):  # a closed or full stream: the lines are lost, not the call
            pass


def open_access_log(destination: str) -> AccessLog | None:
    """The access log for ``c.LumenServe.access_log`` (``""``: none); a file must be
    writable now, so that a wrong path stops the service at start, not silently later."""
    if not destination:
        return None
    if destination != "-":
        path = os.path.abspath(os.path.expanduser(destination))
        with open(path, "a", encoding="utf-8"):
            pass
        destination = path
    return AccessLog(destination)
