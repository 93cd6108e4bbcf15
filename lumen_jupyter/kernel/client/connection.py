"""Where the gateway is and which credential to send, found with no configuration.

In a kernel started by a Jupyter server running lumen-jupyter, the server put two
variables in the kernel's environment: ``LUMEN_JUPYTER_URL`` (the server's root
URL, base_url included) and ``LUMEN_KERNEL_TOKEN`` (an ``lkt_`` credential of
this kernel, valid while it runs, on both ``lumen/api`` and ``lumen/v1``).
The credential is taken out of ``os.environ`` when this module is imported
(``%load_ext lumen_jupyter`` or any use of the client) and kept in memory, so
``!env`` and the subprocesses of the kernel do not see it.  Elsewhere -
a script, a terminal, another machine - ``LUMEN_BASE_URL`` names either a
lumen-jupyter server root or any OpenAI-compatible base URL ending in ``/v1``
(plain Lumen, vLLM ...), and ``LUMEN_API_KEY`` holds a personal ``sk_`` key.

The credential lives in one private attribute; ``repr`` and every message show
only its hint (first 4 + last 4 characters).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ...core.keys import key_hint
from .errors import NOT_CONFIGURED, LumenAPIError

KERNEL_URL_ENV = "LUMEN_JUPYTER_URL"
KERNEL_TOKEN_ENV = "LUMEN_KERNEL_TOKEN"
BASE_URL_ENV = "LUMEN_BASE_URL"
API_KEY_ENV = "LUMEN_API_KEY"

KERNEL = "kernel"
KEY = "key"

_taken: dict[str, str] = {}
"""The kernel credential once taken out of ``os.environ`` (at most one entry)."""


def take_kernel_credential() -> str:
    """This kernel's credential, removed from ``os.environ`` on first read.

    A credential found in the environment again (a test, or a caller that sets
    it) replaces the one kept.
    """
    found = os.environ.pop(KERNEL_TOKEN_ENV, "").strip()
    if found:
        _taken[KERNEL_TOKEN_ENV] = found
    return _taken.get(KERNEL_TOKEN_ENV, "")


def forget_kernel_credential() -> None:
    """Drop the kept credential (for tests that change the environment)."""
    _taken.clear()


class RawKey(str):
    """A new key as the API returned it: a normal ``str``, but its ``repr`` is the hint.

    Showing the ``create_key()`` answer in a notebook (``Out[…]``, a list, a dict)
    shows ``sk_A…x9Qz``; only an explicit ``print(created["key"])`` or ``str(...)``
    shows the key itself.
    """

    def __repr__(self) -> str:
        return f"<key {key_hint(self)}: print() it to see it; it is shown once>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


class Connection:
    """The gateway's two URL roots and the credential for them.

    ``v1_url`` is the OpenAI-compatible base (ends in ``/``); ``api_url`` is the
    profile REST API root (ends in ``/``) or ``None`` where no such API can exist
    (a plain OpenAI-compatible endpoint).  ``kind`` is ``"kernel"`` or ``"key"``.
    """

    __slots__ = ("__credential", "api_url", "kind", "origin", "v1_url")

    def __init__(
        self, v1_url: str, api_url: str | None, credential: str, *, kind: str, origin: str
    ) -> None:
        self.v1_url = _slash(v1_url)
        self.api_url = _slash(api_url) if api_url else None
        self.kind = kind
        self.origin = origin
        self.__credential = credential

    @property
    def credential_hint(self) -> str:
        """First 4 and last 4 characters of the credential; never more."""
        return key_hint(self.__credential)

    def auth_headers(self) -> dict[str, str]:
        """The ``Authorization`` header; for HTTP clients only, never for display."""
        return {"Authorization": f"Bearer {self.__credential}"}

    def secret(self) -> str:
        """The credential itself, for clients that take it as a parameter (openai)."""
        return self.__credential

    @property
    def root_url(self) -> str | None:
        """The lumen-jupyter server root (``…/``), when the URLs are a lumen-jupyter pair."""
        if self.api_url and self.api_url.endswith("lumen/api/"):
            return self.api_url[: -len("lumen/api/")]
        return None

    def describe(self) -> str:
        what = "kernel credential" if self.kind == KERNEL else "API key"
        return f"{self.v1_url} with {what} {self.credential_hint} ({self.origin})"

    def __repr__(self) -> str:
        return (
            f"Connection(v1_url={self.v1_url!r}, api_url={self.api_url!r}, kind={self.kind!r}, "
            f"credential={self.credential_hint!r})"
        )

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Connection holds a credential and is not picklable")


def _slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def urls_for(base_url: str) -> tuple[str, str | None]:
    """(v1 URL, profile API URL or None) for a server root or an OpenAI base URL."""
    url = base_url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise LumenAPIError(
            f"LUMEN_BASE_URL must start with http:// or https:// (got {base_url!r})",
            code=NOT_CONFIGURED,
        )
    if url.endswith("/lumen/v1"):
        return url + "/", url[: -len("v1")] + "api/"
    if url.endswith("/v1"):
        return url + "/", None
    return url + "/lumen/v1/", url + "/lumen/api/"


def discover(
    base_url: str | None = None,
    api_key: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
) -> Connection:
    """Find the gateway: explicit arguments, else the kernel's, else LUMEN_BASE_URL."""
    if env is None:
        env = os.environ
        kernel_token = take_kernel_credential()
    else:
        kernel_token = env.get(KERNEL_TOKEN_ENV, "").strip()
    kernel_url = env.get(KERNEL_URL_ENV, "").strip()
    if base_url is None and api_key is None and kernel_url and kernel_token:
        v1, api = urls_for(kernel_url)
        return Connection(v1, api, kernel_token, kind=KERNEL, origin="kernel started by Jupyter")
    if base_url is None:
        base_url = env.get(BASE_URL_ENV, "").strip() or kernel_url or None
    if base_url is None:
        raise LumenAPIError(
            "No Lumen gateway found: this kernel was not started by a Jupyter server running "
            f"lumen-jupyter. Set {BASE_URL_ENV} (a lumen-jupyter server URL, or an "
            f"OpenAI-compatible URL ending in /v1) and {API_KEY_ENV}.",
            code=NOT_CONFIGURED,
        )
    v1, api = urls_for(base_url)
    if api_key is None:
        api_key = env.get(API_KEY_ENV, "").strip() or None
        if api_key is None and kernel_token and kernel_url and urls_for(kernel_url)[0] == v1:
            return Connection(
                v1, api, kernel_token, kind=KERNEL, origin="kernel started by Jupyter"
            )
    if not api_key:
        raise LumenAPIError(
            f"{API_KEY_ENV} is not set: create a key with `%lumen keys new NAME` (in a notebook "
            f"on the server) or on the Profile page, and put it in {API_KEY_ENV}.",
            code=NOT_CONFIGURED,
        )
    kind = KERNEL if api_key.startswith("lkt_") else KEY
    origin = BASE_URL_ENV if base_url == env.get(BASE_URL_ENV, "").strip() else "arguments"
    return Connection(v1, api, api_key, kind=kind, origin=origin)


take_kernel_credential()  # at import: before any subprocess of the kernel can inherit it
