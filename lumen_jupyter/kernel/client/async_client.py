"""``AsyncLumenClient``: the same methods as ``LumenClient``, as coroutines (httpx async)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from . import pricing
from .attribution import astamp_request
from .base import DEFAULT_TIMEOUT, ClientBase, Messages
from .chat import ChatEvent, StreamReader, sse_payloads
from .connection import Connection
from .errors import LumenAPIError
from .tally import atally_response


class AsyncLumenClient(ClientBase):
    """The same API as :class:`LumenClient`, with ``httpx.AsyncClient``."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        connection: Connection | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, connection, timeout)
        self._http = httpx.AsyncClient(
            headers=self.connection.auth_headers(),
            timeout=httpx.Timeout(timeout),
            event_hooks={"request": [astamp_request], "response": [atally_response]},
            transport=transport,
            verify=self._verify(),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncLumenClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        model: str | None = None,
    ) -> Any:
        try:
            response = await self._http.request(method, url, params=params, json=json)
        except httpx.TransportError as exc:
            raise self._unreachable(exc, url) from None
        return self._decode(response, model)

    async def profile_api_available(self) -> bool:
        if self._profile_api is not None:
            return self._profile_api
        if self._no_api_known():
            return False
        url = self._api("profile")
        try:
            response = await self._http.get(url)
        except httpx.TransportError as exc:
            raise self._unreachable(exc, url) from None
        return self._probe_result(response)

    async def profile(self) -> dict[str, Any]:
        return await self._send("GET", self._api("profile"))  # type: ignore[no-any-return]

    async def keys(self, include_revoked: bool = False) -> list[dict[str, Any]]:
        params = self._keys_params(include_revoked)
        data = await self._send("GET", self._api("keys"), params=params)
        return data["keys"]  # type: ignore[no-any-return]

    async def key_page(
        self, include_revoked: bool = False, *, limit: int, offset: int = 0
    ) -> dict[str, Any]:
        params = {**self._keys_params(include_revoked), **self._page_params(limit, offset)}
        return await self._send("GET", self._api("keys"), params=params)  # type: ignore[no-any-return]

    async def create_key(
        self,
        name: str | None = None,
        *,
        budget: float | str | None = None,
        expires_in: str | None = None,
        expires_at: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {} if name is None else {"name": name}
        limits = {"budget": budget, "expires_in": expires_in, "expires_at": expires_at}
        body.update({field: value for field, value in limits.items() if value is not None})
        return self._wrap_key(await self._send("POST", self._api("keys"), json=body))

    async def save_key(self, id: int, name: str, **limits: Any) -> dict[str, Any]:
        url = self._api(f"keys/{int(id)}")
        body = {"name": name, **{f: v for f, v in limits.items() if v is not None}}
        return await self._send("PATCH", url, json=body)  # type: ignore[no-any-return]

    async def revoke_key(self, id: int) -> dict[str, Any]:
        return await self._send("DELETE", self._api(f"keys/{int(id)}"))  # type: ignore[no-any-return]

    async def models(self) -> list[dict[str, Any]]:
        rows = (await self._send("GET", self._api("models")))["models"]
        self._remember_prices(rows)
        return rows  # type: ignore[no-any-return]

    async def model_page(self, *, limit: int, offset: int = 0) -> dict[str, Any]:
        page = await self._send("GET", self._api("models"), params=self._page_params(limit, offset))
        self._remember_prices(page["models"])
        return page  # type: ignore[no-any-return]

    async def model(self, name: str) -> dict[str, Any]:
        url = self._api(f"models/{self._name(name)}")
        return await self._send("GET", url, model=name)  # type: ignore[no-any-return]

    async def consent(self, name: str, notice_digest: str | None = None) -> dict[str, Any]:
        url = self._api(f"models/{self._name(name)}/consent")
        body = self._consent_body(notice_digest)
        return await self._send("POST", url, json=body, model=name)  # type: ignore[no-any-return]

    async def usage(
        self,
        period: str = "month",
        bucket: str | None = None,
        group_by: str = "model",
        notebook: str | None = None,
    ) -> dict[str, Any]:
        params = self._usage_params(period, bucket, group_by, notebook)
        return await self._send("GET", self._api("usage"), params=params)  # type: ignore[no-any-return]

    async def v1_models(self) -> list[dict[str, Any]]:
        rows = (await self._send("GET", self._v1("models")))["data"]
        self._remember_prices(rows)
        return rows  # type: ignore[no-any-return]

    async def default_model(self) -> str:
        return self._pick_default(await self.v1_models())

    async def price(self, model: str) -> pricing.ModelPrice:
        if model not in self._prices:
            if await self.profile_api_available():
                await self.models()
            else:
                await self.v1_models()
        return self._price_or_error(model)

    async def estimate(
        self, model: str, prompt_or_messages: Messages, max_tokens: int | None = None
    ) -> dict[str, Any]:
        return pricing.estimate(await self.price(model), prompt_or_messages, max_tokens)

    async def chat(
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
            response = await self._http.post(**request)
        except httpx.TransportError as exc:
            raise self._unreachable(exc, request["url"]) from None
        return self._decode(response, model)  # type: ignore[no-any-return]

    async def stream_chat(
        self,
        model: str,
        messages: Messages,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        conversation: str | None = None,
        source: str | None = None,
        **extra: Any,
    ) -> AsyncIterator[ChatEvent]:
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
            async with self._http.stream("POST", **request) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise self._error(response, model)
                reader = StreamReader(model)
                async for line in response.aiter_lines():
                    for payload in sse_payloads([line]):
                        for event in reader.events(payload):
                            yield event
                    if line.strip() == "data: [DONE]":
                        break
                yield reader.finished()
        except httpx.TransportError as exc:
            raise self._unreachable(exc, request["url"]) from None

    async def session_usage(self) -> dict[str, Any]:
        if not self._prices:
            with contextlib.suppress(LumenAPIError):
                await self.v1_models()
        return self._session_usage()
