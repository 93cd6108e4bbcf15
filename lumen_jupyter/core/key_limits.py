"""Reading a key's limits as people write them: a coin budget and an expiry.

The REST API, the ``%lumen keys new`` magic and the command line all accept the
same forms, so one parser answers them all with the same clear 400: a budget in
coins (``5``, ``"0.25"``), and an expiry as a moment (``expires_at``, ISO 8601)
or a lifetime (``expires_in``: ``"7d"``, ``"12h"``, ``"30m"``, or seconds).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

from .errors import BadRequest
from .money import coins_to_micro

MAX_LIFETIME = timedelta(days=3660)
"""The longest lifetime a key may be given (about ten years)."""

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d{1,7})\s*([smhdw]?)\s*$")


def parse_budget(value: Any) -> int | None:
    """A budget in coins (number or decimal string) as micro-coins; ``None`` stays none."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise BadRequest("budget is a number of coins, e.g. 5 or 0.5", param="budget")
    try:
        micro = coins_to_micro(value)
    except ValueError:
        raise BadRequest(
            f"budget is a number of coins, e.g. 5 or 0.5, not {value!r}", param="budget"
        ) from None
    if micro <= 0:
        raise BadRequest("a key's budget must be more than 0 coins", param="budget")
    if micro >= 2**62:
        raise BadRequest("a key's budget is too large", param="budget")
    return micro


def parse_lifetime(value: Any) -> timedelta:
    """``"7d"``, ``"12h"``, ``"30m"``, ``"45s"``, ``"2w"`` or a whole number of seconds."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise BadRequest(
            'expires_in is a lifetime such as "7d", "12h" or "30m"', param="expires_in"
        )
    match = _DURATION.match(str(value))
    if match is None:
        raise BadRequest(
            f'expires_in is a lifetime such as "7d", "12h" or "30m", not {value!r}',
            param="expires_in",
        )
    lifetime = timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2) or "s"])
    if lifetime <= timedelta(0):
        raise BadRequest("a key's lifetime must be more than 0", param="expires_in")
    if lifetime > MAX_LIFETIME:
        raise BadRequest("a key's lifetime is at most 3660 days", param="expires_in")
    return lifetime


def parse_moment(value: Any) -> datetime:
    """An ISO 8601 moment; one without a time zone is taken as UTC."""
    if not isinstance(value, str):
        raise BadRequest(
            "expires_at is an ISO 8601 time, e.g. 2030-01-31T12:00:00Z", param="expires_at"
        )
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(
            f"expires_at is an ISO 8601 time, e.g. 2030-01-31T12:00:00Z, not {value!r}",
            param="expires_at",
        ) from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def parse_expiry(expires_at: Any, expires_in: Any, now: datetime) -> datetime | None:
    """The moment a key stops working, from at most one of the two forms."""
    if expires_at is not None and expires_in is not None:
        raise BadRequest("give expires_at or expires_in, not both", param="expires_in")
    if expires_in is not None:
        return now + parse_lifetime(expires_in)
    if expires_at is not None:
        moment = parse_moment(expires_at)
        if moment <= now:
            raise BadRequest("a key's expiry must be in the future", param="expires_at")
        if moment - now > MAX_LIFETIME:
            raise BadRequest("a key's lifetime is at most 3660 days", param="expires_at")
        return moment
    return None
