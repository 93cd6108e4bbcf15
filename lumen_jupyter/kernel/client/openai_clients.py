"""``openai.OpenAI`` / ``AsyncOpenAI`` clients configured for the gateway.

Same gateway and credential as :func:`lumen_jupyter.client` (found with no
configuration in a kernel started by the server), the notebook's path as a
default header, the current cell's id added to each request by an httpx hook,
and each answer counted in this session's usage.  An exhausted budget is not
retried: the gateway answers it with ``x-should-retry: false``, which the
``openai`` client obeys.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .attribution import NOTEBOOK_HEADER, astamp_request, notebook_path, stamp_request
from .connection import discover
from .tally import atally_response, tally_response

if TYPE_CHECKING:
    import openai


def _default_headers(extra: dict[str, str] | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    path = notebook_path()
    if path:
        headers[NOTEBOOK_HEADER] = quote(path[:1024], safe="/")
    headers.update(extra or {})
    return headers


def openai_client(
    base_url: str | None = None, api_key: str | None = None, **kwargs: Any
) -> openai.OpenAI:
    """An ``openai.OpenAI`` client for the gateway (extra keyword arguments go to it)."""
    import openai

    connection = discover(base_url, api_key)
    http_client = kwargs.pop("http_client", None) or openai.DefaultHttpxClient(
        event_hooks={"request": [stamp_request], "response": [tally_response]}
    )
    return openai.OpenAI(
        base_url=connection.v1_url,
        api_key=connection.secret(),
        default_headers=_default_headers(kwargs.pop("default_headers", None)),
        http_client=http_client,
        **kwargs,
    )


def async_openai_client(
    base_url: str | None = None, api_key: str | None = None, **kwargs: Any
) -> openai.AsyncOpenAI:
    """An ``openai.AsyncOpenAI`` client for the gateway."""
    import openai

    connection = discover(base_url, api_key)
    http_client = kwargs.pop("http_client", None) or openai.DefaultAsyncHttpxClient(
        event_hooks={"request": [astamp_request], "response": [atally_response]}
    )
    return openai.AsyncOpenAI(
        base_url=connection.v1_url,
        api_key=connection.secret(),
        default_headers=_default_headers(kwargs.pop("default_headers", None)),
        http_client=http_client,
        **kwargs,
    )
