"""This server as an instance of the store: registered, beating, and cleaning up after
servers that died.

See :mod:`lumen_jupyter.core.recovery` for why pending calls belong to an instance.
The heartbeat is written by the accountant (off the event loop, batched with the
books); looking for dead instances runs on the database executor every few
heartbeats.  A clean stop settles this server's own open calls and leaves the
register.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from concurrent.futures import Executor
from datetime import datetime

from ..core import recovery
from ..core.service import LumenService
from ..store.accountant import Accountant

log = logging.getLogger("lumen_jupyter.instance")

RECOVER_EVERY_BEATS = 3
"""Look for dead instances every this many heartbeats (15 s)."""


class InstanceKeeper:
    """Registers this process, keeps its heartbeat, and reconciles dead instances."""

    def __init__(
        self,
        service: LumenService,
        *,
        heartbeat_seconds: float = recovery.HEARTBEAT_SECONDS,
    ) -> None:
        self.service = service
        self.heartbeat_seconds = heartbeat_seconds
        # Six missed beats, and never less than the default, so that a server beating
        # at the default interval is not taken for dead by one configured faster.
        self.stale_after = max(recovery.STALE_AFTER_SECONDS, 6 * heartbeat_seconds)
        self._task: asyncio.Task[None] | None = None

    def start(self, started_at: datetime) -> None:
        """Register, then settle what dead instances (and pre-instance servers) left open."""
        me = recovery.Instance(uuid.uuid4().hex, recovery.this_host(), os.getpid())
        self.service.register_instance(me)
        self._report(self.service.recover(stale_after=self.stale_after, started_before=started_at))

    def run_in_background(self, accountant: Accountant, executor: Executor) -> None:
        if self._task is None and self.heartbeat_seconds > 0:
            self._task = asyncio.ensure_future(self._beat(accountant, executor))

    async def _beat(self, accountant: Accountant, executor: Executor) -> None:
        loop = asyncio.get_running_loop()
        beats = 0
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            try:
                await accountant.run(self.service.heartbeat_in)
                beats += 1
                if beats % RECOVER_EVERY_BEATS == 0:
                    found = await loop.run_in_executor(
                        executor, lambda: self.service.recover(stale_after=self.stale_after)
                    )
                    self._report(found)
            except asyncio.CancelledError:
                raise
            except Exception:  # the database may be away for a moment; beat again
                log.warning("lumen: heartbeat failed", exc_info=True)

    def _report(self, found: recovery.Recovered) -> None:
        if found.settled or found.released:
            log.warning(
                "lumen: %d call(s) of %d stopped server(s) reconciled: %d billed for the "
                "output they delivered, %d released",
                found.settled + found.released,
                found.instances,
                found.settled,
                found.released,
            )

    async def stop(self) -> None:
        """Stop beating; settle this server's open calls and leave the register."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            settled, released = self.service.retire_instance()
        except Exception:  # the store is gone: the next server to start settles them
            log.warning("lumen: could not settle this server's open calls", exc_info=True)
            return
        if settled or released:
            log.info("lumen: %d open call(s) ended with the server", settled + released)
