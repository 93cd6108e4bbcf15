"""Jupyternaut, jupyter-ai 3's chat persona, on the gateway with no key in any file.

Jupyternaut runs inside the Jupyter server and calls its model through litellm.
jupyter-ai keeps the model's settings in its ``config.json`` (the AI settings page)
or takes them as ``c.JupyternautExtension.*`` traits, which it also writes to the
server's log; a key given there is a key at rest and in the log.  Enabled as a
server extension beside ``lumen_jupyter``, this module instead, when the server
starts:

* mints a credential for the server process itself, of the kind each kernel gets
  (``lkt_``, random, known to the server only as a digest, held in this process's
  memory, valid until the server stops, masked in lumen's logs).  It is not the
  user's personal key: nobody types, stores, rotates or revokes it, and a leak of
  it is worth nothing once the server has stopped.  The calls it makes are the
  server user's, billed to their pool like their kernels' calls;
* points litellm in the server process at the gateway (``litellm.api_base``), with
  a placeholder as litellm's OpenAI key, and gives litellm HTTP clients that put the
  credential on requests to the gateway only - a model id that leads litellm
  elsewhere never carries it;
* marks each call a persona makes while answering a chat as chat traffic of that
  chat (``X-Lumen-Source: chat``, the chat file as the notebook, the chat's id as
  the conversation), so it counts in the profile's chat row and in the spending by
  notebook.

Enable it with ``c.ServerApp.jpserver_extensions = {"lumen_jupyter.jupyternaut":
True}`` and name a gateway model with litellm's OpenAI-compatible prefix:
``c.JupyternautExtension.initial_language_model = "openai/demo-pro"``.  Kernels are
not affected: a notebook's ``%%ai`` uses the kernel's own credential
(:mod:`lumen_jupyter.kernel.client.litellm_setup`).
"""

from __future__ import annotations

import contextvars
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from .kernel.client.attribution import CONVERSATION_HEADER, NOTEBOOK_HEADER, SOURCE_HEADER

log = logging.getLogger("lumen_jupyter.jupyternaut")

SERVER_CREDENTIAL_ID = "server:jupyter-ai"
"""The id the server process's credential is issued under (never a kernel's id)."""

PLACEHOLDER_KEY = "lumen-gateway"
"""What litellm holds as its OpenAI key: not a secret, replaced on the way out."""


@dataclass(frozen=True)
class ChatContext:
    """The chat a persona is answering: its file and its id."""

    path: str
    chat_id: str


_current_chat: contextvars.ContextVar[ChatContext | None] = contextvars.ContextVar(
    "lumen_current_chat", default=None
)


class GatewayAuth:
    """Adds the credential and the chat's attribution to requests for the gateway.

    Requests for any other URL leave untouched: the credential is only ever sent to
    the server it belongs to.  ``repr`` shows no credential.
    """

    __slots__ = ("__credential", "v1_url")

    def __init__(self, v1_url: str, credential: str) -> None:
        self.v1_url = v1_url if v1_url.endswith("/") else v1_url + "/"
        self.__credential = credential

    def for_gateway(self, request: httpx.Request) -> bool:
        return str(request.url).startswith(self.v1_url)

    def stamp(self, request: httpx.Request) -> None:
        if not self.for_gateway(request):
            return
        request.headers["Authorization"] = f"Bearer {self.__credential}"
        chat = _current_chat.get()
        if chat is None:
            return
        request.headers[SOURCE_HEADER] = "chat"
        request.headers[NOTEBOOK_HEADER] = quote(chat.path[:1024], safe="/")
        request.headers[CONVERSATION_HEADER] = quote(chat.chat_id[:64], safe="")

    async def astamp(self, request: httpx.Request) -> None:
        self.stamp(request)

    def __repr__(self) -> str:
        return f"GatewayAuth(v1_url={self.v1_url!r})"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("GatewayAuth holds a credential and is not picklable")


def server_root_url(serverapp: Any) -> str:
    """The URL this process reaches its own server at (loopback for a wildcard ip)."""
    ip = serverapp.ip
    host = ip if ip not in ("", "0.0.0.0", "::", "*", "localhost") else "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    scheme = "https" if serverapp.certfile else "http"
    return f"{scheme}://{host}:{serverapp.port}{serverapp.base_url}"


def use_gateway_in_server_litellm(v1_url: str, credential: str) -> GatewayAuth:
    """Send litellm's calls in this process to the gateway at ``v1_url``."""
    import litellm

    auth = GatewayAuth(v1_url, credential)
    timeout = httpx.Timeout(600.0, connect=10.0)
    litellm.api_base = auth.v1_url.rstrip("/")
    litellm.openai_key = PLACEHOLDER_KEY
    litellm.client_session = httpx.Client(event_hooks={"request": [auth.stamp]}, timeout=timeout)
    litellm.aclient_session = httpx.AsyncClient(
        event_hooks={"request": [auth.astamp]}, timeout=timeout
    )
    return auth


def attribute_persona_calls() -> bool:
    """Make the calls of every jupyter-ai persona name the chat it is answering.

    A persona answers a message in ``BasePersona.on_message``; the chat is set for
    that call (and the tasks it starts) in a context variable that the request hook
    reads.  Whether jupyter-ai's persona manager was found.
    """
    try:
        from jupyter_ai_persona_manager import BasePersona
    except ImportError:
        return False
    original: Callable[..., Awaitable[Any]] | None = getattr(BasePersona, "on_message", None)
    if original is None or getattr(original, "_lumen_attributed", False):
        return original is not None

    @functools.wraps(original)
    async def on_message(self: Any, message: Any) -> Any:
        token = _current_chat.set(_chat_of(self))
        try:
            return await original(self, message)
        finally:
            _current_chat.reset(token)

    on_message._lumen_attributed = True  # type: ignore[attr-defined]
    BasePersona.on_message = on_message
    return True


def _chat_of(persona: Any) -> ChatContext | None:
    try:
        return ChatContext(str(persona.get_chat_path(relative=True)), str(persona.chat.get_id()))
    except Exception:  # a persona of another shape: calls go out unattributed
        log.debug("lumen: no chat path for persona %r", persona, exc_info=True)
        return None


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "lumen_jupyter.jupyternaut"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Nothing to do before the server listens: its port is final only then."""


async def _start_jupyter_server_extension(serverapp: Any) -> None:
    credentials = serverapp.web_app.settings.get("lumen_kernel_credentials")
    if credentials is None:
        serverapp.log.warning(
            "lumen_jupyter.jupyternaut: the lumen_jupyter extension is not enabled; "
            "Jupyternaut is not pointed at the gateway"
        )
        return
    try:
        import litellm  # noqa: F401
    except ImportError:
        serverapp.log.warning(
            "lumen_jupyter.jupyternaut: litellm is not installed (pip install "
            "'jupyter-ai[jupyternaut]'); nothing to point at the gateway"
        )
        return
    v1_url = server_root_url(serverapp) + "lumen/v1/"
    use_gateway_in_server_litellm(v1_url, credentials.issue(SERVER_CREDENTIAL_ID))
    attributed = attribute_persona_calls()
    serverapp.log.info(
        "lumen_jupyter.jupyternaut: litellm in the server goes to %s with the server's own "
        "credential%s",
        v1_url,
        "; persona calls are billed to their chat" if attributed else "",
    )
