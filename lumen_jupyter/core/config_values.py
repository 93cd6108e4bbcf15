"""Typed readers for single YAML values, shared by the configuration parsers.

Each reader checks one value and names the entry and field in its
:class:`ConfigError`; none of them ever prints a value that could be a secret
(callers pass only prices, flags, names and limits through them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import ConfigError
from .money import coins_to_micro


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a mapping (got {type(value).__name__})")
    return value


def _section(value: Any, where: str) -> Mapping[str, Any]:
    """A mapping section that may be empty: ``groups:`` with every entry commented out."""
    return {} if value is None else _mapping(value, where)


def _coins(value: Any, where: str, *, allow_negative: bool = False) -> int:
    try:
        micro = coins_to_micro(value)
    except ValueError:
        raise ConfigError(f"{where} must be a number (got {value!r})") from None
    if micro < 0 and not allow_negative:
        raise ConfigError(f"{where} must be a number >= 0 (got {value!r})")
    return micro


def _bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ConfigError(f"{where} must be true or false (got {value!r})")


def _optional_bool(value: Any, where: str) -> bool | None:
    return None if value is None else _bool(value, where)


def _text(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"{where} must be text (got {type(value).__name__})")


def _count(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{where} must be a positive whole number (got {value!r})")
    return value


def _strings(value: Any, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of strings")
    return tuple(value)
