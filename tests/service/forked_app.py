"""A tiny forked tornado service for the supervisor tests, run as a script.

Binds a free port on 127.0.0.1, prints ``port N``, then serves ``GET /`` (the answering
worker's pid; ``?sleep=S`` blocks that worker for S seconds first) in ``--workers`` forked
processes.  A worker stops gracefully on SIGTERM.  The supervisor prints ``exited PID``
after each worker that ends and exits with ``serve_forked``'s code.

``--crash``: every worker raises at once.  ``--stubborn``: workers ignore SIGTERM.
``--metrics``: each ``GET /`` is recorded as a model call, ``GET /metrics`` is the scrape
summed over all workers (the supervisor gives them a private PROMETHEUS_MULTIPROC_DIR and
forgets each worker that ends), and ``X-Pid`` says which worker answered.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import sys
import tempfile
import time

import tornado.httpserver
import tornado.netutil
import tornado.web

from lumen_jupyter.gateway.metrics import MULTIPROC_ENV, CallMetrics, forget_worker, render_metrics
from lumen_jupyter.service.workers import serve_forked

METRICS: list[CallMetrics] = []
"""The worker's recorder, with ``--metrics`` (created in the worker, after the fork)."""


class PidHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        started = time.monotonic()
        for metrics in METRICS:
            metrics.started()
        time.sleep(float(self.get_argument("sleep", "0")))  # blocks the whole worker
        for metrics in METRICS:
            metrics.finished("demo", "ok", time.monotonic() - started, 1000, endpoint="chat")
        self.finish(str(os.getpid()))


class MetricsHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        body, content_type = render_metrics()
        self.set_header("Content-Type", content_type)
        self.set_header("X-Pid", str(os.getpid()))
        self.finish(body)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--grace", type=float, default=10.0)
    parser.add_argument("--crash", action="store_true")
    parser.add_argument("--stubborn", action="store_true")
    parser.add_argument("--metrics", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    log = logging.getLogger("forked_app")

    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    print(f"port {sockets[0].getsockname()[1]}", flush=True)

    async def serve() -> None:
        stop = asyncio.Event()
        if args.stubborn:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        else:
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        routes = [("/", PidHandler), ("/metrics", MetricsHandler)]
        server = tornado.httpserver.HTTPServer(tornado.web.Application(routes))
        server.add_sockets(sockets)
        await stop.wait()
        server.stop()

    def run_worker(index: int) -> None:
        if args.crash:
            raise RuntimeError(f"worker {index} cannot start")
        if args.metrics:
            METRICS.append(CallMetrics())
        asyncio.run(serve())

    def on_worker_exit(pid: int) -> None:
        forget_worker(pid)
        print(f"exited {pid}", flush=True)

    if args.metrics:
        os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="lumen-metrics-")
    try:
        return serve_forked(
            sockets,
            args.workers,
            run_worker,
            log=log,
            on_worker_exit=on_worker_exit,
            grace_seconds=args.grace,
        )
    finally:
        if args.metrics:
            shutil.rmtree(os.environ.pop(MULTIPROC_ENV))


if __name__ == "__main__":
    sys.exit(main())
