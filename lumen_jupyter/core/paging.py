"""Pages of the profile's long lists (keys, models) and the order they come in.

The profile's first screen shows a dozen rows of each table, not all of an
account's 1,000 keys: ``GET keys?limit=40`` answers with those and with the
``total``, and a client fetches the rest after it has painted.  Without
``limit`` and ``offset`` the whole list is sent, as before.

Rows come in the order the profile's tables show them by default: by name,
ignoring case and accents, with numbers compared by value ("key 9" before
"key 10"), as the browser's ``Intl.Collator('en', {numeric: true, sensitivity:
'base'})`` orders them (the tests compare both on a list of names), so that the
first page is the first screen and the rows do not move when the rest arrives.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar

from .errors import BadRequest

T = TypeVar("T")

_DIGITS = re.compile(r"[0-9]{1,9}")


@dataclass(frozen=True)
class Page:
    """Which rows of a list to send: ``limit`` rows (``None``: all) after ``offset``."""

    limit: int | None = None
    offset: int = 0

    @property
    def everything(self) -> bool:
        return self.limit is None and self.offset == 0

    def of(self, rows: Sequence[T]) -> list[T]:
        end = None if self.limit is None else self.offset + self.limit
        return list(rows[self.offset : end])


EVERYTHING = Page()


def _count(raw: str | None, name: str) -> int | None:
    if raw is None:
        return None
    # ASCII digits only: int() also reads "٣" and " 3 ", and "1e9" is no count.
    if not _DIGITS.fullmatch(raw):
        raise BadRequest(f"{name} must be a whole number from 0 to 999999999", param=name)
    return int(raw)


def parse_page(limit: str | None, offset: str | None) -> Page:
    """The page asked for by the ``limit`` and ``offset`` query parameters."""
    return Page(limit=_count(limit, "limit"), offset=_count(offset, "offset") or 0)


# The order of ASCII's spaces, punctuation and symbols in the browser's collation
# (CLDR root): all of them before the digits, the digits before the letters.
_PUNCTUATION = " _-,;:!?.'\"()[]{}@*/\\&#%`^+<=>|~$"
_RANK = {c: i for i, c in enumerate(_PUNCTUATION)}
_EXPANSIONS = {"æ": "ae", "œ": "oe", "ø": "o", "đ": "d", "ł": "l", "ı": "i"}
_SYMBOL, _OTHER_SYMBOL, _NUMBER, _LETTER = 1, 2, 3, 4


Token = tuple[int, int, str]


@lru_cache(maxsize=4096)
def name_order(name: str) -> tuple[Token, ...]:
    """A sort key of ``name`` that orders names as the profile's tables do."""
    text = unicodedata.normalize("NFKD", name).casefold()
    kept = "".join(
        _EXPANSIONS.get(c, c)
        for c in text
        if unicodedata.category(c) not in ("Mn", "Me", "Cc", "Cf")  # accents, ignorables
    )
    key: list[Token] = []
    digits: list[str] = []
    for c in kept:
        value = unicodedata.decimal(c, None)
        if value is not None:
            digits.append(str(value))
            continue
        if digits:
            key.append(_number(digits))
            digits = []
        if c in _RANK:
            key.append((_SYMBOL, _RANK[c], ""))
        elif c.isspace():
            key.append((_SYMBOL, 0, ""))
        elif c.isalpha():
            key.append((_LETTER, ord(c), ""))
        else:
            key.append((_OTHER_SYMBOL, ord(c), ""))
    if digits:
        key.append(_number(digits))
    return tuple(key)


def _number(digits: list[str]) -> Token:
    """A run of digits by its value ("007" is 7), compared without int() (any length)."""
    value = "".join(digits).lstrip("0")
    return (_NUMBER, len(value), value)


def in_name_order(
    rows: Sequence[T], name: Callable[[T], str], tie: Callable[[T], int | str]
) -> list[T]:
    """``rows`` sorted by :func:`name_order` of their name, equal names by ``tie``."""
    return sorted(rows, key=lambda row: (name_order(name(row)), tie(row)))
