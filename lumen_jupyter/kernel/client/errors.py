"""One error type for everything the kernel client can meet, and one clear line for each.

The gateway answers errors as OpenAI-shaped JSON (``{"error": {"message", "type",
"code"}}``); :class:`LumenAPIError` carries those fields plus the HTTP status and,
for an exhausted budget, ``next_refill_at``.  :meth:`LumenAPIError.one_line` turns
it into a single sentence that says what happened and what to do - the magics show
that line, and IPython shows it instead of a traceback (``_render_traceback_``).
No message built here ever contains a credential; keys are named by their hint.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

NOT_CONFIGURED = "not_configured"
NO_PROFILE_API = "no_profile_api"
CONNECTION_ERROR = "connection_error"


class LumenAPIError(Exception):
    """An error answer from the gateway or the profile API, or no answer at all.

    ``status`` is the HTTP status (0 when the server could not be reached),
    ``code`` the machine-readable reason (``consent_required``, ``coins_exhausted``
    ...), ``message`` the server's text, ``next_refill_at`` an ISO time or ``None``.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        code: str = "error",
        error_type: str = "api_error",
        next_refill_at: str | None = None,
        model: str | None = None,
        credential_kind: str | None = None,
        credential_hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.error_type = error_type
        self.next_refill_at = next_refill_at
        self.model = model
        self.credential_kind = credential_kind
        self.credential_hint = credential_hint

    def __str__(self) -> str:
        return self.one_line()

    def __repr__(self) -> str:
        return f"LumenAPIError(status={self.status}, code={self.code!r}, message={self.message!r})"

    def one_line(self) -> str:
        """What happened and what to do, in one line."""
        return advice(self)

    def _render_traceback_(self) -> list[str]:
        """IPython shows this instead of a traceback."""
        return [f"LumenAPIError: {self.one_line()}"]


CONFIG_ERROR = "lumen_config_error"
"""The server's lumen could not load its configuration: every call says why."""


def error_from_body(
    status: int,
    body: Any,
    *,
    model: str | None = None,
    credential_kind: str | None = None,
    credential_hint: str | None = None,
) -> LumenAPIError:
    """Build the error from a decoded JSON body (or anything else the server sent)."""
    detail = body.get("error") if isinstance(body, dict) else None
    if isinstance(detail, dict):
        message = str(detail.get("message") or f"HTTP {status}")
        code = str(detail.get("code") or _default_code(status))
        error_type = str(detail.get("type") or "api_error")
        refill = detail.get("next_refill_at")
    else:
        message, code, error_type, refill = f"HTTP {status}", _default_code(status), "", None
    return LumenAPIError(
        message,
        status=status,
        code=code,
        error_type=error_type,
        next_refill_at=refill if isinstance(refill, str) else None,
        model=model,
        credential_kind=credential_kind,
        credential_hint=credential_hint,
    )


def _default_code(status: int) -> str:
    return {
        400: "invalid_request",
        401: "invalid_api_key",
        403: "forbidden",
        404: "not_found",
        429: "rate_limited",
        503: "no_healthy_endpoint",
    }.get(status, "error")


def format_time(iso: str | None, *, now: datetime | None = None) -> str | None:
    """``2026-03-04T13:05:00Z`` as ``13:05 UTC`` (today) or ``2026-03-05 13:05 UTC``."""
    if not iso:
        return None
    try:
        when = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(timezone.utc)
    except ValueError:
        return iso
    today = (now or datetime.now(timezone.utc)).astimezone(timezone.utc).date()
    if when.date() == today:
        return f"{when:%H:%M} UTC"
    return f"{when:%Y-%m-%d %H:%M} UTC"


def _first_sentence(text: str, stop: str) -> str:
    head = text.split(stop, 1)[0].strip()
    return head.rstrip(".")


def advice(error: LumenAPIError) -> str:
    """The one line the user reads: what happened, then what to do."""
    code, model = error.code, error.model
    what = f"'{model}'" if model else "this model"
    if code in (NOT_CONFIGURED, NO_PROFILE_API, CONNECTION_ERROR):
        return error.message
    if code == CONFIG_ERROR:
        text = " ".join(error.message.split()).rstrip(".")
        return f"{text[:1].upper()}{text[1:]} (fix the file, then restart the Jupyter server)."
    if code == "unauthenticated":
        return f"Not authenticated: {error.message.rstrip('.')}."
    if error.status == 401 or code in ("invalid_api_key", "missing_api_key"):
        if error.credential_kind == "kernel":
            return (
                "The kernel's Lumen credential is no longer accepted (was the Jupyter server "
                "restarted?). Restart the kernel to get a fresh one."
            )
        if code == "missing_api_key":
            return "No API key was sent. Set LUMEN_API_KEY to a key from `%lumen keys new NAME`."
        hint = f" {error.credential_hint}" if error.credential_hint else ""
        return (
            f"The API key{hint} is unknown or revoked. Create a new one with "
            "`%lumen keys new NAME` (or on the Profile page) and set LUMEN_API_KEY to it."
        )
    if code == "consent_required":
        name = model or _quoted_name(error.message) or "MODEL"
        return (
            f"'{name}' needs your one-time consent. Run `%lumen consent {name}` to read "
            "its notice and accept it."
        )
    if code == "notice_changed":
        return f"{error.message}. Run `%lumen consent {model or 'MODEL'}` again."
    if code == "model_blocked":
        return (
            f"You have no access to {what}. Ask an administrator, or pick another model "
            "from `%lumen models`."
        )
    if code in ("model_not_found", "model_disabled"):
        state = "is disabled" if code == "model_disabled" else "does not exist or is hidden"
        return f"The model {what} {state}. See `%lumen models` for the models you can use."
    if code == "no_pool":
        return "No coin budget is set up for your account. Ask an administrator for one."
    if code == "pool_blocked":
        return "Your coin pool is blocked (max 0). Ask an administrator."
    if code == "key_not_allowed":
        return (
            "Personal API keys work on the model API only; the profile, keys and usage "
            "need a kernel started by the Jupyter server running lumen-jupyter."
        )
    if code == "coins_exhausted":
        head = _first_sentence(error.message, ". The next refill")
        head = _first_sentence(head, ". Ask an administrator")
        never = ". This pool does not refill"
        head = _first_sentence(head, never)
        when = format_time(error.next_refill_at)
        if when:
            return f"{head}. Next refill at {when}."
        if never in error.message:
            return f"{head}. This pool does not refill: ask an administrator for more coins."
        return f"{head}. Ask an administrator for more coins."
    if code == "rate_limited":
        return f"{error.message.rstrip('.')}."
    if code == "no_healthy_endpoint":
        return (
            f"{what[0].upper() + what[1:]} has no healthy endpoint right now; nothing was "
            "charged. Try again in a minute or pick another model from `%lumen models`."
        )
    if code in ("upstream_timeout", "upstream_error") or code.startswith("upstream_"):
        return f"{error.message.rstrip('.')}. Try again in a minute."
    if error.message == f"HTTP {error.status}":
        return f"The gateway answered HTTP {error.status} without details. Try again in a minute."
    if error.status == 403:
        return f"Not allowed: {error.message.rstrip('.')}."
    if error.status == 404:
        return f"Not found: {error.message.rstrip('.')}."
    if error.status == 0:
        return error.message
    return f"{error.message.rstrip('.')} (HTTP {error.status})."


def _quoted_name(message: str) -> str | None:
    found = re.search(r"'([^']+)'", message)
    return found.group(1) if found else None
