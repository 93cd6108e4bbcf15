"""What ``LumenClient`` and ``AsyncLumenClient`` share: URLs, errors, prices, the probe.

Nothing here does I/O; the two clients send the requests and hand the answers
to these methods.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from . import pricing
from .attribution import attribution_headers, notebook_path
from .chat import chat_body
from .connection import Connection, RawKey, discover
from .errors import CONNECTION_ERROR, NO_PROFILE_API, LumenAPIError, error_from_body
from .tally import SESSION

DEFAULT_TIMEOUT = 30.0
STREAM_READ_TIMEOUT = 300.0

Messages = str | Sequence[Mapping[str, Any]]


class ClientBase:
    """URLs, error decoding, the price cache and the profile-API probe result."""

    def __init__(
        self,
        base_url: str | None,
        api_key: str | None,
        connection: Connection | None,
        timeout: float,
    ) -> None:
        self.connection = connection or discover(base_url, api_key)
        self.timeout = timeout
        self._prices: dict[str, pricing.ModelPrice] = {}
        self._profile_api: bool | None = None
        #: Why there is no profile API (``None`` while it is available or unknown).
        self.profile_api_reason: str | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.connection.describe()}>"

    def _verify(self) -> ssl.SSLContext | bool:
        """What the HTTP client verifies TLS with.

        Loading the certificate store costs 20-70 ms, which a kernel talking plain HTTP
        to its own server (the usual case) should not pay for every client. Then the
        client gets a context that trusts no certificate: an ``https`` URL fails closed
        instead of going unverified.
        """
        urls = (self.connection.v1_url, self.connection.api_url or "")
        if any(url.startswith("https:") for url in urls):
            return True
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)

    # -- URLs ---------------------------------------------------------------------------

    def _api(self, path: str) -> str:
        if self.connection.api_url is None:
            raise self._no_profile_error()
        return self.connection.api_url + path

    def _v1(self, path: str) -> str:
        return self.connection.v1_url + path

    @staticmethod
    def _name(name: str) -> str:
        return quote(str(name), safe="")

    def _no_profile_error(self) -> LumenAPIError:
        reason = self.profile_api_reason or (
            f"{self.connection.v1_url} is an OpenAI-compatible endpoint without the "
            "lumen-jupyter profile API"
        )
        return LumenAPIError(
            f"{reason}: balance, keys, consent and usage history are not available here "
            "(models, prices and this session's own usage are).",
            code=NO_PROFILE_API,
        )

    # -- answers ------------------------------------------------------------------------

    def _error(self, response: httpx.Response, model: str | None) -> LumenAPIError:
        try:
            body = response.json()
        except ValueError:
            body = None
        return error_from_body(
            response.status_code,
            body,
            model=model,
            credential_kind=self.connection.kind,
            credential_hint=self.connection.credential_hint,
        )

    def _decode(self, response: httpx.Response, model: str | None) -> Any:
        if response.status_code >= 400:
            raise self._error(response, model)
        try:
            return response.json()
        except ValueError:
            raise LumenAPIError(
                f"The server answered {response.request.url} with something that is not JSON",
                status=response.status_code,
                code="invalid_response",
            ) from None

    def _unreachable(self, exc: httpx.TransportError, url: str) -> LumenAPIError:
        if isinstance(exc, httpx.TimeoutException):
            why = "it did not answer in time"
        else:
            why = type(exc).__name__
        return LumenAPIError(
            f"Cannot reach the Lumen gateway at {url.split('?')[0]} ({why}). "
            "Is the Jupyter server still running?",
            code=CONNECTION_ERROR,
        )

    def _probe_result(self, response: httpx.Response) -> bool:
        """Interpret the answer to ``GET lumen/api/profile``."""
        if response.status_code == 200:
            self._profile_api, self.profile_api_reason = True, None
            return True
        if response.status_code in (404, 405):
            self.profile_api_reason = (
                f"{self.connection.root_url or self.connection.v1_url} has no lumen-jupyter "
                "profile API"
            )
            self._profile_api = False
            return False
        error = self._error(response, None)
        if error.code == "key_not_allowed":
            self.profile_api_reason = (
                "Personal API keys cannot read the profile (it needs a kernel started by the "
                "Jupyter server)"
            )
            self._profile_api = False
            return False
        raise error

    def _no_api_known(self) -> bool:
        if self.connection.api_url is None:
            self._profile_api = False
            return True
        return False

    # -- prices and estimates ---------------------------------------------------------------

    def _remember_prices(self, models: Sequence[Mapping[str, Any]]) -> None:
        for row in models:
            price = pricing.ModelPrice.from_json(row)
            if price.name:
                self._prices[price.name] = price

    def _price_or_error(self, model: str) -> pricing.ModelPrice:
        price = self._prices.get(model)
        if price is None:
            raise LumenAPIError(
                f"The model '{model}' does not exist",
                status=404,
                code="model_not_found",
                model=model,
            )
        return price

    @staticmethod
    def _pick_default(models: Sequence[Mapping[str, Any]]) -> str:
        usable = [m for m in models if m.get("status") not in ("down", "disabled")]
        chosen = (usable or list(models))[:1]
        if not chosen:
            raise LumenAPIError(
                "No model is available to you. Ask an administrator for access.",
                status=403,
                code="no_models",
            )
        return str(chosen[0].get("id") or chosen[0].get("name"))

    @staticmethod
    def _wrap_key(created: dict[str, Any]) -> dict[str, Any]:
        if isinstance(created.get("key"), str):
            created["key"] = RawKey(created["key"])
        return created

    def _consent_body(self, notice_digest: str | None) -> dict[str, Any]:
        return {} if notice_digest is None else {"notice_digest": notice_digest}

    @staticmethod
    def _keys_params(include_revoked: bool) -> dict[str, str]:
        return {"include_revoked": "true" if include_revoked else "false"}

    @staticmethod
    def _page_params(limit: int, offset: int) -> dict[str, str]:
        if limit < 0 or offset < 0:
            raise ValueError("limit and offset are 0 or more")
        return {"limit": str(int(limit)), "offset": str(int(offset))}

    @staticmethod
    def _usage_params(
        period: str, bucket: str | None, group_by: str, notebook: str | None = None
    ) -> dict[str, str]:
        params = {"period": period, "group_by": group_by}
        if bucket is not None:
            params["bucket"] = bucket
        if group_by == "cell":
            notebook = notebook or notebook_path()
            if not notebook:
                raise LumenAPIError(
                    "Usage by cell is for one notebook: pass notebook=PATH "
                    "(this kernel runs no notebook)",
                    code="missing_notebook",
                )
            params["notebook"] = notebook[:1024]
        return params

    def _chat_request(
        self,
        model: str,
        messages: Messages,
        *,
        stream: bool,
        max_tokens: int | None,
        temperature: float | None,
        conversation: str | None,
        source: str | None,
        extra: Mapping[str, Any],
    ) -> dict[str, Any]:
        """The keyword arguments of one chat call, the same for the sync and async clients:
        ``url``, ``json``, ``headers`` (attribution) and a ``timeout`` patient with slow models."""
        body = chat_body(
            model,
            pricing.as_messages(messages),
            stream=stream,
            max_tokens=max_tokens,
            temperature=temperature,
            **extra,
        )
        return {
            "url": self._v1("chat/completions"),
            "json": body,
            "headers": attribution_headers(source=source, conversation=conversation),
            "timeout": httpx.Timeout(self.timeout, read=max(STREAM_READ_TIMEOUT, self.timeout)),
        }

    def _session_usage(self) -> dict[str, Any]:
        return SESSION.snapshot(self._prices)
