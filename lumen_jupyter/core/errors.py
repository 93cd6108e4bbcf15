"""The domain's errors, each knowing how the API should answer it.

Handlers never invent status codes: they let a ``LumenError`` through one
translator that turns it into an OpenAI-shaped JSON error.  Messages must never
contain a raw key; use :func:`lumen_jupyter.core.keys.key_hint` when a key has
to be named.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote


class LumenError(Exception):
    """Base error: a message for people plus the HTTP answer it maps to."""

    status = 400
    #: Whether a client should retry this answer by itself (OpenAI's client reads
    #: the ``x-should-retry`` header; an exhausted budget is not worth retrying).
    retryable = False
    error_type = "invalid_request_error"
    code = "invalid_request"

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details

    def at(self, root_url: str) -> LumenError:
        """This error as answered by the server at ``root_url`` (``http://host/base/``):
        errors that point somewhere give the full URL there.  Most are unchanged."""
        return self

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "message": self.message,
            "type": self.error_type,
            "code": self.code,
        }
        body.update(self.details)
        return {"error": body}


class BadRequest(LumenError):
    """Malformed input (bad JSON, a missing or invalid field)."""


class ConfigError(LumenError):
    """A configuration entry is wrong; the message names the entry and the field."""

    code = "invalid_config"


class AuthenticationFailed(LumenError):
    status = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(LumenError):
    status = 403
    error_type = "permission_error"
    code = "forbidden"


class ConsentRequired(PermissionDenied):
    """A model the caller may use once they accept its notice.

    Answered by a server, it carries where to do that: the consent endpoint (``POST``,
    with the Jupyter login) and the profile, as URLs in the message and in the details
    (``consent_url``, ``profile_url``), for scripts and command-line users."""

    code = "consent_required"

    def __init__(self, model: str, root_url: str | None = None) -> None:
        self.model = model
        message = (
            f"'{model}' needs your one-time consent first: read its notice and accept it "
            f"with `%lumen consent {model}` or on the Profile page"
        )
        details: dict[str, Any] = {"model": model}
        if root_url:
            api = f"{root_url}lumen/api/"
            details["consent_url"] = f"{api}models/{quote(model, safe='')}/consent"
            details["profile_url"] = f"{api}profile"
            message += (
                f" (Lumen: Open Profile in JupyterLab); from a script, POST "
                f"{details['consent_url']} with your Jupyter login; your profile: "
                f"{details['profile_url']}"
            )
        super().__init__(message, code="consent_required", **details)

    def at(self, root_url: str) -> LumenError:
        return ConsentRequired(self.model, root_url)


class NotFound(LumenError):
    status = 404
    error_type = "not_found_error"
    code = "not_found"


class Conflict(LumenError):
    status = 409
    code = "conflict"


class PayloadTooLarge(LumenError):
    status = 413
    code = "payload_too_large"


class BudgetExhausted(LumenError):
    """Coins are exhausted or cannot cover a request's worst case; retrying now won't help."""

    status = 429
    error_type = "insufficient_quota"
    code = "coins_exhausted"


class RateLimited(LumenError):
    status = 429
    retryable = True
    error_type = "rate_limit_error"
    code = "rate_limited"
    retry_after: int | None = None
    """Seconds until a call would be admitted (sent as ``Retry-After``)."""


class UpstreamUnavailable(LumenError):
    status = 503
    error_type = "service_unavailable"
    code = "no_healthy_endpoint"


class UpstreamFailed(LumenError):
    status = 500
    error_type = "api_error"
    code = "upstream_error"
