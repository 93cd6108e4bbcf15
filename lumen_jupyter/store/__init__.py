"""Persistence: the schema, migrations and the ``Store`` that owns the engine."""

from .engine import Store, make_private_dir, normalize_url, sqlite_url

__all__ = ["Store", "make_private_dir", "normalize_url", "sqlite_url"]
