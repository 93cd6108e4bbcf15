"""A per-key sliding-window rate limit (calls per minute), in memory.

A call takes its slot when it is checked, so concurrent calls cannot all pass a
check before any of them counts; a call then refused for another reason (no
consent, no coins) gives its slot back: refused calls do not count.
"""

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

    def give_back(self, who: object) -> None:
        """Forget the last call taken by ``who`` (it was refused after the check)."""
        calls = self._calls.get(who)
        if calls:
            calls.pop()
