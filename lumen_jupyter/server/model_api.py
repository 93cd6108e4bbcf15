"""The OpenAI-compatible model API under ``<prefix>lumen/v1/``: HTTP around the gateway.

These handlers read a request, learn who is calling (a personal key, a kernel
credential, or the host's own session), and hand the call to
:class:`~lumen_jupyter.gateway.call.ModelCall`, which admits, relays and settles
it.  They also list the models a caller may see.
"""

from __future__ import annotations

import contextlib
from urllib.parse import unquote

from tornado import web
from tornado.http1connection import HTTP1Connection
from tornado.iostream import StreamClosedError

from ..core import billing
from ..core.access import may_call
from ..core.errors import (
    AuthenticationFailed,
    BadRequest,
    ConsentRequired,
    LumenError,
    NotFound,
    PayloadTooLarge,
)
from ..gateway.call import CallRequest, ClientGone, ModelCall, parse_body
from ..gateway.gateway import Gateway
from .base import LumenHandler, Principal, lumen_endpoint
from .routes import Routes

NOTEBOOK_HEADER = "X-Lumen-Notebook"
CELL_HEADER = "X-Lumen-Cell"
CONVERSATION_HEADER = "X-Lumen-Conversation"
SOURCE_HEADER = "X-Lumen-Source"


class GatewayHandler(LumenHandler):
    """Base of the ``/v1`` handlers: OpenAI-style errors and the Bearer rules."""

    accepts_personal_keys = True

    @property
    def gateway(self) -> Gateway:
        return self.settings["lumen_gateway"]  # type: ignore[no-any-return]

    async def prepare(self) -> None:
        header = self.request.headers.get("Authorization")
        if header is not None and header.strip():
            scheme = header.strip().split(" ", 1)[0].lower()
            if scheme not in ("bearer", "token") or not header.strip().count(" "):
                raise BadRequest(
                    "Malformed Authorization header: send 'Authorization: Bearer sk_…'",
                    code="invalid_authorization",
                )
        try:
            await super().prepare()
        except web.HTTPError as error:
            # Jupyter answers a caller it does not know with 403 (its XSRF or login
            # check); on the model API that is a missing or invalid key: 401.
            if error.status_code != 403 or getattr(self, "_jupyter_current_user", None):
                raise
            if header is None or not header.strip():
                raise AuthenticationFailed(
                    "Missing API key: send 'Authorization: Bearer sk_…'", code="missing_api_key"
                ) from None
            raise AuthenticationFailed("Invalid API key or token", code="invalid_api_key") from None

    async def principal(self, action: str) -> Principal:
        try:
            return await super().principal(action)
        except web.HTTPError as error:
            if error.status_code != 403 or self.current_user:
                raise
            # No credential, and no session the host knows: on the model API, a 401.
            raise AuthenticationFailed(
                "Missing API key: send 'Authorization: Bearer sk_…'", code="missing_api_key"
            ) from None


class ModelsHandler(GatewayHandler):
    """The models callable now (OpenAI's list), each with its ``access``."""

    @lumen_endpoint("read")
    async def get(self) -> None:
        visible = await self.run(self.service.visible_models, self.identity)
        data = [
            {**self.gateway.model_object(model), "access": access.value}
            for model, access in visible
        ]
        self.send_json({"object": "list", "data": data})


class ModelHandler(GatewayHandler):
    """One model: also one that needs the caller's consent first, with its ``access``
    (``needs_ack``) and where to consent, so a client that looks before calling does
    not tell its user the model does not exist."""

    @lumen_endpoint("read")
    async def get(self, name: str) -> None:
        found = await self.run(self.service.findable_model, self.identity, name)
        if found is None:
            raise NotFound(f"The model '{name}' does not exist", code="model_not_found")
        model, access = found
        data = {**self.gateway.model_object(model), "access": access.value}
        if not may_call(access, self.service.catalog.require_consent):
            root = f"{self.request.protocol}://{self.request.host}{self.lumen_base_url}"
            consent = ConsentRequired(name).at(root).to_json()["error"]
            data["consent"] = {
                "message": consent["message"],
                "consent_url": consent["consent_url"],
                "profile_url": consent["profile_url"],
            }
        self.send_json(data)


@web.stream_request_body
class ModelCallHandler(GatewayHandler):
    """A model call: its body read up to the limit, then a :class:`ModelCall`."""

    endpoint_kind = "chat"
    key_checked_on_admission = True

    _body: bytearray
    _too_large = False
    _client_gone = False
    _call: ModelCall | None = None

    async def prepare(self) -> None:
        self._body = bytearray()
        await super().prepare()
        declared = self.request.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.gateway.max_request_bytes:
            raise PayloadTooLarge(self._too_large_message())
        connection = self.request.connection
        if isinstance(connection, HTTP1Connection):
            connection.set_max_body_size(self.gateway.max_request_bytes * 2)

    def _too_large_message(self) -> str:
        limit_mb = self.gateway.max_request_bytes / (1024 * 1024)
        return f"The request body is larger than the limit of {limit_mb:g} MB"

    def data_received(self, chunk: bytes) -> None:
        if self._too_large:
            return
        self._body += chunk
        if len(self._body) > self.gateway.max_request_bytes:
            # A body without a declared length (chunked) shows its size only now:
            # answer at once and let tornado close the connection instead of reading
            # the rest of it.
            self._too_large = True
            self._body = bytearray()
            self.send_error_json(PayloadTooLarge(self._too_large_message()))

    def on_connection_close(self) -> None:
        self._client_gone = True
        if self._call is not None:
            self._call.client_closed()
        super().on_connection_close()

    def send_error_json(self, error: LumenError) -> None:
        if error.status < 500:
            self.gateway.metrics.refused(error.code)
        super().send_error_json(error)

    # -- the Reply the call answers through -----------------------------------------------

    @property
    def client_gone(self) -> bool:
        return self._client_gone

    async def push(self) -> None:
        try:
            await self.flush()
        except StreamClosedError:
            self._client_gone = True
            raise ClientGone from None

    async def end_stream(self) -> None:
        with contextlib.suppress(StreamClosedError):
            await self.finish()

    def call_context(self, principal: Principal) -> billing.CallContext:
        headers = self.request.headers

        def header(name: str, limit: int) -> str | None:
            value = headers.get(name)
            return unquote(value)[:limit] if value else None

        source = principal.source
        label = headers.get(SOURCE_HEADER)
        if source in ("kernel", "session") and label == "chat":
            source = "chat"
        elif source == "session" and label == "kernel":
            # A user's server on JupyterHub forwards its kernels' calls with its own
            # hub token (a session here) and says so: a label, like the others.
            source = "kernel"
        return billing.CallContext(
            account_id=principal.account_id,
            source=source,
            key_id=principal.key_id,
            notebook=header(NOTEBOOK_HEADER, 1024),
            cell=header(CELL_HEADER, 64),
            conversation=header(CONVERSATION_HEADER, 64),
        )

    @lumen_endpoint("write")
    async def post(self) -> None:
        if self._finished:  # answered 413 while the body was still arriving
            return
        if self._too_large:
            raise PayloadTooLarge(self._too_large_message())
        principal = self._principal
        assert principal is not None
        request = CallRequest(
            kind=self.endpoint_kind,
            body=parse_body(bytes(self._body)),
            identity=principal.identity,
            context=self.call_context(principal),
        )
        self._call = ModelCall(self.gateway, request, self)
        await self._call.run()


class ChatCompletionsHandler(ModelCallHandler):
    endpoint_kind = "chat"


class CompletionsHandler(ModelCallHandler):
    endpoint_kind = "completions"


class EmbeddingsHandler(ModelCallHandler):
    endpoint_kind = "embeddings"


def model_routes(prefix: str) -> Routes:
    """The model API's routes under ``prefix`` (``<base_url>lumen/v1``)."""
    return [
        (f"{prefix}/models", ModelsHandler),
        (rf"{prefix}/models/(.+)", ModelHandler),
        (f"{prefix}/chat/completions", ChatCompletionsHandler),
        (f"{prefix}/completions", CompletionsHandler),
        (f"{prefix}/embeddings", EmbeddingsHandler),
    ]
