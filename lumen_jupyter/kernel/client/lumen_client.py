"""``LumenClient`` and ``AsyncLumenClient``: the profile REST API and the model gateway.

Every REST method returns the server's JSON as the REST API documents it; a
list wrapped in an object comes back as the list itself (``keys()`` and
``models()`` return the ``"keys"`` / ``"models"`` arrays, ``v1_models()`` the
``"data"`` array), which is also what the profile widgets expect.  Errors raise
:class:`~.errors.LumenAPIError`.  Both clients stamp each request with the
notebook and cell it came from and count model answers in this session's usage.

The two classes have the same methods; the async one's are coroutines (and its
``stream_chat`` an async generator).  What they share lives in :class:`.base.ClientBase`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import httpx

from . import pricing
from .async_client import AsyncLumenClient
from .attribution import stamp_request
from .base import DEFAULT_TIMEOUT, ClientBase, Messages
from .chat import ChatEvent, StreamReader, sse_payloads
from .connection import Connection
from .errors import LumenAPIError
from .tally import tally_response

__all__ = ["AsyncLumenClient", "LumenClient"]


class LumenClient(ClientBase):
    """The profile API and the model gateway, synchronously (``httpx.Client``)."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        connection: Connection | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, connection, timeout)
        self._http = httpx.Client(
            headers=self.connection.auth_headers(),
            timeout=httpx.Timeout(timeout),
            event_hooks={"request": [stamp_request], "response": [tally_response]},
            transport=transport,
            verify=self._verify(),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LumenClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        model: str | None = None,
    ) -> Any:
        try:
            response = self._http.request(method, url, params=params, json=json)
        except httpx.TransportError as exc:
            raise self._unreachable(exc, url) from None
        return self._decode(response, model)

    # -- the profile API --------------------------------------------------------------------

    def profile_api_available(self) -> bool:
        """Whether this gateway has the profile REST API for this credential."""
        if self._profile_api is not None:
            return self._profile_api
        if self._no_api_known():
            return False
        url = self._api("profile")
        try:
            response = self._http.get(url)
        except httpx.TransportError as exc:
            raise self._unreachable(exc, url) from None
        return self._probe_result(response)

    def profile(self) -> dict[str, Any]:
        """Identity, tiles, pool (balance, refill) and Web Chat Usage."""
        return self._send("GET", self._api("profile"))  # type: ignore[no-any-return]

    def keys(self, include_revoked: bool = False) -> list[dict[str, Any]]:
        """The personal API keys, never raw (revoked ones too when asked)."""
        params = self._keys_params(include_revoked)
        return self._send("GET", self._api("keys"), params=params)["keys"]  # type: ignore[no-any-return]

    def key_page(
        self, include_revoked: bool = False, *, limit: int, offset: int = 0
    ) -> dict[str, Any]:
        """``limit`` keys after ``offset`` in the profile's order, and their ``total``:
        ``{"keys": [...], "total": n}``."""
        params = {**self._keys_params(include_revoked), **self._page_params(limit, offset)}
        return self._send("GET", self._api("keys"), params=params)  # type: ignore[no-any-return]

    def create_key(
        self,
        name: str | None = None,
        *,
        budget: float | str | None = None,
        expires_in: str | None = None,
        expires_at: str | None = None,
    ) -> dict[str, Any]:
        """A new key; the raw key is in ``"key"`` of this answer only. Unnamed: a draft.

        ``budget`` (coins) and ``expires_in`` (``"7d"``) or ``expires_at`` (ISO 8601)
        are the key's own limits.  ``"key"`` is a :class:`RawKey`: a ``str`` whose
        ``repr`` is only the hint.
        """
        body: dict[str, Any] = {} if name is None else {"name": name}
        limits = {"budget": budget, "expires_in": expires_in, "expires_at": expires_at}
        body.update({field: value for field, value in limits.items() if value is not None})
        return self._wrap_key(self._send("POST", self._api("keys"), json=body))

    def save_key(self, id: int, name: str, **limits: Any) -> dict[str, Any]:
        """Name or rename a key (a draft becomes active); a draft may be given its
        ``budget``, ``expires_in`` or ``expires_at`` as it is saved."""
        url = self._api(f"keys/{int(id)}")
        body = {"name": name, **{f: v for f, v in limits.items() if v is not None}}
        return self._send("PATCH", url, json=body)  # type: ignore[no-any-return]

    def revoke_key(self, id: int) -> dict[str, Any]:
        """Revoke an active key (history kept) or discard a draft: ``{"id", "result"}``."""
        return self._send("DELETE", self._api(f"keys/{int(id)}"))  # type: ignore[no-any-return]

    def models(self) -> list[dict[str, Any]]:
        """Model Access rows: every model with access, status, prices, notice and usage."""
        rows = self._send("GET", self._api("models"))["models"]
        self._remember_prices(rows)
        return rows  # type: ignore[no-any-return]

    def model_page(self, *, limit: int, offset: int = 0) -> dict[str, Any]:
        """``limit`` Model Access rows after ``offset`` in the profile's order, and their
        ``total``: ``{"models": [...], "total": n}``."""
        page = self._send("GET", self._api("models"), params=self._page_params(limit, offset))
        self._remember_prices(page["models"])
        return page  # type: ignore[no-any-return]

    def model(self, name: str) -> dict[str, Any]:
        """One model in detail, its notice included."""
        url = self._api(f"models/{self._name(name)}")
        return self._send("GET", url, model=name)  # type: ignore[no-any-return]

    def consent(self, name: str, notice_digest: str | None = None) -> dict[str, Any]:
        """Accept a model's notice (pass its ``notice_digest`` to accept that exact text)."""
        url = self._api(f"models/{self._name(name)}/consent")
        body = self._consent_body(notice_digest)
        return self._send("POST", url, json=body, model=name)  # type: ignore[no-any-return]

    def usage(
        self,
        period: str = "month",
        bucket: str | None = None,
        group_by: str = "model",
        notebook: str | None = None,
    ) -> dict[str, Any]:
        """Spending history in time buckets, split by model, source, key or notebook;
        by ``cell`` for one notebook (``notebook``, else this kernel's own)."""
        params = self._usage_params(period, bucket, group_by, notebook)
        return self._send("GET", self._api("usage"), params=params)  # type: ignore[no-any-return]

    # -- the model gateway ----------------------------------------------------------------

    def v1_models(self) -> list[dict[str, Any]]:
        """The OpenAI ``GET /v1/models`` objects: models callable now, prices, status."""
        rows = self._send("GET", self._v1("models"))["data"]
        self._remember_prices(rows)
        return rows  # type: ignore[no-any-return]

    def default_model(self) -> str:
        """The first callable model that is up (by name)."""
        return self._pick_default(self.v1_models())

    def price(self, model: str) -> pricing.ModelPrice:
        """A model's prices and output limit (cached)."""
        if model not in self._prices:
            if self.profile_api_available():
                self.models()
            else:
                self.v1_models()
        return self._price_or_error(model)

    def estimate(
        self, model: str, prompt_or_messages: Messages, max_tokens: int | None = None
    ) -> dict[str, Any]:
        """The worst-case coins of a chat call: what the gateway reserves before sending."""
        return pricing.estimate(self.price(model), prompt_or_messages, max_tokens)

    def chat(
        self,
        model: str,
        messages: Messages,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        conversation: str | None = None,
        source: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """One chat completion, not streamed: the OpenAI JSON answer."""
        request = self._chat_request(
            model,
            messages,
            stream=False,
            max_tokens=max_tokens,
            temperature=temperature,
            conversation=conversation,
            source=source,
            extra=extra,
        )
        try:
            response = self._http.post(**request)
        except httpx.TransportError as exc:
            raise self._unreachable(exc, request["url"]) from None
        return self._decode(response, model)  # type: ignore[no-any-return]

    def stream_chat(
        self,
        model: str,
        messages: Messages,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        conversation: str | None = None,
        source: str | None = None,
        **extra: Any,
    ) -> Iterator[ChatEvent]:
        """Stream a chat answer: ``Delta`` pieces, then one ``Finished`` with the usage."""
        request = self._chat_request(
            model,
            messages,
            stream=True,
            max_tokens=max_tokens,
            temperature=temperature,
            conversation=conversation,
            source=source,
            extra=extra,
        )
        try:
            with self._http.stream("POST", **request) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._error(response, model)
                reader = StreamReader(model)
                for payload in sse_payloads(response.iter_lines()):
                    yield from reader.events(payload)
                yield reader.finished()
        except httpx.TransportError as exc:
            raise self._unreachable(exc, request["url"]) from None

    def session_usage(self) -> dict[str, Any]:
        """What this kernel session used, counted from the answers it received."""
        if not self._prices:
            with contextlib.suppress(LumenAPIError):
                self.v1_models()
        return self._session_usage()
