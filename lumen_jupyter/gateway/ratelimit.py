"""A per-key sliding-window rate limit (calls per minute), in memory."""

from __future__ import annotations

import time
from collections import deque

WINDOW_SECONDS = 60.0


class RateLimiter:
    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._calls: dict[object, deque[float]] = {}

    def retry_after(self, who: object, now: float | None = None) -> float | None:
        """Record a call by ``who``; ``None`` if allowed, else seconds until it would be."""
        if self.per_minute <= 0:
            return None
        moment = time.monotonic() if now is None else now
        calls = self._calls.setdefault(who, deque())
        while calls and calls[0] <= moment - WINDOW_SECONDS:
            calls.popleft()
        if len(calls) >= self.per_minute:
            return max(0.0, calls[0] + WINDOW_SECONDS - moment)
        calls.append(moment)
        return None
