"""Personal API keys: how they are made, hashed and named for display.

A key is ``sk_`` plus 32 random bytes in URL-safe base64 (43 characters).  The
server generates it, shows it once, and stores only HMAC-SHA256 under a secret
kept outside the database.  :func:`key_hint` is the *only* function that turns a
key into text for people, logs or errors.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

KEY_PREFIX = "sk_"
KEY_BYTES = 32
KEY_LENGTH = len(KEY_PREFIX) + 43
SECRET_BYTES = 32


def generate_key() -> str:
    """A new random personal key."""
    raw = base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).rstrip(b"=")
    return KEY_PREFIX + raw.decode("ascii")


def looks_like_key(text: str) -> bool:
    """A cheap shape check before any lookup (prefix, length, alphabet)."""
    if len(text) != KEY_LENGTH or not text.startswith(KEY_PREFIX):
        return False
    body = text[len(KEY_PREFIX) :]
    return all(c.isalnum() or c in "-_" for c in body)


def hash_key(key: str, secret: bytes) -> str:
    """HMAC-SHA256 of ``key`` under ``secret``, hex: what the store keeps."""
    return hmac.new(secret, key.encode("utf-8"), hashlib.sha256).hexdigest()


def same_digest(a: str, b: str) -> bool:
    """Constant-time comparison of two digests or tokens."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def key_hint(key: str) -> str:
    """First 4 and last 4 characters, e.g. ``sk_A…x9Qz``; never more of a key."""
    if len(key) <= 12:
        return "…"
    return f"{key[:4]}…{key[-4:]}"


def load_or_create_secret(path: Path) -> bytes:
    """Read the HMAC secret from ``path``, creating it (mode 0600) on first use.

    Refuses a file that others can read: the secret protects every key.
    """
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise PermissionError(
                f"{path} is readable by others (mode {mode:o}); run: chmod 600 {path}"
            )
        data = path.read_bytes().strip()
        if len(data) < 32:
            raise ValueError(f"{path} does not hold a usable secret (too short)")
        return data
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(SECRET_BYTES).encode("ascii")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secret)
    finally:
        os.close(fd)
    return secret
