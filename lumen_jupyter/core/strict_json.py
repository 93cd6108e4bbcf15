"""Parse a request body as JSON that the rest of the server can handle safely.

``json.loads`` alone accepts documents that later turn into a 500: an array
nested 100,000 deep (a ``RecursionError`` when parsed or encoded again), or a
string holding half of a UTF-16 surrogate pair (``"\\ud800"``), which cannot be
encoded as UTF-8 for the database, a log line or an upstream.  :func:`loads`
refuses both with :class:`~lumen_jupyter.core.errors.BadRequest`.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import BadRequest

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects accepted (tool schemas need far less)."""


def loads(raw: bytes, *, max_depth: int = MAX_DEPTH, code: str = "invalid_json") -> Any:
    """The parsed document, or ``BadRequest`` saying what is wrong with it."""
    try:
        data = json.loads(raw)
    except RecursionError:
        raise _too_deep(max_depth, code) from None
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("The request body is not valid JSON", code=code) from None
    # Cheap guards first: a document with few brackets cannot be deep, and one
    # without a \ud8xx-\udfxx escape cannot hold a lone surrogate.
    deep = raw.count(b"[") + raw.count(b"{") > max_depth
    surrogates = b"\\ud" in raw or b"\\uD" in raw
    if deep or surrogates:
        _check(data, max_depth, code, strings=surrogates)
    return data


def _too_deep(max_depth: int, code: str) -> BadRequest:
    return BadRequest(
        f"The request body is nested too deeply (more than {max_depth} levels)", code=code
    )


def _check(data: Any, max_depth: int, code: str, *, strings: bool) -> None:
    """Walk the document without recursion: depth, and (if asked) every string."""
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            if depth >= max_depth:
                raise _too_deep(max_depth, code)
            for key, item in value.items():
                if strings:
                    check_text(key, code)
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            if depth >= max_depth:
                raise _too_deep(max_depth, code)
            stack.extend((item, depth + 1) for item in value)
        elif strings and isinstance(value, str):
            check_text(value, code)


def check_text(value: str, code: str = "invalid_json") -> None:
    """Refuse a string that cannot be written as UTF-8 (a lone surrogate)."""
    if value.isascii():
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(
            "The request body holds an invalid Unicode string (a lone surrogate)", code=code
        ) from None
