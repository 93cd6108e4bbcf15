"""Point litellm, and so jupyter-ai's ``%%ai`` magic, at the gateway from a kernel.

jupyter-ai 3 calls models through litellm.  In a kernel started by the server,
:func:`use_gateway_in_litellm` sets litellm's module-wide defaults (base URL,
credential, HTTP client) to the gateway and the kernel's own credential: nobody
types a key, nothing is written to an environment variable, a ``.env`` file or a
settings file, and each call carries the notebook and cell it came from (the same
request hook as :func:`lumen_jupyter.openai_client`), so it is billed to the
notebook like the kernel's other calls.
"""

from __future__ import annotations

from typing import Any

from .attribution import stamp_request
from .connection import discover
from .tally import tally_response


def use_gateway_in_litellm(base_url: str | None = None, api_key: str | None = None) -> Any:
    """Make litellm's OpenAI-compatible calls (``openai/<model>``) go to the gateway.

    Returns the connection used (it shows only a hint of the credential)."""
    import httpx
    import litellm

    connection = discover(base_url, api_key)
    litellm.api_base = connection.v1_url.rstrip("/")
    litellm.api_key = connection.secret()
    litellm.client_session = httpx.Client(
        event_hooks={"request": [stamp_request], "response": [tally_response]},
        timeout=httpx.Timeout(600.0, connect=10.0),
    )
    return connection
