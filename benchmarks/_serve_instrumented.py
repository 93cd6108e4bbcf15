"""``jupyter server`` plus an opt-in event-loop monitor, for the gateway benchmark.

Runs exactly what ``jupyter server ARGS`` runs (``ServerApp.initialize`` then
``start``) and adds one route, ``/_bench/loop`` (Jupyter token required):

* ``POST /_bench/loop?action=start`` - reset and start measuring;
* ``POST /_bench/loop?action=stop`` - stop measuring (nothing runs while off);
* ``GET /_bench/loop`` - what was measured since the last start;
* ``POST /_bench/loop?action=gc`` - time one full ``gc.collect()`` on the loop.

``LUMEN_BENCH_GC_FREEZE=1`` calls ``gc.freeze()`` once the loop runs (an experiment).

Two measures, both off unless started:

* a 1 ms ticker on the loop: how late each tick ran (what any latency-sensitive
  callback on this loop experiences: queueing behind other callbacks plus GIL
  waits);
* the duration of every single loop callback (``asyncio.Handle._run``): the
  longest one is the worst true "blocking" stall, with its name;
* garbage-collector pauses per generation (``gc.callbacks``): a collection in
  any thread holds the GIL, so it stops the loop outside any callback.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import time
from typing import Any

from jupyter_server.base.handlers import APIHandler
from jupyter_server.serverapp import ServerApp
from tornado import web

TICK = 0.001
_BOUNDS_MS = (0.5, 1, 2, 5, 10, 20, 50, 100)


class LoopMonitor:
    def __init__(self) -> None:
        self.running = False
        self._handle: asyncio.TimerHandle | None = None
        self._original_run = asyncio.events.Handle._run
        self.reset()

    def reset(self) -> None:
        self.started_at = time.perf_counter()
        self.ticks = 0
        self.late: list[float] = []
        self.max_late = 0.0
        self.callbacks = 0
        self.max_callback = 0.0
        self.max_callback_name = ""
        self.slow_callbacks: dict[str, int] = {}
        self.over = dict.fromkeys(_BOUNDS_MS, 0)
        self.gc_runs = [0, 0, 0]
        self.gc_max = [0.0, 0.0, 0.0]
        self._gc_started = 0.0

    # -- garbage collector pauses (any thread: they stop the loop too) --

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
            return
        took = time.perf_counter() - self._gc_started
        generation = info.get("generation", 0)
        self.gc_runs[generation] += 1
        self.gc_max[generation] = max(self.gc_max[generation], took)

    # -- ticker --

    def _tick(self, expected: float) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        late = max(0.0, now - expected)
        self.ticks += 1
        self.late.append(late)
        if late > self.max_late:
            self.max_late = late
        if self.running:
            self._handle = loop.call_at(now + TICK, self._tick, now + TICK)

    # -- per-callback timing --

    def _install(self) -> None:
        original = self._original_run
        monitor = self

        def timed_run(handle: asyncio.Handle) -> None:
            t0 = time.perf_counter()
            try:
                original(handle)
            finally:
                took = time.perf_counter() - t0
                monitor.callbacks += 1
                if took > 0.005:
                    name = _callback_name(handle)
                    monitor.slow_callbacks[name] = monitor.slow_callbacks.get(name, 0) + 1
                if took > monitor.max_callback:
                    monitor.max_callback = took
                    monitor.max_callback_name = _callback_name(handle)

        asyncio.events.Handle._run = timed_run  # type: ignore[method-assign]

    def _uninstall(self) -> None:
        asyncio.events.Handle._run = self._original_run  # type: ignore[method-assign]

    def start(self) -> None:
        self.stop()
        self.reset()
        self.running = True
        self._install()
        gc.callbacks.append(self._on_gc)
        loop = asyncio.get_running_loop()
        when = loop.time() + TICK
        self._handle = loop.call_at(when, self._tick, when)

    def stop(self) -> None:
        self.running = False
        self._uninstall()
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def report(self) -> dict[str, Any]:
        late_ms = sorted(x * 1000 for x in self.late)

        def pct(q: float) -> float:
            if not late_ms:
                return 0.0
            return round(late_ms[min(len(late_ms) - 1, int(q / 100 * len(late_ms)))], 3)

        return {
            "seconds": round(time.perf_counter() - self.started_at, 3),
            "ticks": self.ticks,
            "tick_late_ms": {
                "p50": pct(50),
                "p99": pct(99),
                "p999": pct(99.9),
                "max": round(self.max_late * 1000, 3),
            },
            "ticks_late_over_ms": {str(b): sum(1 for x in late_ms if x > b) for b in _BOUNDS_MS},
            "callbacks": self.callbacks,
            "max_callback_ms": round(self.max_callback * 1000, 3),
            "max_callback": self.max_callback_name,
            "gc_collections": {f"gen{g}": self.gc_runs[g] for g in range(3)},
            "gc_max_pause_ms": {f"gen{g}": round(self.gc_max[g] * 1000, 3) for g in range(3)},
            "callbacks_over_5ms": dict(
                sorted(self.slow_callbacks.items(), key=lambda kv: -kv[1])[:10]
            ),
        }


def _callback_name(handle: asyncio.Handle) -> str:
    callback = getattr(handle, "_callback", None)
    owner = getattr(callback, "__self__", None)
    if owner is not None and hasattr(owner, "get_coro"):  # a Task step: name the coroutine
        coro = owner.get_coro()
        code = getattr(coro, "cr_code", None)
        if code is not None:
            return f"task {code.co_qualname} ({code.co_filename.rsplit('/', 2)[-1]})"
    return getattr(callback, "__qualname__", repr(callback))[:200]


MONITOR = LoopMonitor()


class LoopHandler(APIHandler):  # type: ignore[misc]
    @web.authenticated
    def get(self) -> None:
        self.finish(json.dumps(MONITOR.report()))

    @web.authenticated
    def post(self) -> None:
        action = self.get_query_argument("action")
        if action == "start":
            MONITOR.start()
        elif action == "stop":
            MONITOR.stop()
        elif action == "gc":  # time one full collection on the loop, as a gen2 run would take
            t0 = time.perf_counter()
            gc.collect()
            took = time.perf_counter() - t0
            self.finish(
                json.dumps(
                    {
                        "full_collection_ms": round(took * 1000, 3),
                        "tracked_objects": len(gc.get_objects()),
                        "frozen_objects": gc.get_freeze_count(),
                    }
                )
            )
            return
        else:
            raise web.HTTPError(400, "action is start, stop or gc")
        self.finish(json.dumps({"running": MONITOR.running}))


def main(argv: list[str]) -> None:
    app = ServerApp.instance()
    app.initialize(argv)
    app.web_app.add_handlers(".*$", [(app.base_url + "_bench/loop", LoopHandler)])
    if os.environ.get("LUMEN_BENCH_GC_FREEZE"):  # the fix under test: freeze start-up objects
        app.io_loop.add_callback(_freeze)
    app.start()


def _freeze() -> None:
    gc.collect()
    gc.freeze()


if __name__ == "__main__":
    main(sys.argv[1:])
