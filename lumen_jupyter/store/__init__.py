"""Persistence: the schema, migrations and the ``Store`` that owns the engine."""

from .engine import Store, normalize_url, sqlite_url

__all__ = ["Store", "normalize_url", "sqlite_url"]
