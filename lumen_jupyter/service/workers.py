"""A pre-fork supervisor: N worker processes serving the sockets their parent bound.

One Python process serves calls on one core.  ``jupyter lumen serve --workers N`` binds its
listening sockets once, then :func:`serve_forked` forks N workers that all accept on them
(the kernel hands each connection to one of them) and stays behind as a supervisor that
serves nothing: it restarts a worker that dies, gives up on a worker that cannot start
(a crash loop), and on SIGINT/SIGTERM stops every worker and frees the port.

Fork copies the calling process as it is, so the caller must call :func:`serve_forked`
from the main thread of a process that has bound its sockets and created **nothing else**:
no threads (a lock another thread holds at the fork stays locked forever in the worker),
no event loop (asyncio and tornado loops are not fork-safe), no database connections,
connection pools or HTTP clients (every worker would share their sockets).  Each worker
creates all of those itself in ``run_worker``.

Linux first: a worker asks the kernel (``prctl(PR_SET_PDEATHSIG)``) for a SIGTERM when
the supervisor dies, so no worker outlives it, even after a ``kill -9``.  Elsewhere the
workers still run and are supervised, but a killed supervisor leaves them behind.

Each worker runs in a process group of its own: a Ctrl-C in a terminal reaches the supervisor
only, which forwards it once to every worker (rather than each worker getting it twice).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""The signals that stop the supervisor; each is forwarded to every worker."""
HANDLED_SIGNALS = (*STOP_SIGNALS, signal.SIGCHLD)

GRACE_SECONDS = 10.0
"""How long stopping workers may take before they are killed (SIGKILL)."""
MIN_UPTIME_SECONDS = 1.0
MAX_FAST_DEATHS = 5
"""A worker that dies within ``MIN_UPTIME_SECONDS`` of its start this many times in a row
is in a crash loop: the supervisor stops everything instead of forking it forever."""
IDLE_WAKE_SECONDS = 1.0
"""The supervisor sleeps until a signal (SIGCHLD included) wakes it; this is only a safety
net, not a poll that anything depends on."""

EXIT_OK = 0
EXIT_FAILED = 1

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def serve_forked(
    sockets: Sequence[socket.socket],
    workers: int,
    run_worker: Callable[[int], None],
    *,
    log: logging.Logger,
    on_worker_exit: Callable[[int], None] | None = None,
    grace_seconds: float = GRACE_SECONDS,
) -> int:
    """Run ``run_worker(index)`` in ``workers`` forked processes until SIGINT or SIGTERM;
    returns the supervisor's exit code.

    ``sockets`` are the listening sockets, already bound (``tornado.netutil.bind_sockets``):
    the workers inherit them, and they are closed here at the end so the port is free.
    See the module docstring for what the caller must not have created before.

    In a worker, ``run_worker`` runs with the default signal handlers (it installs its own,
    e.g. SIGTERM for a graceful stop); the worker exits 0 when it returns, with the code of
    a ``SystemExit``, and 1 (logged) on any other exception.  A worker that dies while the
    supervisor is not stopping is restarted with the same index; ``on_worker_exit(pid)``
    is called in the supervisor after every worker that ends, expected or not.

    Returns 0 after a stop by SIGINT/SIGTERM where every worker ended within
    ``grace_seconds`` of the forwarded signal, 1 after a crash loop, a failed fork, or a
    stop where some workers had to be killed (a second SIGINT/SIGTERM kills them at once).
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("serve_forked must run in the main thread (it handles signals)")
    if threading.active_count() > 1:
        log.warning(
            "Forking workers from a process with %d threads: a lock held by another thread "
            "stays locked in every worker",
            threading.active_count(),
        )
    try:
        return _Supervisor(workers, run_worker, log, on_worker_exit, grace_seconds).run()
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class _Worker:
    index: int
    pid: int
    started: float


class _Supervisor:
    def __init__(
        self,
        workers: int,
        run_worker: Callable[[int], None],
        log: logging.Logger,
        on_worker_exit: Callable[[int], None] | None,
        grace_seconds: float,
    ) -> None:
        self.workers = workers
        self.run_worker = run_worker
        self.log = log
        self.on_worker_exit = on_worker_exit
        self.grace_seconds = grace_seconds
        self.pid = os.getpid()
        self.children: dict[int, _Worker] = {}
        self.fast_deaths = [0] * workers
        self.signals: list[int] = []
        self.stopping = False
        self.deadline = 0.0
        self.killed = False
        self.exit_code = EXIT_OK
        self.wake_read = self.wake_write = -1
        self.mask: set[int | signal.Signals] = set()
        self.prctl = _load_prctl()

    # -- the supervisor --------------------------------------------------------------

    def run(self) -> int:
        self.wake_read, self.wake_write = os.pipe()
        os.set_blocking(self.wake_read, False)
        os.set_blocking(self.wake_write, False)
        previous = {sig: signal.getsignal(sig) for sig in HANDLED_SIGNALS}
        previous_wakeup = signal.set_wakeup_fd(self.wake_write, warn_on_full_buffer=False)
        try:
            for sig in STOP_SIGNALS:
                signal.signal(sig, self._on_stop_signal)
            signal.signal(signal.SIGCHLD, _ignore_signal)
            for index in range(self.workers):
                if not self._spawn(index):
                    break
            return self._supervise()
        finally:
            self._kill_all()
            signal.set_wakeup_fd(previous_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, signal.SIG_DFL if handler is None else handler)
            os.close(self.wake_read)
            os.close(self.wake_write)

    def _on_stop_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.signals.append(signum)

    def _supervise(self) -> int:
        while True:
            while self.signals:
                self._on_signal(self.signals.pop(0))
            self._reap()
            if self.stopping:
                if not self.children:
                    if self.killed:
                        self.exit_code = EXIT_FAILED
                    self.log.info("All workers stopped")
                    return self.exit_code
                if time.monotonic() >= self.deadline and not self.killed:
                    self.log.warning(
                        "%d worker(s) still running %.0f s after the stop signal; killing them",
                        len(self.children),
                        self.grace_seconds,
                    )
                    self._kill_now()
            self._sleep()

    def _sleep(self) -> None:
        timeout = IDLE_WAKE_SECONDS
        if self.stopping and not self.killed:
            timeout = max(0.0, min(timeout, self.deadline - time.monotonic()))
        select.select([self.wake_read], [], [], timeout)
        with contextlib.suppress(BlockingIOError):
            while os.read(self.wake_read, 512):
                pass

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.stopping:
            if not self.killed:
                left = len(self.children)
                self.log.warning("%s again: killing the %d worker(s) left", name, left)
                self._kill_now()
            return
        self.log.info("%s: stopping %d worker(s)", name, len(self.children))
        self._stop(signum, EXIT_OK)

    def _stop(self, signum: int, code: int) -> None:
        self.stopping = True
        self.exit_code = code
        self.deadline = time.monotonic() + self.grace_seconds
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def _kill_now(self) -> None:
        self.killed = True
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _kill_all(self) -> None:
        """Leave no worker behind, whatever happened (a bug in this loop included)."""
        if self.children:
            self._kill_now()
        for pid in list(self.children):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            self._forget(pid)

    def _reap(self) -> None:
        # Only our own workers: os.waitpid(-1) would also reap the caller's other children.
        for pid in list(self.children):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # reaped by someone else: its status is lost
                done, status = pid, 0
            if done == 0:
                continue
            worker = self.children[pid]
            self._forget(pid)
            self._after_exit(worker, os.waitstatus_to_exitcode(status))

    def _forget(self, pid: int) -> None:
        del self.children[pid]
        if self.on_worker_exit is not None:
            try:
                self.on_worker_exit(pid)
            except Exception:
                self.log.exception("on_worker_exit(%d) failed", pid)

    def _after_exit(self, worker: _Worker, code: int) -> None:
        how = f"was killed by {_signal_name(-code)}" if code < 0 else f"exited with code {code}"
        label = f"Worker {worker.index} (pid {worker.pid})"
        if self.stopping:
            self.log.info("%s %s", label, how)
            return
        uptime = time.monotonic() - worker.started
        if uptime < MIN_UPTIME_SECONDS:
            self.fast_deaths[worker.index] += 1
        else:
            self.fast_deaths[worker.index] = 0
        if self.fast_deaths[worker.index] >= MAX_FAST_DEATHS:
            self.log.error(
                "%s %s; worker %d died within %.0f s of starting %d times in a row: "
                "crash loop, stopping all workers",
                label,
                how,
                worker.index,
                MIN_UPTIME_SECONDS,
                MAX_FAST_DEATHS,
            )
            self._stop(signal.SIGTERM, EXIT_FAILED)
            return
        self.log.warning("%s %s after %.1f s; restarting it", label, how, uptime)
        self._spawn(worker.index)

    def _spawn(self, index: int) -> bool:
        """Fork worker ``index``; False (and a stop) if the fork failed."""
        # Blocked across the fork: a signal arriving in between must neither run the
        # supervisor's handlers in the worker nor be lost for the supervisor.
        self.mask = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                self._become_worker(index)  # never returns
        except OSError:
            self.log.exception("Could not start worker %d; stopping", index)
            self._stop(signal.SIGTERM, EXIT_FAILED)
            return False
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, self.mask)
        self.children[pid] = _Worker(index, pid, time.monotonic())
        self.log.info("Worker %d started (pid %d)", index, pid)
        return True

    # -- a worker --------------------------------------------------------------------

    def _become_worker(self, index: int) -> None:
        code = EXIT_FAILED
        try:
            try:
                death_signal = int(signal.SIGTERM)
                if self.prctl is not None and self.prctl(_PR_SET_PDEATHSIG, death_signal, 0, 0, 0):
                    self.log.warning(
                        "Worker %d: prctl(PR_SET_PDEATHSIG) failed (errno %d); it may outlive "
                        "the supervisor",
                        index,
                        ctypes.get_errno(),
                    )
                if os.getppid() != self.pid:  # the supervisor died before the prctl
                    return
                with contextlib.suppress(OSError):
                    os.setpgid(0, 0)
                signal.set_wakeup_fd(-1)
                os.close(self.wake_read)
                os.close(self.wake_write)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_SETMASK, self.mask)
                self.run_worker(index)
                code = EXIT_OK
            except SystemExit as exit:
                code = exit.code if isinstance(exit.code, int) else EXIT_FAILED
                if exit.code is None:
                    code = EXIT_OK
            except KeyboardInterrupt:  # the forwarded SIGINT, not handled by run_worker
                code = EXIT_OK
            except BaseException:
                self.log.exception("Worker %d failed", index)
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os._exit(code)


def _ignore_signal(_signum: int, _frame: FrameType | None) -> None:
    """SIGCHLD's handler: the signal only wakes the supervisor (through the wake-up fd)."""


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _load_prctl() -> Callable[..., int] | None:
    """libc's ``prctl`` on Linux, loaded in the supervisor (not after the fork)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl
